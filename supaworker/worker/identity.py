"""One live process per worker id.

The default worker id is the host name, so two `supaworker run` on one host (PM2 instances, a
second terminal) registered as the same worker: each registration failed the other's running
jobs ("restarted while the job was running"), heartbeats reported each other's jobs as lost,
and 8 jobs took 18 starts with 8 finished results thrown away (issue 19).

The choice: refuse, not a unique default id. A registration under an id already held by a
live process fails at start (exit 2, one line naming the other process). A default id made
unique per process (host + pid) would break what the id is for: a worker restarted after a
crash comes back under the same id, and register_worker fails the jobs its dead predecessor
held at once, instead of waiting dead_worker_horizon for the reaper; and every restart would
leave a new row in vps_workers.

Each registration records the process in its capabilities (PROCESS_CAPABILITY: host, pid,
a random instance token; the id's own capability, WORKER_CAPABILITY, sets the precedent, and
no job requires them). Before its first registration a worker reads the id's row:

- no row, offline, or a heartbeat older than `fresh_seconds`: free.
- this host, and the recorded pid is this process's own (a container restarted: pid 1 again)
  or no longer alive (os.kill(pid, 0)): a crash restart; register, the old jobs fail at once.
- this host and that pid alive, or another host, with a fresh heartbeat: refused.

The check and the registration are two calls, so two processes started in the same instant
can both pass; the refusal is for the common case (a second process started later), not a
lock.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime
from typing import Any

from supaworker.exceptions import ConfigurationError
from supaworker.models import WorkerInfo, WorkerStatus

PROCESS_CAPABILITY = "supaworker.process"


class WorkerIdInUse(ConfigurationError):
    """Another live process holds this worker id."""


def this_process(instance: str | None = None) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "instance": instance or secrets.token_hex(8),
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    # A killed child its parent has not waited for yet (a supervisor about to restart it)
    # still answers signal 0: a zombie is dead.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def check_id_free(
    row: WorkerInfo | None, me: dict[str, Any], fresh_seconds: float, now: datetime | None = None
) -> None:
    """Raise WorkerIdInUse when `row` (the id's vps_workers row) belongs to another live
    process; return when the id is free or held by a dead predecessor."""
    if row is None or row.status == WorkerStatus.OFFLINE or row.last_heartbeat is None:
        return
    age = ((now or datetime.now(UTC)) - row.last_heartbeat).total_seconds()
    if age > fresh_seconds:
        return
    holder = row.capabilities.get(PROCESS_CAPABILITY)
    if not isinstance(holder, dict):
        # Registered by a version that did not record its process: nothing to go by.
        return
    if holder.get("instance") == me["instance"]:
        return
    host, pid = holder.get("host"), holder.get("pid")
    if host == me["host"] and isinstance(pid, int):
        if pid == me["pid"] or not pid_alive(pid):
            return  # a crash restart on this host
        where = f"pid {pid} on this host ({host})"
    else:
        where = f"a process on host {host or '?'} (pid {pid or '?'})"
    raise WorkerIdInUse(
        f"worker id {row.worker_id!r} is in use by {where}, last heartbeat {age:.1f}s ago; "
        "give each worker process its own --worker-id (SUPAWORKER_WORKER_ID)"
    )
