"""The breaking half of the chaos suite: a fleet of `supaworker run` processes and the damage
done to them and to the stack, with the database clock's time of each act for the checks."""

from __future__ import annotations

import json
import random
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from supaworker_local import postgres
from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig
from tests.worker_fixtures import WorkerProcess

Db = psycopg.Connection[tuple[object, ...]]
TERMINAL = ("completed", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(eq=False)
class Worker:
    process: WorkerProcess
    http_port: int

    @property
    def id(self) -> str:
        return self.process.worker_id

    def alive(self) -> bool:
        return self.process.proc.poll() is None

    def logged(self, action: str, since: datetime) -> list[tuple[datetime, dict[str, object]]]:
        """The worker's JSON log lines with this action, at or after `since`."""
        found = []
        for line in self.process.output().splitlines():
            if f'"action": "{action}"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            at = datetime.fromisoformat(str(entry["ts"]))
            if at >= since:
                found.append((at, entry))
        return found


@dataclass
class Kill:
    worker_id: str
    at: datetime
    restarted_same_id: bool


@dataclass
class Outage:
    what: str
    began: datetime
    ended: datetime


def db_now(db: Db) -> datetime:
    row = db.execute("select clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


@dataclass
class Chaos:
    stack: StackConfig
    db: Db
    queue: str
    user_id: uuid.UUID
    spawn: Callable[[str | None], Worker]
    rng: random.Random
    horizon: float
    workers: list[Worker] = field(default_factory=list)
    ever: dict[str, Worker] = field(default_factory=dict)  # last process of each worker id
    kills: list[Kill] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    # SIGSTOP: a worker alive but silent past the horizon (a long GC pause, a VM stall).
    frozen: Worker | None = None
    thaw_at: float = 0.0
    freezes: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)
    # After SIGCONT the worker is spared for a while, to watch it find its jobs gone; its log
    # is kept then (a restart under the same id would overwrite the file).
    thawed: Worker | None = None
    spare_thawed_until: float = 0.0
    thawed_logs: list[str] = field(default_factory=list)
    # Operator pause: (worker id, paused at, resumed at), and how long until it obeyed.
    paused: Worker | None = None
    resume_at: float = 0.0
    pauses: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)
    # Seconds from the act until the worker logged it knew: the pause (worker_paused), the
    # Realtime subscription back after a gateway restart (realtime_status connected).
    pause_obeyed_s: list[float] = field(default_factory=list)
    realtime_back_s: list[float] = field(default_factory=list)
    long_jobs: list[uuid.UUID] = field(default_factory=list)
    cancelled_running: list[uuid.UUID] = field(default_factory=list)
    cancelled_other: list[uuid.UUID] = field(default_factory=list)
    requeued: list[uuid.UUID] = field(default_factory=list)
    cancel_conflicts: int = 0  # PT409 "changed hands while being cancelled", retried
    current_jobs_checks: int = 0
    current_jobs_mismatches: list[tuple[object, ...]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    # -- the fleet ------------------------------------------------------------------------
    def start(self, worker_id: str | None = None) -> Worker:
        worker = self.spawn(worker_id)
        self.workers.append(worker)
        self.ever[worker.id] = worker
        return worker

    def _note(self, what: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")

    def backlog(self) -> int:
        row = self.db.execute(
            "select count(*) from public.processing_queue where queue = %s"
            " and status not in ('completed', 'failed', 'cancelled')",
            (self.queue,),
        ).fetchone()
        assert row is not None
        return int(str(row[0]))

    # -- damage ---------------------------------------------------------------------------
    def kill_one(self) -> None:
        # The frozen and the paused worker are left alone until thawed / resumed, so that
        # their own checks stay clean.
        self.keep_thawed_log_if_due()
        spared = (self.frozen, self.paused, self.thawed)
        victim = self.rng.choice([w for w in self.workers if w not in spared and w.alive()])
        at = db_now(self.db)
        victim.process.proc.send_signal(signal.SIGKILL)
        victim.process.proc.wait(10)
        self.workers.remove(victim)
        same_id = self.rng.random() < 0.4  # register_worker fails its old jobs at once
        self.kills.append(Kill(victim.id, at, same_id))
        self._note(f"SIGKILL {victim.id}" + (" (restarted under its id)" if same_id else ""))
        self.start(victim.id if same_id else None)

    def restart_postgrest(self) -> None:
        began = db_now(self.db)
        dev_stack.stop_postgrest(self.stack)
        time.sleep(2.0)
        dev_stack.start_postgrest(self.stack)
        self.outages.append(Outage("postgrest", began, db_now(self.db)))
        self._note("PostgREST restarted")

    def restart_postgres(self) -> None:
        began = datetime.now(UTC)  # the database is going away: the same machine's clock
        self.db.close()
        postgres.stop(self.stack)
        time.sleep(1.0)
        postgres.start(self.stack)
        self.db = psycopg.connect(self.stack.admin_db_url, autocommit=True)
        self.outages.append(Outage("postgres", began, db_now(self.db)))
        self._note("PostgreSQL restarted")

    def restart_gateway(self) -> None:
        """Drops the Realtime endpoint (and the REST route with it); then waits until every
        live worker has logged its Realtime subscription back."""
        began = db_now(self.db)
        dev_stack.stop_gateway(self.stack)
        time.sleep(1.5)
        dev_stack.start_gateway(self.stack)
        up = db_now(self.db)
        self.outages.append(Outage("gateway", began, up))
        live = [w for w in self.workers if w is not self.frozen and w.alive()]
        deadline = time.monotonic() + 60
        back: dict[str, datetime] = {}
        while time.monotonic() < deadline and len(back) < len(live):
            for w in live:
                connected = [at for at, e in w.logged("realtime_status", up) if e["connected"]]
                if connected and w.id not in back:
                    back[w.id] = connected[0]
            time.sleep(0.2)
        slowest = max(((at - up).total_seconds() for at in back.values()), default=None)
        if slowest is not None and len(back) == len(live):
            self.realtime_back_s.append(round(slowest, 2))
        self._note(f"gateway (Realtime) restarted; all subscriptions back after {slowest}s")

    def registered(self) -> list[Worker]:
        """Live workers whose registration is done (a fresh process imports for a second)."""
        rows = self.db.execute(
            "select worker_id from public.vps_workers where worker_id = any(%s)"
            " and status = 'active' and started_at > now() - interval '10 minutes'"
            " and last_heartbeat > now() - interval '2 seconds'",
            ([w.id for w in self.workers],),
        ).fetchall()
        ids = {str(r[0]) for r in rows}
        return [w for w in self.workers if w.id in ids and w.alive() and w is not self.frozen]

    def registered_soon(self, timeout: float = 60) -> list[Worker]:
        """`registered()`, waiting for one at least: on a loaded machine a fresh worker
        process took over 20 s to import and register, and right after a PostgREST restart
        and a kill no live worker may have beaten in the last 2 s yet."""
        deadline = time.monotonic() + timeout
        while not (workers := self.registered()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert workers, f"no worker registered and beating within {timeout:g}s"
        return workers

    def pause_one(self) -> None:
        self.resume_if_due(force=True)
        worker = self.rng.choice(self.registered_soon())
        self.db.execute("select public.set_worker_status(%s, 'paused')", (worker.id,))
        paused_at = db_now(self.db)
        self.pauses.append((worker.id, paused_at, None))
        self.paused, self.resume_at = worker, time.monotonic() + 4.0
        deadline = time.monotonic() + 10
        obeyed = None
        while time.monotonic() < deadline and obeyed is None:
            seen = worker.logged("worker_paused", paused_at - timedelta(seconds=1))
            if seen:
                obeyed = round((seen[0][0] - paused_at).total_seconds(), 2)
                self.pause_obeyed_s.append(obeyed)
            time.sleep(0.05)
        self._note(f"paused {worker.id} (the worker knew after {obeyed}s)")

    def resume_if_due(self, force: bool = False) -> None:
        if self.paused is None or (time.monotonic() < self.resume_at and not force):
            return
        self.db.execute("select public.set_worker_status(%s, 'active')", (self.paused.id,))
        worker_id, began, _ = self.pauses[-1]
        self.pauses[-1] = (worker_id, began, db_now(self.db))
        self._note(f"resumed {self.paused.id}")
        self.paused = None

    def freeze_one(self) -> None:
        """SIGSTOP the busiest worker for longer than the horizon: its jobs are rescued and
        run elsewhere while it still holds them; after SIGCONT its late outcomes must be
        fenced out."""
        self.thaw_if_due(force=True)
        busy = {
            str(r[0]): int(str(r[1]))
            for r in self.db.execute(
                "select worker_id, current_jobs from public.vps_workers where worker_id = any(%s)",
                ([w.id for w in self.workers],),
            ).fetchall()
        }
        candidates = [w for w in self.registered_soon() if w is not self.paused]
        worker = max(candidates, key=lambda w: busy.get(w.id, 0))
        worker.process.proc.send_signal(signal.SIGSTOP)
        self.freezes.append((worker.id, db_now(self.db), None))
        self.frozen, self.thaw_at = worker, time.monotonic() + self.horizon + 3
        self._note(f"SIGSTOP {worker.id} ({busy.get(worker.id, 0)} jobs)")

    def thaw_if_due(self, force: bool = False) -> None:
        if self.frozen is None or (time.monotonic() < self.thaw_at and not force):
            return
        self.frozen.process.proc.send_signal(signal.SIGCONT)
        worker_id, began, _ = self.freezes[-1]
        self.freezes[-1] = (worker_id, began, db_now(self.db))
        self._note(f"SIGCONT {self.frozen.id}")
        self.thawed, self.spare_thawed_until = self.frozen, time.monotonic() + 6
        self.frozen = None

    def keep_thawed_log_if_due(self, force: bool = False) -> None:
        if self.thawed is None or (time.monotonic() < self.spare_thawed_until and not force):
            return
        self.thawed_logs.append(self.thawed.process.output())
        self.thawed = None

    def cancel_jobs(self) -> None:
        """Cancel running jobs (8 long ones enqueued now at top priority, cancelled once some
        run) and 10 pending ones of the main batch."""
        rows = self.db.execute(
            """
            with docs as (
              insert into public.user_documents (user_id, name, content)
              select %s, 'chaos-long-' || g, 'x' from generate_series(1, 8) g returning id
            )
            select (public.enqueue_job(d.id, 100, '{"mode": "sleep", "seconds": 8}'::jsonb,
                                       %s, 10)).id
            from docs d
            """,
            (self.user_id, self.queue),
        ).fetchall()
        long_jobs = [uuid.UUID(str(r[0])) for r in rows]
        self.long_jobs += long_jobs
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            row = self.db.execute(
                "select count(*) from public.processing_queue where id = any(%s)"
                " and status = 'processing'",
                (long_jobs,),
            ).fetchone()
            if row is not None and int(str(row[0])) >= 3:
                break
            time.sleep(0.1)
        for job_id in long_jobs:
            row = self.cancel(job_id)
            if row == ("processing", True):
                self.cancelled_running.append(job_id)
            else:
                self.cancelled_other.append(job_id)
        pending = self.db.execute(
            "select id from public.processing_queue where queue = %s and status = 'pending'"
            " and not (id = any(%s)) order by random() limit 10",
            (self.queue, self.long_jobs + self.requeued),
        ).fetchall()
        for row in pending:
            self.cancel(uuid.UUID(str(row[0])))
            self.cancelled_other.append(uuid.UUID(str(row[0])))
        self._note(
            f"cancelled {len(self.cancelled_running)} running, {len(self.cancelled_other)} other"
        )

    def cancel(self, job_id: uuid.UUID) -> tuple[object, ...] | None:
        """cancel_job as a client should call it: a pending job claimed between cancel_job's
        first look and its row lock is PT409 "changed hands while being cancelled", whose
        hint says to call again (it cannot take the new owner's lock while holding the
        job's, the lock order being worker first)."""
        for _ in range(5):
            try:
                return self.db.execute(
                    "select status, cancel_requested from public.cancel_job(%s)", (job_id,)
                ).fetchone()
            except psycopg.Error as exc:
                if exc.sqlstate != "PT409":
                    raise
                self.cancel_conflicts += 1
        raise AssertionError(f"cancel_job({job_id}) conflicted five times in a row")

    def requeue_finished(self) -> None:
        """Re-enqueue 10 finished documents: each runs again as a new cycle."""
        done = self.db.execute(
            "select id, user_document_id from public.processing_queue"
            " where queue = %s and status = 'completed' and not (id = any(%s)) limit 10",
            (self.queue, self.long_jobs + self.requeued),
        ).fetchall()
        for job_id, document_id in done:
            self.db.execute(
                'select public.enqueue_job(%s, 0, \'{"mode": "ok"}\'::jsonb, %s, 10)',
                (document_id, self.queue),
            )
            self.requeued.append(uuid.UUID(str(job_id)))
        self._note(f"re-enqueued {len(self.requeued)} finished documents")

    # -- a check that runs during the damage -----------------------------------------------
    def check_current_jobs(self) -> None:
        """`current_jobs` changes in the same transaction as the job rows it counts, so any
        one snapshot must agree with the rows, even mid-chaos."""
        mismatched = self.db.execute(
            "select w.worker_id, w.current_jobs, (select count(*) from public.processing_queue q"
            "  where q.assigned_to = w.worker_id and q.status in ('assigned', 'processing'))"
            " from public.vps_workers w where w.worker_id = any(%s) and w.current_jobs <>"
            " (select count(*) from public.processing_queue q where q.assigned_to = w.worker_id"
            "  and q.status in ('assigned', 'processing'))",
            (list(self.ever),),
        ).fetchall()
        self.current_jobs_checks += 1
        self.current_jobs_mismatches.extend(mismatched)

    # -- the run --------------------------------------------------------------------------
    def run(self, max_seconds: float, kill_every: tuple[float, float]) -> None:
        """Kill a worker every few seconds and do one other kind of damage per step, until
        every kind was done and the backlog is gone (or max_seconds passed). A long run
        (more jobs) goes through the kinds of damage again, round after round."""
        every_kind: list[Callable[[], None]] = [
            self.restart_postgrest,
            self.pause_one,
            self.cancel_jobs,
            self.requeue_finished,
            self.restart_postgres,
            self.freeze_one,
            self.restart_gateway,
        ]
        actions = list(every_kind)
        began = time.monotonic()
        step = 0
        try:
            while True:
                time.sleep(self.rng.uniform(*kill_every))
                step += 1
                self.kill_one()
                self.resume_if_due()
                self.thaw_if_due()
                if step >= 2 and actions:
                    actions.pop(0)()
                elif step >= 2 and time.monotonic() - began < max_seconds - 60:
                    actions = list(every_kind) if self.backlog() > 500 else []
                self.check_current_jobs()
                watching = (self.paused, self.frozen, self.thawed)
                settled = not actions and watching == (None, None, None)
                if settled and (self.backlog() == 0 or time.monotonic() - began > max_seconds):
                    break
        finally:
            self.repair()

    def repair(self) -> None:
        """Whatever happened, leave the stack whole and no worker stopped or paused."""
        if not postgres.is_running(self.stack):
            postgres.start(self.stack)
        if self.db.closed:
            self.db = psycopg.connect(self.stack.admin_db_url, autocommit=True)
        dev_stack.start_postgrest(self.stack)
        dev_stack.start_gateway(self.stack)
        self.thaw_if_due(force=True)
        self.keep_thawed_log_if_due(force=True)
        self.resume_if_due(force=True)
