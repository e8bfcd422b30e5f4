"""worker/identity.py: when a worker id's row belongs to another live process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from supaworker.models import WorkerInfo, WorkerStatus
from supaworker.worker.identity import (
    PROCESS_CAPABILITY,
    WorkerIdInUse,
    check_id_free,
    this_process,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def row(holder: dict[str, Any] | None, age: float = 1.0, status: str = "active") -> WorkerInfo:
    caps = {PROCESS_CAPABILITY: holder} if holder is not None else {}
    return WorkerInfo(
        worker_id="vps1",
        status=WorkerStatus(status),
        last_heartbeat=NOW - timedelta(seconds=age),
        capabilities=caps,
    )


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_process_on_this_host_holds_the_id() -> None:
    me = this_process()
    other = {**me, "pid": os.getppid(), "instance": "other"}
    with pytest.raises(WorkerIdInUse, match=f"pid {os.getppid()} on this host"):
        check_id_free(row(other), me, 15, NOW)


def test_another_host_with_a_fresh_heartbeat_holds_the_id() -> None:
    me = this_process()
    with pytest.raises(WorkerIdInUse, match="host elsewhere"):
        check_id_free(row({"host": "elsewhere", "pid": 7, "instance": "x"}), me, 15, NOW)


@pytest.mark.parametrize(
    "case", ["dead pid", "own pid (container restart)", "stale", "offline", "no row", "old version"]
)
def test_the_id_is_free(case: str) -> None:
    me = this_process()
    other = {**me, "instance": "other"}
    given = {
        "dead pid": row({**other, "pid": dead_pid()}),
        "own pid (container restart)": row(other),
        "stale": row({**other, "pid": os.getppid()}, age=60),
        "offline": row({**other, "pid": os.getppid()}, status="offline"),
        "no row": None,
        "old version": row(None),
    }[case]
    check_id_free(given, me, 15, NOW)


def test_a_zombie_is_dead() -> None:
    """A SIGKILLed child not yet waited for by its supervisor still answers signal 0."""
    me = this_process()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(100):
            with open(f"/proc/{child.pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        check_id_free(row({**me, "pid": child.pid, "instance": "other"}), me, 15, NOW)
    finally:
        child.wait()
