"""Steady offered load and measuring tools for the fault tests (tests/chaos/test_faults*.py):
a producer enqueueing at a fixed rate, a probe timing one RPC through the gateway as a worker
sends it, and readings of pickup latency and throughput from the database's own records."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from supaworker_local.config import StackConfig
from tests.chaos.harness import Db
from tests.conftest import StackUser


class Producer:
    """Enqueues `rate` short jobs per second (each a new document) from its own connection,
    as an API server would, until stopped. Enqueue goes straight to SQL: the fault under
    test is the workers' path, not the producer's."""

    def __init__(
        self, stack: StackConfig, user_id: uuid.UUID, queue: str, rate: float, seconds: float
    ) -> None:
        self.stack, self.user_id, self.queue = stack, user_id, queue
        self.rate, self.seconds = rate, seconds
        self.enqueued = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with psycopg.connect(self.stack.admin_db_url, autocommit=True) as db:
            began = time.monotonic()
            while not self._stop.is_set():
                due = began + self.enqueued / self.rate
                if due > time.monotonic():
                    self._stop.wait(due - time.monotonic())
                    continue
                try:
                    db.execute(
                        "with d as (insert into public.user_documents (user_id, name, content)"
                        " values (%s, 'load', 'x') returning id)"
                        " select public.enqueue_job(d.id, 0, jsonb_build_object('mode', 'sleep',"
                        " 'seconds', %s), %s, 10) from d",
                        (self.user_id, self.seconds, self.queue),
                    )
                    self.enqueued += 1
                except psycopg.Error as exc:  # pragma: no cover - reported by the test
                    self.errors.append(str(exc))
                    return


@dataclass
class Probe:
    """Calls `heartbeat_worker` for a registered worker id through the gateway every
    `every` seconds, with the service key: the very request a worker's heartbeat is."""

    stack: StackConfig
    worker_id: str
    every: float = 0.25
    timeout: float = 30.0
    calls: list[tuple[float, float, str]] = field(default_factory=list)  # (t, latency, outcome)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Probe:
        with httpx.Client(timeout=10) as http:
            self._rpc(http, "register_worker", {"p_worker_id": self.worker_id})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
        with httpx.Client(timeout=10) as http:
            self._rpc(http, "deregister_worker", {"p_worker_id": self.worker_id})

    def _rpc(self, http: httpx.Client, function: str, body: dict[str, Any]) -> httpx.Response:
        key = self.stack.service_role_key
        return http.post(
            f"{self.stack.api_url}/rest/v1/rpc/{function}",
            json=body,
            headers={"apikey": key, "Authorization": f"Bearer {key}"},
        )

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as http:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    answer = self._rpc(http, "heartbeat_worker", {"p_worker_id": self.worker_id})
                    outcome = "ok" if answer.status_code == 200 else _code(answer)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.calls.append((began, time.monotonic() - began, outcome))
                self._stop.wait(max(0.0, self.every - (time.monotonic() - began)))

    def between(self, a: float, b: float) -> list[tuple[float, float, str]]:
        return [c for c in self.calls if a <= c[0] < b]


def _code(answer: httpx.Response) -> str:
    try:
        return f"{answer.status_code} {answer.json().get('code')}"
    except ValueError:
        return str(answer.status_code)


def pickups(db: Db, queue: str, since: datetime, until: datetime) -> list[float]:
    """Seconds from enqueue to the first claim, for jobs enqueued in [since, until). (A
    claim that starts its jobs at once, as complete_and_claim does, logs 'started' alone.)"""
    rows = db.execute(
        "select extract(epoch from min(a.created_at) - q.created_at)"
        " from public.processing_queue q join public.job_events a"
        "   on a.job_id = q.id and a.event in ('assigned', 'started')"
        " where q.queue = %s and q.created_at >= %s and q.created_at < %s group by q.id",
        (queue, since, until),
    ).fetchall()
    return [float(str(r[0])) for r in rows]


def completed_between(db: Db, queue: str, since: datetime, until: datetime) -> int:
    row = db.execute(
        "select count(*) from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'completed'"
        " and e.created_at >= %s and e.created_at < %s",
        (queue, since, until),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def unfinished(db: Db, queue: str) -> int:
    row = db.execute(
        "select count(*) from public.processing_queue where queue = %s"
        " and status not in ('completed', 'failed', 'cancelled')",
        (queue,),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def ms(values: list[float]) -> dict[str, float | int | None]:
    """n, median, p90, p99 and max of durations in seconds, given in milliseconds."""
    if not values:
        return {"n": 0, "median_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)

    return {
        "n": len(ordered),
        "median_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def record(stack: StackConfig, test: str, figures: dict[str, Any]) -> None:
    """Print the figures and append them to <state dir>/chaos-runs.jsonl, as test_chaos does."""
    print(f"{test} figures:", json.dumps(figures, indent=2, default=str))
    with open(Path(stack.state_dir) / "chaos-runs.jsonl", "a") as f:
        f.write(json.dumps({"test": test, **figures}, default=str) + "\n")


class Readers:
    """`n` users' clients, each calling the slow read (tests/chaos/conftest.py `slow_read`,
    `seconds` long) back to back until stopped."""

    def __init__(
        self, url: str, stack: StackConfig, user: StackUser, n: int, seconds: float = 2.0
    ) -> None:
        self.url, self.n, self.seconds = url, n, seconds
        self.headers = {"apikey": stack.anon_key, "Authorization": f"Bearer {user.token}"}
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                try:
                    answer = http.post(
                        self.url, json={"seconds": self.seconds}, headers=self.headers
                    )
                    self.outcomes[str(answer.status_code)] += 1
                except httpx.HTTPError as exc:
                    self.outcomes[type(exc).__name__] += 1
