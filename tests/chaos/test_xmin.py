"""A transaction left open elsewhere in the database (idle in transaction: a psql session,
a crashed app's pooled connection) pins the xmin horizon: vacuum may remove no row version
that died after it began, so the queue's tables keep every dead tuple the workers make.
Three phases at a steady offered load (before, pinned, after the pin commits), each with
the workers' own RPC latency (their /metrics), pickup latency, throughput, and the dead
tuples a VACUUM at the phase's end could not remove.

Sizes: SUPAWORKER_XMIN_SECONDS (each phase, 15), SUPAWORKER_FAULT_RATE (jobs/s, 10).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from supaworker_local.config import StackConfig
from tests.chaos.harness import Db, db_now
from tests.chaos.load import Producer, completed_between, ms, pickups, record, unfinished
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

PHASE_SECONDS = float(os.environ.get("SUPAWORKER_XMIN_SECONDS", "15"))
RATE = float(os.environ.get("SUPAWORKER_FAULT_RATE", "10"))
TABLES = ("processing_queue", "job_events", "vps_workers")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rpc_totals(ports: list[int]) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) of every worker's RPC round trips, by function."""
    totals: dict[str, list[float]] = {}
    for port in ports:
        for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
            for suffix, slot in (("_sum", 0), ("_count", 1)):
                prefix = f"supaworker_rpc_duration_seconds{suffix}{{"
                if line.startswith(prefix):
                    function = line.split('function="', 1)[1].split('"', 1)[0]
                    totals.setdefault(function, [0.0, 0.0])[slot] += float(line.rsplit(" ", 1)[1])
    return {f: (v[0], v[1]) for f, v in totals.items()}


def _mean_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    out = {}
    for function, (total, count) in after.items():
        t0, c0 = before.get(function, (0.0, 0.0))
        if count > c0:
            out[function] = round(1000 * (total - t0) / (count - c0), 1)
    return out


def _dead_after_vacuum(db: Db) -> dict[str, int]:
    for table in TABLES:
        db.execute(f"vacuum public.{table}")
    rows = db.execute(
        "select relname, n_dead_tup from pg_stat_user_tables"
        " where schemaname = 'public' and relname = any(%s)",
        (list(TABLES),),
    ).fetchall()
    return {str(name): int(str(n)) for name, n in rows}


@pytest.mark.timeout(600)
def test_a_transaction_left_open_pins_the_xmin_horizon(
    stack: StackConfig,
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
) -> None:
    queue, user = unique("xmin"), make_user()
    ports = [_free_port() for _ in range(2)]
    workers = [
        start_worker("--queue", queue, "--concurrency", "4", "--http-port", str(p)) for p in ports
    ]
    for w in workers:
        w.wait_for_log('"action": "worker_registered"', timeout=30)
    phases: list[dict[str, Any]] = []
    pin: psycopg.Connection[tuple[object, ...]] | None = None
    try:
        with Producer(stack, user.id, queue, RATE, 0.05) as producer:
            time.sleep(2.0)
            _dead_after_vacuum(admin_db)
            for name in ("before", "pinned", "after"):
                if name == "pinned":
                    pin = psycopg.connect(stack.admin_db_url)  # not autocommit: stays open
                    pin.execute("select txid_current()")  # holds an xid: the horizon stops here
                if name == "after" and pin is not None:
                    pin.commit()
                    pin.close()
                    pin = None
                t0, since, rpc0 = time.monotonic(), db_now(admin_db), _rpc_totals(ports)
                time.sleep(PHASE_SECONDS)
                t1, until, rpc1 = time.monotonic(), db_now(admin_db), _rpc_totals(ports)
                phases.append(
                    {
                        "phase": name,
                        "rpc_mean_ms": _mean_ms(rpc0, rpc1),
                        "pickup": ms(pickups(admin_db, queue, since, until)),
                        "completed_per_s": round(
                            completed_between(admin_db, queue, since, until) / (t1 - t0), 1
                        ),
                        "dead_tuples_vacuum_left": _dead_after_vacuum(admin_db),
                    }
                )
            assert producer.errors == []
    finally:
        if pin is not None:
            pin.close()
    wait_for(lambda: unfinished(admin_db, queue) == 0, 120, "every job to finish")
    for w in workers:
        assert w.stop() == 0, w.output()[-2000:]
    figures = {
        "phase_seconds": PHASE_SECONDS,
        "offered_jobs_per_s": RATE,
        "enqueued": producer.enqueued,
        "phases": phases,
    }
    record(stack, "xmin_pinned", figures)
    before, pinned, after = (p["dead_tuples_vacuum_left"] for p in phases)
    # The pin was real: vacuum could not remove what died while it was open, and could
    # again once it committed.
    assert pinned["processing_queue"] > 10 * max(1, before["processing_queue"]), phases
    assert after["processing_queue"] < pinned["processing_queue"] / 10, phases
    # The queue kept working all along.
    assert all(p["completed_per_s"] > RATE / 2 for p in phases), phases
