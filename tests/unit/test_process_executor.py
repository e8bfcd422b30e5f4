"""supaworker/worker/processes.py and the start-up check of execution.py: `--executor process`
runs each job in a child started ahead of need, whose start and handler import never count
against the job's timeout; a handler it cannot run is refused at start."""

from __future__ import annotations

import asyncio
import contextlib
import time

from supaworker import Job, JobContext
from supaworker.testing import InMemoryTransport
from supaworker.worker.loop import EXIT_CONFIG, EXIT_OK
from supaworker.worker.processes import ProcessExecutor
from tests.unit import slow_import_handlers
from tests.unit.worker_doubles import a_job, enqueue, worker_on

SLOW = "tests.unit.slow_import_handlers:quick"


async def test_a_sync_handler_wanting_ctx_is_refused_at_start() -> None:
    """Regression: the child called handler(job) for a (job, ctx) handler, so every attempt
    failed with a TypeError until max_attempts; start-up never checked."""

    def handler(job: Job, ctx: JobContext) -> None:
        return None

    fake = InMemoryTransport()
    worker = worker_on(fake, handler, executor="process", handler="tests.handlers:handle_sync")
    (job_id,) = enqueue(fake)
    assert await worker.run() == EXIT_CONFIG
    assert fake.calls == []  # not even registered
    assert fake.jobs[job_id]["status"] == "pending"


async def test_async_handlers_and_plain_sync_ones_are_accepted() -> None:
    async def handler(job: Job, ctx: JobContext) -> str:
        return "on the loop"  # async handlers never go to a child

    fake = InMemoryTransport()
    worker = worker_on(fake, handler, executor="process")
    (job_id,) = enqueue(fake)
    assert await worker.run() == EXIT_OK
    assert fake.jobs[job_id]["status"] == "completed"


async def test_the_timeout_counts_only_the_jobs_own_run() -> None:
    """Regression: the clock started before the child process did, so a job whose handler
    module takes longer to import than its timeout failed every attempt (on a loaded 2-core
    machine, starting a process after a killed one took that long)."""
    fake = InMemoryTransport()
    timeout = slow_import_handlers.IMPORT_SECONDS * 0.6
    worker = worker_on(
        fake, slow_import_handlers.quick, executor="process", handler=SLOW, job_timeout=timeout
    )
    (job_id,) = enqueue(fake, p_max_attempts=1)
    assert await asyncio.wait_for(worker.run(), 60) == EXIT_OK
    assert fake.jobs[job_id]["status"] == "completed", fake.jobs[job_id]["error_message"]


async def test_the_next_child_is_ready_when_a_hung_one_is_killed() -> None:
    executor = ProcessExecutor(SLOW)
    try:
        executor.warm()
        hung = asyncio.create_task(executor.run(a_job(payload={"hang": True}), 30))
        for _ in range(600):  # the hung job's child and the spare both import the handler
            if executor.spare_ready:
                break
            await asyncio.sleep(0.05)
        assert executor.spare_ready
        hung.cancel()  # kills its child
        with contextlib.suppress(asyncio.CancelledError):
            await hung
        began = time.monotonic()
        result = await executor.run(a_job(), 5)
        # The spare had imported the handler already: no import time in this run.
        assert time.monotonic() - began < slow_import_handlers.IMPORT_SECONDS
        assert isinstance(result["pid"], int)
    finally:
        await executor.close()
