"""Hosted Realtime's rate counters, plans and the local settings that choose them (no stack)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supaworker_local.config import StackConfig, apply_realtime_env, parse_limits
from supaworker_local.realtime.database import Publication
from supaworker_local.realtime.limits import PLANS, Limits, RateCounter, resolve
from supaworker_local.realtime.poller import ReplicationPoller
from supaworker_local.realtime.server import RealtimeServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_a_per_second_average_over_five_second_ticks() -> None:
    clock = Clock()
    counter = RateCounter(10, clock=clock)
    counter.add(49)  # 9.8/s over the first tick: under the limit
    clock.now += 5
    assert not counter.triggered and counter.avg == pytest.approx(9.8)
    counter.add(51)  # (49 + 51) / 2 ticks / 5 s = 10/s: at the limit triggers
    clock.now += 5
    assert counter.triggered and counter.avg == pytest.approx(10.0)
    clock.now += 5  # an empty tick: 100 / 3 / 5 = 6.7/s, below: clears
    assert not counter.triggered


def test_the_average_spans_at_most_twelve_ticks_and_idle_counters_restart() -> None:
    clock = Clock()
    counter = RateCounter(10, clock=clock)
    counter.add(600)
    clock.now += 5
    assert counter.triggered  # 120/s over one tick
    clock.now += 5 * 11
    assert counter.avg == pytest.approx(10.0) and counter.triggered  # 600 / 12 ticks / 5 s
    clock.now += 5
    assert counter.avg == 0 and not counter.triggered  # the burst left the window
    clock.now += 400  # 5 quiet minutes: hosted drops the counter; the next starts afresh
    counter.add(60)
    clock.now += 5
    assert counter.avg == pytest.approx(12.0)  # one bucket, not 60 / 12 / 5


def test_unlimited_never_triggers() -> None:
    clock = Clock()
    counter = RateCounter(None, clock=clock)
    counter.add(10**9)
    clock.now += 5
    assert not counter.triggered and counter.avg > 0


def test_plans_and_overrides() -> None:
    assert resolve("pro") == Limits(500, 500, 500, 100, 50, 3000)
    assert resolve("FREE") == PLANS["free"] == Limits(200, 100, 100, 100, 20, 256)
    assert resolve("off") == Limits(None, None, None, None, None, None)
    assert not resolve("free").payload_too_large(256_500)
    assert resolve("free").payload_too_large(256_501)  # kb * 1000 + 500, as hosted
    custom = resolve("pro", {"max_events_per_second": 5, "max_channels_per_client": 0})
    assert (custom.max_events_per_second, custom.max_channels_per_client) == (5, None)
    with pytest.raises(ValueError, match="unknown Realtime plan"):
        resolve("enterprise-ish")
    with pytest.raises(ValueError, match="max_messages"):
        resolve("pro", {"max_messages": 1})


def test_settings_from_the_environment() -> None:
    config = StackConfig(state_dir="/nonexistent")
    assert (config.realtime_plan, config.realtime_idle_multiplier) == ("pro", 1)
    apply_realtime_env(config, {})
    assert (config.realtime_plan, config.realtime_limits) == ("pro", {})
    apply_realtime_env(
        config,
        {
            "SUPAWORKER_REALTIME_PLAN": " Free ",
            "SUPAWORKER_REALTIME_LIMITS": "max_events_per_second=50, max_concurrent_users=10",
            "SUPAWORKER_REALTIME_IDLE_MULTIPLIER": "5",
        },
    )
    assert config.realtime_plan == "free"
    assert config.realtime_limits == {"max_events_per_second": 50, "max_concurrent_users": 10}
    assert config.realtime_idle_multiplier == 5
    with pytest.raises(ValueError):
        parse_limits("max_events_per_second")


def _idle_wait(poller: ReplicationPoller) -> float:
    return poller._interval * poller._idle_multiplier


def test_the_poller_is_flat_at_100_ms_unless_asked() -> None:
    """Hosted waits poll_interval_ms (100) after an empty poll, with no idle back-off."""
    assert _idle_wait(RealtimeServer(StackConfig(state_dir="/x")).poller) == pytest.approx(0.1)
    slow = StackConfig(state_dir="/x", realtime_idle_multiplier=5)
    assert _idle_wait(RealtimeServer(slow).poller) == pytest.approx(0.5)
    legacy = StackConfig(state_dir="/x", extra={"realtime_idle_multiplier": "3"})
    assert _idle_wait(RealtimeServer(legacy).poller) == pytest.approx(0.3)


def test_what_the_slot_decodes() -> None:
    publication = Publication(tables={("public", "jobs"): 1}, actions="update,delete")
    wants: list[bool] = [False]
    poller = ReplicationPoller(
        "postgresql://x",
        interval_ms=100,
        process=lambda changes, publication: None,  # type: ignore[arg-type,return-value]
        has_subscribers=lambda: True,
        on_slot_recreated=lambda: None,
        wants_messages=lambda: wants[0],
    )
    assert poller._decode_targets(False, publication) == ("", "")
    assert poller._decode_targets(True, publication) == ("public.jobs", "update,delete")
    wants[0] = True  # a channel is joined: Broadcast from the database needs the inserts
    assert poller._decode_targets(True, publication) == (
        "public.jobs,realtime.messages",
        "insert,update,delete",
    )
    assert poller._decode_targets(True, Publication(actions="")) == (
        "realtime.messages",
        "insert",
    )


async def test_joins_do_not_each_wait_for_an_unreachable_database(tmp_path: Path) -> None:
    """The first join waits (up to 5 s) for the slot that carries database broadcasts; while
    opening it keeps failing, later joins go ahead at once."""
    server = RealtimeServer(StackConfig(state_dir=str(tmp_path), db_port=1))  # nothing there
    server.poller.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.ensure_broadcast_stream()
        assert loop.time() - started >= 4.5
        started = loop.time()
        await server.ensure_broadcast_stream()
        assert loop.time() - started < 0.5
    finally:
        await server.poller.stop()
