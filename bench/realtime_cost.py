"""What supaworker costs a hosted project's Realtime quota, and its WAL (issue 20).

    .venv/bin/python bench/realtime_cost.py [--jobs N] [--workers 1,8,32,64] \
        [--idle-seconds S] [--out FILE] [--today FILE]

For each fleet size W: W idle workers with Realtime on (bench/_multi_worker.py, 16 `Worker`
objects per process), one owner following their jobs as a frontend would, then a burst of N
jobs enqueued in one statement; the run ends when every job is completed. Counted:
- messages: the local Realtime's `realtime_messages_sent_total` (GET /realtime/v1/metrics,
  what hosted bills: each delivery to each client) before and after; the owner's share is
  what its client received, the workers' share the rest;
- WAL: `pg_current_wal_lsn()` before the burst, after the enqueue, after the last completion.
Then W idle workers for `--idle-seconds`: messages per idle worker-hour (heartbeats every 5 s).

The owner follows jobs the way the schema offers: Broadcast on the private topic
jobs:<user_id> when the database has it (migration 0023_status_topics), else postgres_changes on
processing_queue filtered by user_id (what the examples did before). The same script runs in
an old checkout for the "before" figures (--out there, --today here renders both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
from realtime import AsyncRealtimeClient

from bench._common import PYTHON, ROOT, admin, ensure_stack, reset_queue, stop_all, worker_env
from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig

PER_PROCESS = 16
PRO_LIMIT = 500  # messages per second, hosted Pro


def metric(config: StackConfig, name: str) -> float:
    request = urllib.request.Request(
        config.api_url.rstrip("/") + "/realtime/v1/metrics",
        headers={"apikey": config.service_role_key},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


def sent(config: StackConfig) -> float:
    return metric(config, "realtime_messages_sent_total")


def lsn(config: StackConfig) -> int:
    with admin(config) as conn:
        row = conn.execute("select pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def has_topics(config: StackConfig) -> bool:
    with admin(config) as conn:
        row = conn.execute(
            "select to_regproc('supaworker_private.broadcast_job_changes') is not null"
        ).fetchone()
    return bool(row and row[0])


class Owner:
    """The user whose documents the burst is about, following their jobs live."""

    def __init__(self, config: StackConfig, user_id: uuid.UUID, token: str) -> None:
        self.config, self.user_id, self.token = config, user_id, token
        self.received = 0
        self.client: AsyncRealtimeClient | None = None

    async def start(self) -> None:
        url = self.config.api_url.rstrip("/") + "/realtime/v1"
        self.client = AsyncRealtimeClient(url, token=self.config.anon_key, auto_reconnect=False)
        await self.client.connect()
        await self.client.set_auth(self.token)
        joined = asyncio.Event()

        def count(_payload: Any) -> None:
            self.received += 1

        if has_topics(self.config):
            channel = self.client.channel(
                f"jobs:{self.user_id}",
                {
                    "config": {
                        "broadcast": {"ack": False, "self": False},
                        "presence": {"key": "", "enabled": False},
                        "private": True,
                    }
                },
            )
            channel.on_broadcast("job", count)
            await channel.subscribe(lambda state, _e: joined.set())
        else:
            from realtime.types import RealtimePostgresChangesListenEvent as Event

            channel = self.client.channel(f"owner-{self.user_id}")
            channel.on_postgres_changes(
                Event.All, count, table="processing_queue", filter=f"user_id=eq.{self.user_id}"
            )

            def on_system(payload: Any) -> None:
                if getattr(payload, "extension", None) == "postgres_changes":
                    joined.set()

            channel.on_system(on_system)
            await channel.subscribe()
        await asyncio.wait_for(joined.wait(), 10)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()


def start_fleet(config: StackConfig, count: int, queue: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for p in range(math.ceil(count / PER_PROCESS)):
        n = min(PER_PROCESS, count - p * PER_PROCESS)
        procs.append(
            subprocess.Popen(
                [
                    PYTHON, "-m", "bench._multi_worker", "--count", str(n),
                    "--prefix", f"{queue}-p{p}", "--queue", queue, "--realtime",
                    "--poll-interval", "30",
                ],
                cwd=ROOT,
                env=worker_env(config),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    return procs


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def registered(config: StackConfig, queue: str) -> int:
    with admin(config) as conn:
        row = conn.execute(
            "select count(*) from public.vps_workers where worker_id like %s and status = 'active'",
            (f"{queue}-%",),
        ).fetchone()
    return int(row[0]) if row else 0


def completed(config: StackConfig, queue: str) -> int:
    with admin(config) as conn:
        row = conn.execute(
            "select count(*) from public.processing_queue"
            " where queue = %s and status = 'completed'",
            (queue,),
        ).fetchone()
    return int(row[0]) if row else 0


def burst(
    config: StackConfig, workers: int, jobs: int, owner: tuple[uuid.UUID, str]
) -> dict[str, Any]:
    queue = f"rc-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        reset_queue(conn)
    procs = start_fleet(config, workers, queue)
    try:
        wait_for(lambda: registered(config, queue) == workers, 120, "workers registering")
        time.sleep(5)  # every worker joined its Realtime channel and made its first claim
        follower = Owner(config, *owner)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(follower.start())
        m0, w0, h0 = sent(config), lsn(config), metric(config, "realtime_limit_hits_total")
        with admin(config) as conn:
            conn.execute(
                "with d as (insert into public.user_documents (user_id, name) "
                "  select %s, 'bench' from generate_series(1, %s) returning id, user_id) "
                "insert into public.processing_queue (user_document_id, user_id, queue) "
                "select id, user_id, %s from d",
                (owner[0], jobs, queue),
            )
        w1 = lsn(config)
        t0 = time.monotonic()

        async def until_done() -> float:
            while completed(config, queue) < jobs:
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - t0
            # Then until the deliveries stop (a backlog of messages drains after the work).
            last = -1.0
            while (now := sent(config)) != last:
                last = now
                await asyncio.sleep(1.5)
            return elapsed

        elapsed = loop.run_until_complete(until_done())
        w2, m1 = lsn(config), sent(config)
        hits = metric(config, "realtime_limit_hits_total") - h0
        owner_msgs = follower.received
        loop.run_until_complete(follower.stop())
        loop.close()
    finally:
        stop_all(procs)
    total = m1 - m0
    return {
        "workers": workers,
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "messages_per_second": round((m1 - m0) / max(elapsed, 0.01)),
        "limit_hits": int(hits),
        "to_workers_per_job": round((total - owner_msgs) / jobs, 3),
        "to_owner_per_job": round(owner_msgs / jobs, 3),
        "wal_enqueue_per_job": round((w1 - w0) / jobs),
        "wal_process_per_job": round((w2 - w1) / jobs),
    }


def idle(config: StackConfig, workers: int, seconds: float) -> dict[str, Any]:
    queue = f"rc-idle-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        reset_queue(conn)
    procs = start_fleet(config, workers, queue)
    try:
        wait_for(lambda: registered(config, queue) == workers, 120, "workers registering")
        time.sleep(5)
        m0 = sent(config)
        time.sleep(seconds)
        m1 = sent(config)
    finally:
        stop_all(procs)
    return {
        "workers": workers,
        "seconds": seconds,
        "per_worker_hour": round((m1 - m0) / workers * 3600 / seconds),
    }


def largest_burst(row: dict[str, Any]) -> int:
    """Jobs that can arrive within one second with 10 workers and stay under Pro's 500
    messages/s, counting every message the burst causes as sent in that second (a bound)."""
    per_job = row["to_workers_per_job"] + row["to_owner_per_job"]
    return int(PRO_LIMIT // per_job) if per_job > 0 else 0


def render(now: dict[str, Any], today: dict[str, Any] | None) -> str:
    def pair(key: str, w: int, field: str) -> str:
        def one(data: dict[str, Any] | None) -> str:
            if data is None:
                return "-"
            rows = [r for r in data[key] if r["workers"] == w]
            return str(rows[0][field]) if rows else "-"

        return f"{one(today)} → {one(now)}"

    lines = [
        f"Burst of {now['jobs']} no-op jobs enqueued in one statement, W idle workers "
        "(Realtime on, 16 `Worker` objects per process), one owner following their jobs. "
        "Each cell: before (main at 1bc8227: postgres_changes) → now (Broadcast topics).",
        "",
        "| workers | to workers / job | to the owner / job | WAL bytes / job (enqueue) "
        "| WAL bytes / job (processing) | seconds (burst enqueued -> last completed) "
        "| messages/s over the burst |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in now["bursts"]:
        w = row["workers"]
        lines.append(
            f"| {w} | {pair('bursts', w, 'to_workers_per_job')} "
            f"| {pair('bursts', w, 'to_owner_per_job')} "
            f"| {pair('bursts', w, 'wal_enqueue_per_job')} "
            f"| {pair('bursts', w, 'wal_process_per_job')} | {pair('bursts', w, 'seconds')} "
            f"| {pair('bursts', w, 'messages_per_second')} |"
        )
    lines += ["", "| idle workers | messages per idle worker-hour (before → now) |", "|---|---|"]
    for row in now["idle"]:
        lines.append(f"| {row['workers']} | {pair('idle', row['workers'], 'per_worker_hour')} |")
    ten_now = [r for r in now["bursts"] if r["workers"] == 10]
    ten_today = [r for r in (today or {}).get("bursts", []) if r["workers"] == 10]
    if ten_now:
        before = ten_today[0] if ten_today else None

        def workers_only(row: dict[str, Any] | None) -> str:
            if row is None:
                return "-"
            per_job = row["to_workers_per_job"]
            return str(int(PRO_LIMIT // per_job)) if per_job >= 0.1 else "no limit from workers"

        lines += [
            "",
            f"Largest burst of uploads arriving within one second that stays under Pro's "
            f"{PRO_LIMIT} messages/s with 10 workers, counting every message the burst causes "
            f"as sent in that second (a bound): workers' messages only, today "
            f"{workers_only(before)}, now {workers_only(ten_now[0])}; with the owner "
            f"following every job as well, today {largest_burst(before) if before else '-'}, "
            f"now {largest_burst(ten_now[0])}.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", default="1,8,10,32,64")
    parser.add_argument("--idle-workers", default="8")
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    parser.add_argument("--today", type=Path, help="figures of the old checkout, to compare")
    parser.add_argument("--render", type=Path, help="figures of this tree (JSON): only render")
    a = parser.parse_args()
    if a.render:
        write(json.loads(a.render.read_text()), json.loads(a.today.read_text()))
        return
    config = ensure_stack()
    plan = os.environ.get("SUPAWORKER_REALTIME_PLAN", "pro")
    if config.realtime_plan != plan:  # e.g. "off": count what would be sent, uncapped
        config.realtime_plan = plan
        config.save()
        dev_stack.stop_gateway(config)
        dev_stack.start_gateway(config)
    owner = dev_stack.create_user(config, "bench-owner@supaworker.invalid")
    data: dict[str, Any] = {"jobs": a.jobs, "bursts": [], "idle": []}
    for w in (int(x) for x in a.workers.split(",")):
        data["bursts"].append(burst(config, w, a.jobs, owner))
        print(json.dumps(data["bursts"][-1]), file=sys.stderr)
    for w in (int(x) for x in a.idle_workers.split(",")):
        data["idle"].append(idle(config, w, a.idle_seconds))
        print(json.dumps(data["idle"][-1]), file=sys.stderr)
    if a.out:
        a.out.write_text(json.dumps(data, indent=2) + "\n")
    today = json.loads(a.today.read_text()) if a.today else None
    if today is not None:
        write(data, today)
    print(render(data, today))


def write(data: dict[str, Any], today: dict[str, Any]) -> None:
    from bench import _report

    _report.save_results("realtime_cost", {"now": data, "today": today})
    _report.write_section(
        "realtime_cost", "Realtime messages and WAL per job (issue 20)", render(data, today)
    )


if __name__ == "__main__":
    os.environ.setdefault("SUPAWORKER_PROJECT_DIR", str(ROOT))
    main()
