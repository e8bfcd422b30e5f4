"""worker/heartbeat_thread.py: the heartbeat's view of the worker from its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from typing import Any

from supaworker.models import HeartbeatReply, WorkerStatus
from supaworker.worker.heartbeat_thread import LoopTarget, ThreadedHeartbeat
from supaworker.worker.ledger import StopReason


class Target:
    def __init__(self) -> None:
        self.owned = [uuid.uuid4()]
        self.in_flight = False
        self.stopped: list[tuple[uuid.UUID, StopReason]] = []
        self.loop_thread = threading.get_ident()
        self.called_from: set[int] = set()

    def owned_ids(self) -> list[uuid.UUID]:
        self.called_from.add(threading.get_ident())
        return list(self.owned)

    def claims_in_flight(self) -> bool:
        return self.in_flight

    def before_beat(self) -> None:
        self.called_from.add(threading.get_ident())

    def set_paused(self, paused: bool) -> None: ...

    def stop_job(self, job_id: uuid.UUID, reason: StopReason) -> None:
        self.called_from.add(threading.get_ident())
        self.stopped.append((job_id, reason))

    def beat_ok(self, at: float) -> None: ...

    async def register(self) -> None: ...


async def test_a_free_loop_answers_and_a_blocked_one_gives_the_last_answer() -> None:
    target = Target()
    bridge = LoopTarget(target, asyncio.get_running_loop())
    await asyncio.to_thread(bridge.before_beat)  # the loop is free: a fresh answer
    assert bridge.fresh and await asyncio.to_thread(bridge.owned_ids) == target.owned
    assert not bridge.claims_in_flight()
    first = list(target.owned)
    target.owned.append(uuid.uuid4())

    seen: dict[str, object] = {}

    def beat_while_blocked() -> None:
        bridge.before_beat()
        seen["fresh"] = bridge.fresh
        seen["owned"] = bridge.owned_ids()
        seen["in_flight"] = bridge.claims_in_flight()
        bridge.stop_job(first[0], "lost")

    beater = threading.Thread(target=beat_while_blocked)
    beater.start()
    time.sleep(1.5)  # a handler holding the loop
    beater.join(5)
    # The beat did not wait for the loop: it reported the last answer, marked stale, and
    # claims count as in flight so that no orphan is released behind the block.
    assert seen == {"fresh": False, "owned": first, "in_flight": True}
    assert target.stopped == []  # posted to the loop, which has not turned yet
    await asyncio.sleep(0.05)
    assert target.stopped == [(first[0], "lost")]
    # Everything the worker was asked ran on its own thread.
    assert target.called_from == {target.loop_thread}


async def test_the_reply_is_judged_against_what_the_worker_holds_after_the_beat() -> None:
    """A claim that lands while the beat is on its way is in the heartbeat's orphan list (SQL
    saw it assigned, the beat did not report it): read before the beat, the worker's jobs
    lacked it and the chaos suite saw running jobs released under their handlers."""
    target = Target()
    bridge = LoopTarget(target, asyncio.get_running_loop())
    await asyncio.to_thread(bridge.before_beat)
    claimed = uuid.uuid4()
    target.owned.append(claimed)  # the claim's answer, during the beat's round trip
    assert claimed in await asyncio.to_thread(bridge.owned_ids)
    target.in_flight = True
    await asyncio.to_thread(bridge.owned_ids)
    assert bridge.claims_in_flight()  # from the same answer as the ids


async def test_a_beat_requested_while_the_thread_still_connects_is_not_lost() -> None:
    """A `control` message (pause, cancel) can arrive before the heartbeat thread's client
    exists (tests/acceptance/test_wakeup.py lost one in four): the request waits for it and
    the beat runs at once, not at the next interval."""
    beats: list[float] = []

    class Queue:
        async def heartbeat(self, worker_id: str, job_ids: list[uuid.UUID]) -> HeartbeatReply:
            beats.append(time.monotonic())
            return HeartbeatReply(status=WorkerStatus.ACTIVE)

        async def aclose(self) -> None: ...

    async def connect() -> Any:
        await asyncio.sleep(0.3)  # the thread's HTTP client is still being made
        return Queue()

    heartbeat = ThreadedHeartbeat(connect, "w1", 60, Target())
    task = asyncio.create_task(heartbeat.run())
    await asyncio.sleep(0.05)
    began = time.monotonic()
    heartbeat.request()
    try:
        for _ in range(100):
            if beats:
                break
            await asyncio.sleep(0.02)
        assert beats and beats[0] - began < 1.5  # not the 60 s interval
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await task
