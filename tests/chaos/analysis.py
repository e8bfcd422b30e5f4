"""Reading what happened: every execution the handler recorded, matched with how the
database ended each attempt, and the recovery times of rescued jobs."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.chaos.harness import Db, Kill

RESCUE_MESSAGES = ("stopped heartbeating", "restarted while the job was running")


@dataclass(frozen=True)
class Execution:
    job: str
    attempt: int
    worker: str


def read_executions(path: Path) -> list[Execution]:
    """tests/handlers.py appends "job attempt worker" for every execution it starts."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [Execution(job, int(attempt), worker) for job, attempt, worker in rows]


@dataclass(frozen=True)
class Ending:
    event: str
    worker: str | None
    message: str | None
    at: datetime


def attempt_endings(db: Db, queue: str) -> dict[tuple[str, int], Ending]:
    """How each attempt ended: the first completed / retry_scheduled / failed / cancelled /
    released event carrying that attempt number."""
    rows = db.execute(
        "select e.job_id, e.attempt, e.event, e.worker_id, e.message, e.created_at"
        " from public.job_events e join public.processing_queue q on q.id = e.job_id"
        " where q.queue = %s and e.event in"
        " ('completed', 'retry_scheduled', 'failed', 'cancelled', 'released') order by e.id",
        (queue,),
    ).fetchall()
    endings: dict[tuple[str, int], Ending] = {}
    for job, attempt, event, worker, message, at in rows:
        assert isinstance(at, datetime)
        key = (str(job), int(str(attempt)))
        if key not in endings:
            endings[key] = Ending(
                str(event), None if worker is None else str(worker), _opt(message), at
            )
    return endings


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def requeue_boundaries(db: Db, queue: str) -> dict[str, list[int]]:
    """Per job, the attempt numbers at which a finished job was re-queued (a new cycle)."""
    rows = db.execute(
        "select e.job_id, e.attempt from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'requeued' order by e.id",
        (queue,),
    ).fetchall()
    bounds: dict[str, list[int]] = defaultdict(list)
    for job, attempt in rows:
        bounds[str(job)].append(int(str(attempt)))
    return bounds


def completions_per_cycle(db: Db, queue: str) -> Counter[tuple[str, int]]:
    rows = db.execute(
        "select e.job_id, e.attempt from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'completed'",
        (queue,),
    ).fetchall()
    bounds = requeue_boundaries(db, queue)
    return Counter(
        (str(job), sum(int(str(attempt)) > b for b in bounds.get(str(job), [])))
        for job, attempt in rows
    )


@dataclass
class Accounting:
    """Every execution, classified by how its attempt ended."""

    executions: int
    by_outcome: Counter[str]  # completed / cancelled / failed / killed / frozen / other: ...
    attempts_run_twice: list[tuple[str, int]]
    jobs_run_more_than_once_in_a_cycle: int
    extra_executions: int  # executions beyond the first of each job and cycle
    unexplained: list[str]


def account(
    executions: list[Execution],
    endings: dict[tuple[str, int], Ending],
    bounds: dict[str, list[int]],
    killed: set[str],
    freezes: list[tuple[str, datetime, datetime | None]],
) -> Accounting:
    per_attempt = Counter((e.job, e.attempt) for e in executions)
    per_cycle: Counter[tuple[str, int]] = Counter(
        (e.job, sum(e.attempt > b for b in bounds.get(e.job, []))) for e in executions
    )
    outcome: Counter[str] = Counter()
    unexplained: list[str] = []
    for e in executions:
        ending = endings.get((e.job, e.attempt))
        if ending is None:
            kind = "other: attempt never ended"
        elif ending.event in ("completed", "cancelled", "failed"):
            kind = ending.event
        elif ending.event == "retry_scheduled" and (ending.message or "").endswith(RESCUE_MESSAGES):
            frozen = any(
                w == e.worker and began <= ending.at and (ended is None or ending.at <= ended)
                for w, began, ended in freezes
            )
            if frozen:
                kind = "frozen"
            elif e.worker in killed:
                kind = "killed"
            else:
                kind = f"other: rescued from live worker {e.worker}"
        else:
            kind = f"other: {ending.event} {ending.message}"
        outcome[kind] += 1
        if kind.startswith("other"):
            unexplained.append(f"{e.job} attempt {e.attempt} on {e.worker}: {kind}")
    return Accounting(
        executions=len(executions),
        by_outcome=outcome,
        attempts_run_twice=[k for k, n in per_attempt.items() if n > 1],
        jobs_run_more_than_once_in_a_cycle=sum(1 for n in per_cycle.values() if n > 1),
        extra_executions=sum(n - 1 for n in per_cycle.values()),
        unexplained=unexplained,
    )


@dataclass(frozen=True)
class Rescue:
    worker: str
    how: str  # "restart" (same id registered again) or "horizon" (the reaper)
    frozen: bool
    after_s: float  # kill / freeze -> job claimable again
    claimed_after_s: float | None  # kill / freeze -> job claimed again
    during_outage: bool
    # Last accepted heartbeat -> rescue, when the worker row still holds the heartbeat from
    # before the rescue (not for a worker id that beat again later: restarted or thawed).
    silent_s: float | None
    silent_during_outage: bool


def rescues(
    db: Db,
    queue: str,
    kills: list[Kill],
    freezes: list[tuple[str, datetime, datetime | None]],
    outages: list[tuple[datetime, datetime]],
    horizon: float,
) -> list[Rescue]:
    """Each rescue of a job from a worker this suite killed or froze, timed from that act.
    'Claimable again' is the rescue itself (a rescued job is due after the backoff only);
    'claimed again' also waits behind the backlog. `during_outage`: a service was down
    between one horizon before the act and the rescue, so the worker's last heartbeat may
    be older than the act (the rescue then comes sooner) or claims, which run the reaper,
    were held up (later)."""
    rows = db.execute(
        "select r.worker_id, r.message, r.created_at, min(a.created_at), w.last_heartbeat"
        " from public.job_events r join public.processing_queue q on q.id = r.job_id"
        " left join public.vps_workers w on w.worker_id = r.worker_id"
        " left join public.job_events a"
        "   on a.job_id = r.job_id and a.event in ('assigned', 'started') and a.id > r.id"
        " where q.queue = %s and r.event in ('retry_scheduled', 'failed')"
        " and (r.message like '%%stopped heartbeating' or r.message like '%%restarted while%%')"
        " group by r.id, r.worker_id, r.message, r.created_at, w.last_heartbeat",
        (queue,),
    ).fetchall()
    acts: list[tuple[str, datetime, bool]] = [(k.worker_id, k.at, False) for k in kills]
    acts += [(w, began, True) for w, began, _ in freezes]
    found: list[Rescue] = []
    for worker, message, rescued_at, claimed_at, last_beat in rows:
        assert isinstance(rescued_at, datetime)
        silent = last_beat if isinstance(last_beat, datetime) and last_beat < rescued_at else None
        earlier = [(at, frozen) for w, at, frozen in acts if w == worker and at <= rescued_at]
        if not earlier:
            continue
        at, frozen = max(earlier)
        found.append(
            Rescue(
                worker=str(worker),
                how="restart" if "restarted while" in str(message) else "horizon",
                frozen=frozen,
                after_s=(rescued_at - at).total_seconds(),
                claimed_after_s=(claimed_at - at).total_seconds()
                if isinstance(claimed_at, datetime)
                else None,
                during_outage=any(
                    b <= rescued_at and (at - e).total_seconds() <= horizon for b, e in outages
                ),
                silent_s=None if silent is None else (rescued_at - silent).total_seconds(),
                silent_during_outage=silent is not None
                and any(b <= rescued_at and silent <= e for b, e in outages),
            )
        )
    return found


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(values),
        "median": round(statistics.median(ordered), 2),
        "p90": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 2),
        "max": round(ordered[-1], 2),
    }
