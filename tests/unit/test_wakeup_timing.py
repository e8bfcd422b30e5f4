"""When a Realtime wake-up claims: at once for due jobs, at run_at for later ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from supaworker.config import WorkerSettings
from supaworker.worker.wakeup import DUE_MARGIN, RealtimeWakeup, jitter_for, seconds_until


@pytest.mark.parametrize("age", [0.0, 0.01, 0.04, 5.0])
def test_a_job_due_already_is_claimed_at_once(age: float) -> None:
    """The usual insert: run_at is its creation time, a few ms before the event arrives.
    (A margin added regardless held every wake-up back by up to 50 ms.)"""
    run_at = datetime.now(UTC) - timedelta(seconds=age)
    assert seconds_until(run_at.isoformat()) == 0.0


def test_a_job_due_later_waits_until_run_at_plus_the_margin() -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=2)
    delay = seconds_until(run_at.isoformat())
    assert 2 - 0.5 < delay - DUE_MARGIN <= 2


@pytest.mark.parametrize("value", [None, 17, "not a time", ""])
def test_missing_or_unreadable_run_at_means_now(value: object) -> None:
    assert seconds_until(value) == 0.0


def test_naive_timestamps_are_read_as_utc() -> None:
    later = (datetime.now(UTC) + timedelta(seconds=3)).replace(tzinfo=None)
    assert 2.5 < seconds_until(later.isoformat()) <= 3 + DUE_MARGIN


def test_jitter_is_off_by_default_and_bounded_and_spread_when_on() -> None:
    assert jitter_for("job", "w1", 0.0) == 0.0
    delays = {jitter_for("job", f"w{i}", 0.05) for i in range(50)}
    assert all(0 <= d <= 0.05 for d in delays)
    assert len(delays) > 40  # different workers, different moments
    assert jitter_for("job", "w1", 0.05) == jitter_for("job", "w1", 0.05)  # stable


def test_a_wakeup_for_an_inserted_job_follows_numeric_routing() -> None:
    """The worker wakes for a new job only if it may take it: the same requires_met as the
    claim, comparisons included (a worker of 10 MB files sleeps through a 20 MB job)."""
    settings = WorkerSettings(
        capabilities='{"max_file_size": 10485760}', worker_id="vps1", queues="ocr"
    )
    wakeup = RealtimeWakeup("http://queue.test", "key", settings)
    big = {"queue": "ocr", "requires": {"max_file_size": {"gte": 20971520}}}
    small = {"queue": "ocr", "requires": {"max_file_size": {"lte": 10485760}}}
    assert not wakeup._serves(big)
    assert wakeup._serves(small)
