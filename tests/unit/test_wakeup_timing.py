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


def test_the_worker_follows_only_its_own_topic_the_database_routes() -> None:
    """Routing (queues, requires_met comparisons included) is the database's now: it sends
    `wake` only to a waiting worker that may take the job (tests/sql/test_wakeups.py); the
    worker listens to its own private topic for that and for `control`, nothing else."""
    settings = WorkerSettings(
        capabilities='{"max_file_size": 10485760}', worker_id="vps1", queues="ocr"
    )
    wakeup = RealtimeWakeup("http://queue.test", "key", settings)
    assert wakeup.topic() == "worker:vps1"
    assert sorted(b.event for b in wakeup._bindings()) == ["control", "wake"]
