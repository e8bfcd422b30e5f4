"""The Realtime wake-up task ends when cancelled, even when the cancel was swallowed on its way
(Python 3.11's wait_for inside subscribe() returns the result instead of raising when the
cancel arrives as its future completes): the worker's shutdown waits for this task."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from supaworker.worker import wakeup
from tests.unit.worker_doubles import unit_settings


class ConnectedClient:
    is_connected = True

    async def close(self) -> None:
        return None


async def test_a_cancel_swallowed_during_subscribe_still_ends_the_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered = asyncio.Event()

    async def subscribe_swallowing_cancel(*args: Any, **kw: Any) -> ConnectedClient:
        entered.set()
        # What wait_for does in 3.11 when the subscription completes as the cancel arrives.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return ConnectedClient()

    monkeypatch.setattr(wakeup, "subscribe", subscribe_swallowing_cancel)
    source = wakeup.RealtimeWakeup("http://unused", "key", unit_settings())
    states: list[bool] = []
    task = asyncio.create_task(source.run(lambda: None, states.append, lambda: None))
    await entered.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=3)
    assert task in done and task.cancelled()
    assert states == [False]  # never reported connected
