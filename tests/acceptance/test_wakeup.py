"""Issue 5: workers wake through Realtime instead of waiting for the next poll."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack
Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]


def _realtime_connected(worker: WorkerProcess, timeout: float = 20) -> None:
    """Wait for the worker's `realtime_status connected` log line."""
    assert worker.proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = worker.proc.stdout.readline()
        if '"action": "realtime_status"' in line and '"connected": true' in line:
            return
    raise AssertionError("worker never reported Realtime connected")


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
        wait_for(lambda job=job: queue.get(job.id).status == JobStatus.COMPLETED, 10,
                 "realtime wake-up")
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
    assert worker.proc.stdout is not None
    while time.monotonic() - began < 10:
        line = worker.proc.stdout.readline()
        if '"action": "worker_paused"' in line:
            break
    else:
        raise AssertionError("pause never reached the worker")
    elapsed = time.monotonic() - began
    worker.stop()
    print(f"pause reached the worker in {elapsed:.3f} s (heartbeat interval 30 s)")
    assert elapsed < 3
