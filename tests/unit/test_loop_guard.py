"""Issue 19, fault 1: the watchdog names a blocked loop's jobs; the default job timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from supaworker.config import DEFAULT_JOB_TIMEOUT, WorkerSettings
from supaworker.worker.watchdog import LoopWatchdog


async def test_a_blocked_loop_is_logged_with_its_jobs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", "supaworker.worker")
    job = uuid.uuid4()
    watchdog = LoopWatchdog("w1", 0.2, lambda: [job])
    tick = asyncio.create_task(watchdog.tick())
    await asyncio.sleep(0.3)
    time.sleep(1.0)  # what an async handler doing CPU work or time.sleep does to the loop
    await asyncio.sleep(0.3)
    tick.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick
    blocked = [r for r in caplog.records if getattr(r, "action", "") == "loop_blocked"]
    assert blocked and blocked[0].job_ids == [str(job)]  # type: ignore[attr-defined]
    ended = [r for r in caplog.records if getattr(r, "action", "") == "loop_unblocked"]
    assert len(ended) == 1 and ended[0].blocked_seconds >= 0.8  # type: ignore[attr-defined]
    assert len(watchdog.blocks) == 1


async def test_a_busy_but_turning_loop_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    watchdog = LoopWatchdog("w1", 0.5, list)
    tick = asyncio.create_task(watchdog.tick())
    for _ in range(20):
        time.sleep(0.05)  # short holds, well under the threshold
        await asyncio.sleep(0)
    tick.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick
    assert not [r for r in caplog.records if getattr(r, "action", "") == "loop_blocked"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, DEFAULT_JOB_TIMEOUT), ("120", 120.0), ("none", None), ("0", None), (0, None)],
)
def test_the_job_timeout_has_a_default_that_can_be_turned_off(
    given: object, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPAWORKER_JOB_TIMEOUT", raising=False)
    values = {} if given is None else {"job_timeout": given}
    settings = WorkerSettings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]
    assert settings.job_timeout == expected


def test_the_job_timeout_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPAWORKER_JOB_TIMEOUT", "none")
    assert WorkerSettings(_env_file=None).job_timeout is None  # type: ignore[call-arg]
    monkeypatch.setenv("SUPAWORKER_JOB_TIMEOUT", "30")
    assert WorkerSettings(_env_file=None).job_timeout == 30.0  # type: ignore[call-arg]
