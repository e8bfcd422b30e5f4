"""Issue 5: workers wake through Realtime instead of waiting for the next poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack
Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]


def _realtime_connected(worker: WorkerProcess, count: int = 1, timeout: float = 20) -> None:
    """Wait for the worker's `count`-th `realtime_status connected` log line."""
    worker.wait_for_log(
        '"action": "realtime_status"', '"connected": true', count=count, timeout=timeout
    )


def test_idle_worker_picks_up_new_work_well_under_the_poll_interval(
    start_worker: Start, submit: Submit, queue: QueueClient, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    worker = start_worker("--queue", name, "--realtime", "--poll-interval", "30")
    _realtime_connected(worker)
    time.sleep(1.0)  # the first poll after connecting has happened; now it sleeps 30 s
    latencies = []
    for _ in range(3):
        began = time.monotonic()
        (job,) = submit(queue_name=name, payload={"mode": "ok"})
        wait_for(
            lambda job=job: queue.get(job.id).status == JobStatus.COMPLETED, 10, "realtime wake-up"
        )
        latencies.append(time.monotonic() - began)
    worker.stop()
    print(f"enqueue->completed with Realtime wake-up: {[round(x, 3) for x in latencies]} s")
    assert max(latencies) < 5  # polling alone would take up to 30 s


def test_pause_reaches_the_worker_through_realtime(
    start_worker: Start, queue: QueueClient, unique: Callable[[str], str]
) -> None:
    worker = start_worker("--queue", unique("q"), "--realtime", "--heartbeat-interval", "30")
    _realtime_connected(worker)
    began = time.monotonic()
    queue.pause(worker.worker_id)
    worker.wait_for_log('"action": "worker_paused"', timeout=10)
    elapsed = time.monotonic() - began
    worker.stop()
    print(f"pause reached the worker in {elapsed:.3f} s (heartbeat interval 30 s)")
    assert elapsed < 3


def test_realtime_endpoint_restart_loses_and_duplicates_nothing(
    start_worker: Start,
    submit: Submit,
    queue: QueueClient,
    unique: Callable[[str], str],
    stack: StackConfig,
    tmp_path: Path,
) -> None:
    """The gateway (REST + Realtime) goes away mid-run: workers fall back to polling, keep
    retrying their writes, reconnect when it returns; every job runs to completion once."""
    name = unique("q")
    record = tmp_path / "executions.txt"
    env = {"SUPAWORKER_TEST_RECORD": str(record)}
    workers = [
        start_worker(
            "--queue", name, "--realtime", "--poll-interval", "1", "--concurrency", "4", env=env
        )
        for _ in range(2)
    ]
    for worker in workers:
        _realtime_connected(worker)
    jobs = submit(40, queue_name=name, payload={"mode": "sleep", "seconds": 0.2})
    time.sleep(0.5)
    dev_stack.stop_gateway(stack)
    time.sleep(2.0)
    dev_stack.start_gateway(stack)
    more = submit(20, queue_name=name, payload={"mode": "ok"})
    wait_for(
        lambda: all(queue.get(j.id).status == JobStatus.COMPLETED for j in jobs + more),
        60,
        "all jobs after the outage",
    )
    for worker in workers:
        _realtime_connected(worker, count=2, timeout=30)  # reconnected after the outage
        worker.stop()
    executions = record.read_text().split("\n")
    ran = [line.split()[0] for line in executions if line]
    assert sorted(set(ran)) == sorted(str(j.id) for j in jobs + more)
    assert len(ran) == len(jobs) + len(more), "a job ran twice"
