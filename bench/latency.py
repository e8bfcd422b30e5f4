"""Enqueue -> start latency for an idle worker: polling only versus Realtime wake-up.

    .venv/bin/python bench/latency.py [--full] [--samples N]

One `supaworker run` (concurrency 1, no-op handler) idles on its own queue; jobs are
enqueued one at a time through the `enqueue_job` RPC (as an API server does), each after a
random pause so the enqueue falls at a random point of the worker's poll cycle, and only
once the previous job has started (the worker is idle every time).

  latency         started_at - created_at of the job row (both the database's clock; the
                  worker claims with start, so started_at is the claim statement's time)
  worker share    with Realtime: from the moment the event reached the worker to the
                  worker's `jobs_claimed` log line (the job in hand, its handler about to
                  run): the claim's whole round trip. `supaworker run` does not log the
                  event, so the Realtime mode runs the same Worker and RealtimeWakeup
                  through bench/_latency_worker.py, which adds that log line.
  return path     `jobs_claimed` - started_at: from the claim statement to the job in hand
                  (PostgREST, the gateway and the worker's HTTP client on the way back).

Modes: polling every 5 s and every 0.5 s (`--no-realtime`), and `--realtime` (the worker
reports `realtime_status connected` first; if it does not within 20 s the rows are left
"pending"). With few samples, p99 is close to the maximum: say so when quoting it.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)

from bench import _report
from bench._common import (
    PYTHON,
    ROOT,
    STATE_DIR,
    admin,
    bench_user,
    ensure_stack,
    fmt,
    machine,
    median,
    percentile,
    reset_queue,
    start_workers,
    stop_all,
    table,
    worker_env,
)
from supaworker import QueueClient
from supaworker_local.config import StackConfig

LOG_DIR = STATE_DIR / "bench-logs"


def _log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _wait_for_log(path: Path, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(predicate(e) for e in _log_lines(path)):
            return True
        time.sleep(0.1)
    return False


def measure(config: StackConfig, mode: str, samples: int) -> dict[str, Any]:
    queue = f"lat-{uuid.uuid4().hex[:6]}"
    if mode == "realtime":
        args = ["--realtime"]
        pause = (0.1, 0.6)
    else:
        interval = float(mode.split()[1].rstrip("s"))
        args = ["--no-realtime", "--poll-interval", str(interval)]
        pause = (0.0, interval)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{queue}-w-0.log"
    with admin(config) as conn:
        reset_queue(conn)
        user = bench_user(conn)
    if mode == "realtime":  # `supaworker run --realtime` + a log line per Realtime event
        procs = [
            subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "bench._latency_worker",
                    "--worker-id",
                    f"{queue}-w-0",
                    "--queue",
                    queue,
                ],
                cwd=ROOT,
                env=worker_env(config),
                stdout=subprocess.DEVNULL,
                stderr=log.open("wb"),
            )
        ]
    else:
        procs = start_workers(
            config,
            1,
            "--queue",
            queue,
            "--concurrency",
            "1",
            *args,
            prefix=f"{queue}-w",
            log_dir=LOG_DIR,
        )
    row: dict[str, Any] = {
        "mode": mode,
        "samples": 0,
        "p50": None,
        "p99": None,
        "worker_p50": None,
        "worker_p99": None,
        "status": "ok",
    }
    try:
        if not _wait_for_log(log, lambda e: e.get("action") == "worker_registered", 30):
            row["status"] = "worker did not start"
            return row
        if mode == "realtime" and not _wait_for_log(
            log, lambda e: e.get("action") == "realtime_status" and e.get("connected"), 20
        ):
            row["status"] = "pending: Realtime did not connect"
            return row
        time.sleep(0.5)
        job_ids = []
        with (
            QueueClient.connect(config.api_url, config.service_role_key) as client,
            admin(config) as conn,
        ):
            for _ in range(samples):
                time.sleep(random.uniform(*pause))
                doc = conn.execute(
                    "insert into public.user_documents (user_id, name) "
                    "values (%s, 'latency') returning id",
                    (user,),
                ).fetchone()
                assert doc is not None
                job = client.enqueue(doc[0], queue=queue)
                job_ids.append(job.id)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    started = conn.execute(
                        "select started_at from public.processing_queue where id = %s", (job.id,)
                    ).fetchone()
                    if started and started[0] is not None:
                        break
                    time.sleep(0.02)
            rows = conn.execute(
                "select id, extract(epoch from started_at - created_at), "
                "extract(epoch from started_at) from public.processing_queue "
                "where id = any(%s) and started_at is not null",
                (job_ids,),
            ).fetchall()
    finally:
        stop_all(procs)
    events = _log_lines(log)
    claimed = {
        job_id: datetime.fromisoformat(e["ts"]).timestamp()
        for e in events
        if e.get("action") == "jobs_claimed"
        for job_id in e["job_ids"]
    }
    woken = {
        e["job_id"]: datetime.fromisoformat(e["ts"]).timestamp()
        for e in events
        if e.get("action") == "bench_wake_event"
    }
    latencies = [float(r[1]) for r in rows]
    shares = [claimed[str(r[0])] - float(r[2]) for r in rows if str(r[0]) in claimed]
    event_shares = [
        claimed[str(r[0])] - woken[str(r[0])]
        for r in rows
        if str(r[0]) in woken and str(r[0]) in claimed
    ]
    row.update(
        samples=len(latencies),
        p50=median(latencies),
        p99=percentile(latencies, 99),
        worker_p50=median(shares) if shares else None,
        worker_p99=percentile(shares, 99) if shares else None,
        event_p50=median(event_shares) if event_shares else None,
        event_p99=percentile(event_shares, 99) if event_shares else None,
        all=[round(x, 4) for x in latencies],
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--samples", type=int, default=None, help="per mode (poll 5 s: 1/3)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    base = args.samples or (60 if args.full else 24)
    modes = [("poll 5s", max(4, base // 3)), ("poll 0.5s", base), ("realtime", base)]
    config = ensure_stack()
    print(f"machine: {machine()}\n")
    rows = []
    for mode, samples in modes:
        row = measure(config, mode, samples)
        rows.append(row)
        print(
            f"  {mode:10} {row['status']:32} n={row['samples']:3d} p50={fmt(_ms(row['p50']), 1)} "
            f"ms p99={fmt(_ms(row['p99']), 1)} ms",
            flush=True,
        )
    text = table(
        [
            "mode",
            "samples",
            "enqueue -> start p50",
            "p99 (~max for few samples)",
            "worker: event received -> job in hand, p50 / p99",
            "return path: claim statement -> job in hand, p50 / p99",
            "status",
        ],
        [
            [
                r["mode"],
                str(r["samples"]),
                _ms_text(r["p50"]),
                _ms_text(r["p99"]),
                (
                    f"{_ms_text(r.get('event_p50'))} / {_ms_text(r.get('event_p99'))}"
                    if r["mode"] == "realtime"
                    else "(no event: polling)"
                ),
                f"{_ms_text(r['worker_p50'])} / {_ms_text(r['worker_p99'])}",
                r["status"],
            ]
            for r in rows
        ],
    )
    print("\n" + text)
    if args.no_write:
        return
    _report.save_results("latency", {"machine": machine(), "rows": rows})
    _report.write_section(
        "latency", "Latency (enqueue -> start, idle worker)", f"Machine: {machine()}.\n\n{text}\n"
    )
    from bench import plot

    plot.render()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _ms_text(seconds: float | None) -> str:
    return "pending" if seconds is None else f"{fmt(seconds * 1000, 1)} ms"


if __name__ == "__main__":
    main()
