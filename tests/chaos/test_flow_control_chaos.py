"""Issue 18 under damage: real `supaworker run` processes, SIGKILLed one after another and
replaced, while a sampler reads from its own connection how many jobs of each owner and of a
concurrency key are running. queue_settings.max_running_per_user and concurrency_limits must
hold in every sample (each sample is one snapshot, so a value above a cap is a real
violation: a SIGKILLed worker's jobs count until the reaper frees them, and the rescue only
lowers counts), and every job must end completed (none lost). Bounded: about a minute."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from supaworker_local.config import StackConfig
from tests.chaos.load import Readers, record
from tests.chaos.netns import HOST_ADDR, Relay, ip, start_in
from tests.chaos.settings import fast_rescue
from tests.chaos.test_pool import POOL
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

Db = psycopg.Connection[tuple[object, ...]]
OWNER_CAP = 2
KEY_CAP = 3
OWNERS = 4
JOBS_PER_OWNER = 60


@pytest.fixture()
def limits(stack: StackConfig, admin_db: Db) -> Iterator[str]:
    key = f"chaos-key-{uuid.uuid4().hex[:8]}"
    admin_db.execute("update public.queue_settings set max_running_per_user = %s", (OWNER_CAP,))
    admin_db.execute(
        "insert into public.concurrency_limits (key, max_running) values (%s, %s)", (key, KEY_CAP)
    )
    with fast_rescue(stack, horizon=3, rescue_interval=0.5):
        try:
            yield key
        finally:
            admin_db.execute("update public.queue_settings set max_running_per_user = null")
            admin_db.execute("delete from public.concurrency_limits where key = %s", (key,))


def enqueue(db: Db, user: StackUser, queue: str, n: int, key: str | None) -> None:
    db.execute(
        """
        with docs as (
          insert into public.user_documents (user_id, name, content)
          select %s, 'caps-' || g, 'x' from generate_series(1, %s) g returning id
        )
        select count(public.enqueue_job(d.id, 0,
                 jsonb_build_object('mode', 'sleep', 'seconds', 0.1 + random() * 0.3),
                 %s, 10, null, null, '{}', %s))
        from docs d
        """,
        (user.id, n, queue, key),
    )


def test_caps_hold_while_workers_are_killed_and_no_job_is_lost(
    stack: StackConfig,
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    limits: str,
) -> None:
    queue = unique("caps-chaos")
    owners = [make_user() for _ in range(OWNERS)]
    for n, owner in enumerate(owners):
        # Half of the owners' jobs share the concurrency key, so both limits bind at once.
        enqueue(admin_db, owner, queue, JOBS_PER_OWNER, limits if n % 2 else None)
    total = OWNERS * JOBS_PER_OWNER
    done = threading.Event()
    owner_peaks: list[int] = []
    key_peaks: list[int] = []

    def sampler() -> None:
        with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "select coalesce(max(n), 0),"
                    " (select count(*) from public.processing_queue where queue = %s"
                    "   and concurrency_key = %s and status in ('assigned', 'processing'))"
                    " from (select count(*) n from public.processing_queue where queue = %s"
                    "   and status in ('assigned', 'processing') group by user_id) o",
                    (queue, limits, queue),
                ).fetchone()
                assert row is not None
                owner_peaks.append(int(str(row[0])))
                key_peaks.append(int(str(row[1])))

    def spawn() -> WorkerProcess:
        return start_worker("--queue", queue, "--concurrency", "4")

    rng = random.Random()
    fleet = [spawn() for _ in range(4)]
    watch = threading.Thread(target=sampler)
    watch.start()
    kills = 0
    try:
        # Kills of workers still starting up rescue nothing (on a loaded machine a start
        # takes seconds): the first fleet registers before the first kill, and a victim is
        # picked among the workers holding jobs when there are any.
        for worker in fleet:
            worker.wait_for_log('"action": "worker_registered"', timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            left = admin_db.execute(
                "select count(*) from public.processing_queue where queue = %s"
                " and status <> 'completed'",
                (queue,),
            ).fetchone()
            if left == (0,):
                break
            if kills < 12:
                holding = [w for w in fleet if held_by(admin_db, queue, w.worker_id) > 0]
                victim = rng.choice(holding or fleet)
                fleet.remove(victim)
                victim.stop(signal.SIGKILL)
                kills += 1
                fleet.append(spawn())
            time.sleep(rng.uniform(1.0, 2.0))
    finally:
        done.set()
        watch.join(timeout=10)
        for worker in fleet:
            worker.stop()
    rows = admin_db.execute(
        "select status, count(*) from public.processing_queue where queue = %s group by 1",
        (queue,),
    ).fetchall()
    assert rows == [("completed", total)], rows  # none lost, none stuck
    assert kills >= 5, kills
    rescued = admin_db.execute(
        "select count(*) from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'retry_scheduled'"
        " and e.message like '%%stopped heartbeating%%'",
        (queue,),
    ).fetchone()
    assert rescued is not None and int(str(rescued[0])) > 0  # killed with jobs in hand
    assert owner_peaks and max(owner_peaks) <= OWNER_CAP, max(owner_peaks)
    assert max(key_peaks) <= KEY_CAP, max(key_peaks)
    # The sampler saw both limits reached: they were binding, not idle.
    assert OWNER_CAP in owner_peaks and KEY_CAP in key_peaks


# -- every issue-19 fault with the owner cap, a concurrency key and a rate limit on --------
RATE_PER_SECOND, RATE_BURST = 4.0, 2
HORIZON = 3.0
PHASE_SECONDS = float(os.environ.get("SUPAWORKER_CAPS_PHASE_SECONDS", "8"))


@pytest.fixture()
def all_limits(stack: StackConfig, admin_db: Db) -> Iterator[tuple[str, str]]:
    """max_running_per_user, a concurrency key and a rate limit, all on; a short horizon."""
    key, rate_key = f"caps-key-{uuid.uuid4().hex[:8]}", f"caps-rate-{uuid.uuid4().hex[:8]}"
    admin_db.execute("update public.queue_settings set max_running_per_user = %s", (OWNER_CAP,))
    admin_db.execute(
        "insert into public.concurrency_limits (key, max_running) values (%s, %s)", (key, KEY_CAP)
    )
    admin_db.execute(
        "insert into public.rate_limits (key, per_second, burst) values (%s, %s, %s)",
        (rate_key, RATE_PER_SECOND, RATE_BURST),
    )
    with fast_rescue(stack, horizon=HORIZON, rescue_interval=0.5):
        try:
            yield key, rate_key
        finally:
            admin_db.execute("update public.queue_settings set max_running_per_user = null")
            admin_db.execute("delete from public.concurrency_limits where key = %s", (key,))
            admin_db.execute("delete from public.rate_limits where key = %s", (rate_key,))
            admin_db.execute(
                "delete from supaworker_private.rate_buckets where key = %s", (rate_key,)
            )


class CapSampler:
    """Snapshots, from its own connection, the most running jobs of one owner and of the
    concurrency key, each tagged with the phase the test is in."""

    def __init__(self, stack: StackConfig, queue: str, key: str) -> None:
        self.stack, self.queue, self.key = stack, queue, key
        self.phase = "start"
        self.samples: list[tuple[str, int, int]] = []  # (phase, owner max, key count)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CapSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.stack.admin_db_url, autocommit=True) as conn:
            while not self._done.is_set():
                row = conn.execute(
                    "select coalesce(max(n), 0),"
                    " (select count(*) from public.processing_queue where queue = %s"
                    "   and concurrency_key = %s and status in ('assigned', 'processing'))"
                    " from (select count(*) n from public.processing_queue where queue = %s"
                    "   and status in ('assigned', 'processing') group by user_id) o",
                    (self.queue, self.key, self.queue),
                ).fetchone()
                assert row is not None
                self.samples.append((self.phase, int(str(row[0])), int(str(row[1]))))
                time.sleep(0.02)

    def peaks(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for phase, owner, key in self.samples:
            p = out.setdefault(phase, {"samples": 0, "owner_max": 0, "key_max": 0})
            p["samples"] += 1
            p["owner_max"] = max(p["owner_max"], owner)
            p["key_max"] = max(p["key_max"], key)
        return out


def rate_excess(starts: list[float]) -> float:
    """The most starts in any window [t_i, t_j] beyond what the bucket allows there,
    burst + per_second * (t_j - t_i). The bucket spends on clock_timestamp(), the events carry
    their transaction's start, so one start of slack is measurement, not a violation
    (as in tests/sql/test_keys.py)."""
    worst = float("-inf")
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            allowed = RATE_BURST + RATE_PER_SECOND * (starts[j] - starts[i])
            worst = max(worst, (j - i + 1) - allowed)
    return worst


def enqueue_flows(db: Db, owners: list[StackUser], queue: str, n: int, key: str, rate: str) -> None:
    """Owner 0: rate-limited; 1: the concurrency key; 2: both; 3: neither."""
    for i, owner in enumerate(owners):
        db.execute(
            """
            with docs as (
              insert into public.user_documents (user_id, name, content)
              select %s, 'caps-' || g, 'x' from generate_series(1, %s) g returning id
            )
            select count(public.enqueue_job(d.id, 0,
                     jsonb_build_object('mode', 'sleep', 'seconds', 0.3 + random() * 0.5),
                     %s, 10, null, null, '{}', %s, %s))
            from docs d
            """,
            (owner.id, n, queue, key if i in (1, 2) else None, rate if i in (0, 2) else None),
        )


def stopped_heartbeating(db: Db, queue: str) -> dict[str, int]:
    rows = db.execute(
        "select e.worker_id, count(*) from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'retry_scheduled'"
        " and e.message like '%%stopped heartbeating' group by 1",
        (queue,),
    ).fetchall()
    return {str(r[0]): int(str(r[1])) for r in rows}


@pytest.mark.timeout(400)
def test_caps_and_rate_limits_hold_through_every_fault(
    stack: StackConfig,
    stack_env: dict[str, str],
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    all_limits: tuple[str, str],
    slow_read: str,
    netns: tuple[str, str],
    tmp_path: Path,
) -> None:
    """Issue 19's faults one after another, with every limit on: SIGKILLs (horizon 3 s),
    a transaction pinning the xmin horizon, users' reads saturating PostgREST's pool, a
    worker cut off from the network while it runs jobs (its jobs are rescued and run
    elsewhere). A sampler over the database socket checks max_running_per_user and the
    concurrency key in every snapshot, the job_events check the rate limit over every
    window; rescues happened, and only from the workers killed or cut off."""
    key, rate_key = all_limits
    namespace, host_if = netns
    queue = unique("caps-faults")
    owners = [make_user() for _ in range(OWNERS)]
    reader = make_user()
    enqueue_flows(admin_db, owners, queue, 150, key, rate_key)
    phases: dict[str, float] = {}
    killed: list[str] = []
    rng = random.Random()

    def spawn() -> WorkerProcess:
        return start_worker("--queue", queue, "--concurrency", "4", "--no-realtime")

    with Relay(HOST_ADDR, stack.api_port) as relay, CapSampler(stack, queue, key) as sampler:
        cut_off = start_in(
            namespace,
            f"http://{HOST_ADDR}:{relay.port}",
            stack_env,
            tmp_path / "cut.log",
            *("--queue", queue, "--concurrency", "4", "--no-realtime"),
        )
        fleet = [spawn() for _ in range(3)]
        try:
            began = time.monotonic()

            def phase(name: str) -> None:
                sampler.phase, phases[name] = name, round(time.monotonic() - began, 1)

            for worker in [*fleet, cut_off]:
                worker.wait_for_log('"action": "worker_registered"', timeout=30)
            phase("calm")
            time.sleep(2.0)
            phase("kills")
            for _ in range(3):
                # A worker with jobs in hand, so that the kill leaves jobs to rescue.
                holding = [w for w in fleet if held_by(admin_db, queue, w.worker_id) > 0]
                victim = rng.choice(holding or fleet)
                fleet.remove(victim)
                victim.stop(signal.SIGKILL)
                killed.append(victim.worker_id)
                fleet.append(spawn())
                time.sleep(PHASE_SECONDS / 3)
            phase("xmin_pinned")
            with psycopg.connect(stack.admin_db_url) as pin:  # not autocommit: stays open
                pin.execute("select txid_current()")
                time.sleep(PHASE_SECONDS)
                pin.commit()
            phase("pool_saturated")
            with Readers(slow_read, stack, reader, 6 * POOL):
                time.sleep(PHASE_SECONDS)
            phase("after_pool")
            time.sleep(HORIZON + 1)
            phase("netns_cut")
            # The caps let about 7 jobs run at once over 16 slots: the namespaced worker
            # holds one or two of them at a time.
            wait_for(
                lambda: held_by(admin_db, queue, cut_off.worker_id) >= 1,
                30,
                "the worker to be cut off to hold jobs",
            )
            held_at_cut = held_by(admin_db, queue, cut_off.worker_id)
            ip("link", "set", host_if, "down")
            try:
                wait_for(
                    lambda: held_by(admin_db, queue, cut_off.worker_id) == 0,
                    HORIZON + 20,
                    "the cut-off worker's jobs to be rescued",
                )
                time.sleep(2.0)  # its rescued jobs run elsewhere while it still runs them
            finally:
                ip("link", "set", host_if, "up")
            phase("back")
            time.sleep(2.0)
            phase("drain")
            # Paused first, so that no claim races the cancels (cancel_job refuses a job that
            # changes hands while it is being cancelled).
            admin_db.execute(
                "select count(public.set_worker_status(worker_id, 'paused'))"
                " from public.vps_workers where worker_id = any(%s)",
                ([w.worker_id for w in [*fleet, cut_off]],),
            )
            cancelled = admin_db.execute(
                "select count(public.cancel_job(id)) from public.processing_queue"
                " where queue = %s and status = 'pending'",
                (queue,),
            ).fetchone()
            wait_for(
                lambda: (
                    admin_db.execute(
                        "select count(*) from public.processing_queue where queue = %s"
                        " and status not in ('completed', 'cancelled', 'failed')",
                        (queue,),
                    ).fetchone()
                    == (0,)
                ),
                60,
                "the running jobs to end",
            )
        finally:
            for worker in [*fleet, cut_off]:
                if worker.proc.poll() is None:
                    worker.stop()
    statuses = {
        str(r[0]): int(str(r[1]))
        for r in admin_db.execute(
            "select status, count(*) from public.processing_queue where queue = %s group by 1",
            (queue,),
        ).fetchall()
    }
    starts = [
        float(str(r[0]))
        for r in admin_db.execute(
            "select extract(epoch from e.created_at) from public.job_events e"
            " join public.processing_queue q on q.id = e.job_id where q.queue = %s"
            " and q.rate_limit_key = %s and e.event in ('assigned', 'started')"
            " order by e.created_at",
            (queue, rate_key),
        ).fetchall()
    ]
    rescued = stopped_heartbeating(admin_db, queue)
    rescued_from = {
        "killed": sum(n for w, n in rescued.items() if w in killed),
        "cut_off": rescued.get(cut_off.worker_id, 0),
        "live_others": sum(
            n for w, n in rescued.items() if w not in killed and w != cut_off.worker_id
        ),
    }
    peaks = sampler.peaks()
    excess = rate_excess(starts)
    span = (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    figures = {
        "owner_cap": OWNER_CAP,
        "key_cap": KEY_CAP,
        "rate_limit": {"per_second": RATE_PER_SECOND, "burst": RATE_BURST},
        "dead_worker_horizon_s": HORIZON,
        "phases_began_at_s": phases,
        "peaks_by_phase": peaks,
        "statuses": statuses,
        "cancelled_pending_at_the_end": int(str(cancelled[0])) if cancelled else None,
        "rate_limited_starts": len(starts),
        "rate_limited_starts_per_s": round(len(starts) / span, 2) if span else None,
        "rate_excess_max": round(excess, 2),
        "jobs_held_by_cut_worker": held_at_cut,
        # Its attempts ran on while cut off; their results came back late and were fenced out.
        "late_outcomes_of_the_cut_worker_fenced": cut_off.output().count('"action": "job_lost"'),
        "rescued_stopped_heartbeating": rescued_from,
    }
    record(stack, "caps_through_faults", figures)
    assert "failed" not in statuses, statuses
    assert all(p["owner_max"] <= OWNER_CAP for p in peaks.values()), peaks
    assert all(p["key_max"] <= KEY_CAP for p in peaks.values()), peaks
    assert excess <= 1, figures  # never more starts than the bucket allows (+1 measurement)
    # The limits were binding, not idle.
    assert max(p["owner_max"] for p in peaks.values()) == OWNER_CAP, peaks
    assert max(p["key_max"] for p in peaks.values()) == KEY_CAP, peaks
    assert len(starts) > 2 * RATE_BURST, figures
    # The faults really rescued jobs, and only from the workers killed or cut off.
    assert rescued_from["killed"] >= 1 and rescued_from["cut_off"] >= 1, figures
    assert figures["late_outcomes_of_the_cut_worker_fenced"] >= 1, figures
    assert rescued_from["live_others"] == 0, figures


def held_by(db: Db, queue: str, worker_id: str) -> int:
    row = db.execute(
        "select count(*) from public.processing_queue where queue = %s and assigned_to = %s"
        " and status in ('assigned', 'processing')",
        (queue, worker_id),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))
