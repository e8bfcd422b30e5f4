"""supaworker/worker/supervisor.py: a side task that dies stops the worker at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from supaworker import Job
from supaworker.client import AsyncQueueClient
from supaworker.testing import InMemoryTransport
from supaworker.worker.loop import EXIT_ERROR, EXIT_OK, Worker
from supaworker.worker.supervisor import SideTasks
from tests.unit.worker_doubles import enqueue, unit_settings


async def test_a_death_is_reported_when_it_happens_and_cancellation_is_not_one() -> None:
    died: list[tuple[str, str]] = []
    tasks = SideTasks(lambda name, exc: died.append((name, str(exc))))

    async def dies() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("lost its socket")

    tasks.start(dies(), "wakeup")
    tasks.start(asyncio.sleep(30), "heartbeat")
    await asyncio.sleep(0.05)
    assert died == [("wakeup", "lost its socket")]
    await tasks.stop()  # cancelling the others is no death
    assert died == [("wakeup", "lost its socket")]


async def test_a_side_task_that_returns_early_counts_as_dead() -> None:
    died: list[str] = []
    tasks = SideTasks(lambda name, exc: died.append(name))

    async def returns() -> None:
        return None

    tasks.start(returns(), "wakeup")
    await asyncio.sleep(0.01)
    assert died == ["wakeup"]
    await tasks.stop()


class DyingWakeup:
    """A wake-up source connected for a moment, then dead of an unexpected error."""

    async def run(
        self,
        wake: Callable[[], None],
        connected: Callable[[bool], None],
        control: Callable[[], None],
    ) -> None:
        connected(True)  # the loop now polls only every 30 s
        await asyncio.sleep(0.2)
        raise RuntimeError("wake-up listener bug")


async def test_a_dead_side_task_stops_an_idle_worker_at_once() -> None:
    """Regression: the death was noticed only when the claim loop next turned, up to the
    30 s Realtime poll interval later."""

    async def handler(job: Job) -> None:
        return None

    fake = InMemoryTransport()
    settings = unit_settings(burst=False, realtime_poll_interval=30, poll_interval=30)
    worker = Worker(
        AsyncQueueClient(fake),
        handler,
        settings,
        wakeup=DyingWakeup(),
        install_signal_handlers=False,
    )
    enqueue(fake, 1)
    began = time.monotonic()
    assert await asyncio.wait_for(worker.run(), 20) == EXIT_ERROR
    assert time.monotonic() - began < 5
    assert fake.workers["w1"]["status"] == "offline"


class StubbornWakeup:
    """Loses one cancellation, as the Realtime subscription did when Python 3.11's
    `asyncio.wait_for` completed at the moment the worker's shutdown cancelled it."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()

    async def run(
        self,
        wake: Callable[[], None],
        connected: Callable[[bool], None],
        control: Callable[[], None],
    ) -> None:
        self.waiting.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost, as in wait_for's race
            await asyncio.sleep(30)
        connected(True)
        while True:
            await asyncio.sleep(0.05)


async def test_shutdown_ends_a_side_task_that_lost_its_cancellation() -> None:
    """Regression: a `--burst` worker logged burst_done and then hung for ever in its
    shutdown, waiting for a wake-up task whose cancellation had been swallowed."""

    async def handler(job: Job) -> None:
        return None

    wakeup = StubbornWakeup()
    worker = Worker(
        AsyncQueueClient(InMemoryTransport()),
        handler,
        unit_settings(burst=False),
        wakeup=wakeup,
        install_signal_handlers=False,
    )
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(wakeup.waiting.wait(), 5)
    worker.request_stop()
    assert await asyncio.wait_for(task, 10) == EXIT_OK
