"""Issue 19, fault 1: an async handler that blocks the event loop (here `time.sleep(12)` in an
`async def`) must not silence the worker's heartbeat. Before the fix the heartbeat shared the
loop: past the queue's dead_worker_horizon the worker was declared dead, both its jobs were
rescued and run again by another worker, and the job beside the blocking one was charged an
attempt (the blocking job ended on attempt 3, the innocent one on attempt 2)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from supaworker_local.config import StackConfig
from tests.chaos.settings import fast_rescue
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack

HORIZON = 4.0
BLOCK = 12.0


def test_a_blocked_loop_keeps_beating_and_charges_nobody(
    stack: StackConfig,
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    name = unique("q")
    record = tmp_path / "executions.txt"
    env = {"SUPAWORKER_TEST_RECORD": str(record)}
    with fast_rescue(stack, HORIZON):
        (blocking,) = submit(queue_name=name, payload={"mode": "block", "seconds": BLOCK})
        (innocent,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 1})
        worker = start_worker("--queue", name, "--concurrency", "2", "--no-realtime", env=env)
        wait_for(
            lambda: all(
                queue.get(j.id).assigned_to == worker.worker_id for j in (blocking, innocent)
            ),
            30,
            "both jobs claimed by the first worker",
        )
        # A second worker on the same queue: its claims run the reaper, which rescues the
        # first worker's jobs if its heartbeat stops for longer than the horizon.
        rescuer = start_worker("--queue", name, "--no-realtime", env=env)
        worker.wait_for_log('"action": "loop_blocked"', str(blocking.id), timeout=20)
        wait_for(
            lambda: all(
                queue.get(j.id).status == JobStatus.COMPLETED for j in (blocking, innocent)
            ),
            BLOCK + 30,
            "both jobs completed",
        )
        time.sleep(HORIZON)  # time for a rescue, had the worker been declared dead
        for job in (blocking, innocent):
            row = queue.get(job.id)
            assert row.status == JobStatus.COMPLETED, worker.output()[-3000:]
            assert row.assigned_to == worker.worker_id
            assert row.attempt == 1 and row.retry_count == 0, (row.attempt, row.retry_count)
        executions = record.read_text().split()
        assert executions.count(str(blocking.id)) == 1
        assert executions.count(str(innocent.id)) == 1
        assert '"action": "loop_unblocked"' in worker.output()
        assert str(innocent.id) not in rescuer.output()
        worker.stop()
        rescuer.stop()
