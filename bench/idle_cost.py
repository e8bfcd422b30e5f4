"""What idle workers cost: requests per second and database connections, 1 to 64 workers.

    .venv/bin/python bench/idle_cost.py [--full] [--window SECONDS]

Idle supaworker workers on an empty queue, heartbeat every 5 s, in two modes: polling only
(`--no-realtime`, a claim every 5 s) and Realtime wake-up (the default: a websocket to the
Realtime endpoint, and a safety claim every 30 s). Requests are counted in the database:
every worker request is one RPC, i.e. one call of a queue function, and `track_functions =
'all'` (set on the database by the bench) makes Postgres count them in
`pg_stat_user_functions`. Connections are sampled every second from `pg_stat_activity`
(client backends of the `postgres` database, by role). PostgREST holds at most its pool (db-
pool = 10, as on Supabase's smaller plans) plus one connection for its LISTEN channel
(schema reloads).

1, 4 and 16 workers are separate `supaworker run` processes. 64 workers are 4 processes of
16 `Worker` objects each (bench/_multi_worker.py: same code, own HTTP client and worker id
each, but one event loop per 16), to keep 64 Python interpreters off a 2-core machine.

For contrast, idle procrastinate workers (its defaults: LISTEN/NOTIFY, 5 s polling, a
psycopg pool) connect to their own database directly; their connections are counted the
same way for 1, 4 and 16 processes.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import uuid
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)

from bench import _report
from bench._common import (
    PYTHON,
    ROOT,
    CpuTimeline,
    admin,
    ensure_stack,
    fmt,
    function_calls,
    machine,
    reset_queue,
    start_workers,
    stop_all,
    table,
    worker_env,
)
from supaworker_local.config import StackConfig

PER_PROCESS = 16
SETTLE = 11.0


def connections(config: StackConfig, dbname: str) -> dict[str, int]:
    with admin(config) as conn:
        rows = conn.execute(
            "select usename, count(*) from pg_stat_activity where datname = %s "
            "and backend_type = 'client backend' and pid <> pg_backend_pid() group by usename",
            (dbname,),
        ).fetchall()
    return {str(user): int(n) for user, n in rows}


def wait_registered(config: StackConfig, prefix: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with admin(config) as conn:
            row = conn.execute(
                "select count(*) from public.vps_workers where worker_id like %s "
                "and status = 'active'",
                (prefix + "%",),
            ).fetchone()
        if row and row[0] >= count:
            return True
        time.sleep(0.5)
    return False


def supaworker_idle(
    config: StackConfig, count: int, window: float, realtime: bool
) -> dict[str, Any]:
    queue = f"idle-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        reset_queue(conn)
    env = worker_env(config)
    if count <= PER_PROCESS:
        procs = start_workers(
            config,
            count,
            "--queue",
            queue,
            "--realtime" if realtime else "--no-realtime",
            prefix=queue,
            env=env,
        )
        how = f"{count} process{'es' if count > 1 else ''}"
    else:
        procs = [
            subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "bench._multi_worker",
                    "--count",
                    str(PER_PROCESS),
                    "--prefix",
                    f"{queue}-{p}",
                    "--queue",
                    queue,
                    *(["--realtime"] if realtime else []),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for p in range(count // PER_PROCESS)
        ]
        how = f"{count // PER_PROCESS} processes x {PER_PROCESS} Worker objects"
    try:
        if not wait_registered(config, queue, count, timeout=120):
            raise RuntimeError(f"{count} workers did not register")
        # Past the start-up burst, and past Postgres' stats flush delay: a backend reports
        # its function counts when idle, at most every 1 s and at the latest after 10 s.
        time.sleep(SETTLE)
        with CpuTimeline(config, interval=0.5) as cpu:
            for proc in procs:
                cpu.track("worker", proc.pid)
            cpu.sample()
            with admin(config) as conn:
                before = function_calls(conn)
            began = time.time()
            samples = []
            while time.time() - began < window:
                samples.append(connections(config, "postgres"))
                time.sleep(1.0)
            with admin(config) as conn:
                after = function_calls(conn)
            elapsed = time.time() - began
        calls = {k: v - before.get(k, 0) for k, v in after.items()}
        used = cpu.window(began, began + elapsed)
    finally:
        stop_all(procs)
    total = sum(calls.values())
    return {
        "workers": count,
        "how": how,
        "mode": "realtime" if realtime else "polling",
        "seconds": round(elapsed, 1),
        "requests_per_s": total / elapsed,
        "per_worker_per_s": total / elapsed / count,
        "calls": {k: v for k, v in sorted(calls.items()) if v},
        "db_connections": max(sum(s.values()) for s in samples),
        "authenticator_connections": max(s.get("authenticator", 0) for s in samples),
        "worker_cpu_pct_per_worker": used.get("worker", 0.0) / elapsed / count * 100,
        "stack_cpu_pct": sum(v for k, v in used.items() if k != "worker") / elapsed * 100,
    }


def procrastinate_idle(config: StackConfig, count: int) -> dict[str, Any]:
    from bench.throughput import prepare_procrastinate, procrastinate_dsn

    prepare_procrastinate(config)
    dsn = procrastinate_dsn(config)
    procs = [
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.peers",
                "procrastinate-idle",
                "--dsn",
                dsn,
                "--queue",
                f"idle-{uuid.uuid4().hex[:6]}",
                "--seconds",
                "60",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        time.sleep(4.0 + count * 0.6)  # start-up (imports) on 2 cores
        peak = 0
        for _ in range(5):
            peak = max(peak, sum(connections(config, "bench_procrastinate").values()))
            time.sleep(1.0)
    finally:
        stop_all(procs)
    return {"workers": count, "db_connections": peak}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="longer windows")
    parser.add_argument("--window", type=float, default=None, help="seconds counted per size")
    parser.add_argument("--no-peers", action="store_true", help="skip procrastinate")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    window = args.window or (60.0 if args.full else 15.0)
    config = ensure_stack()
    print(f"machine: {machine()}\n")
    rows = []
    for realtime in (False, True):
        # Realtime's figures are flat too; the default run checks the ends only.
        for count in (1, 4, 16, 64) if args.full or not realtime else (1, 64):
            row = supaworker_idle(config, count, window, realtime)
            rows.append(row)
            print(
                f"  {row['mode']:8} {count:3d} idle workers ({row['how']}): "
                f"{row['requests_per_s']:.2f} req/s, {row['per_worker_per_s']:.3f} per worker, "
                f"{row['db_connections']} DB connections "
                f"({row['authenticator_connections']} PostgREST)",
                flush=True,
            )
    peers = [] if args.no_peers else [procrastinate_idle(config, n) for n in (1, 4, 16)]
    for p in peers:
        print(
            f"  procrastinate {p['workers']:3d} idle workers: {p['db_connections']} DB connections",
            flush=True,
        )
    peer_conns = {p["workers"]: p["db_connections"] for p in peers}
    text = table(
        [
            "wake-up",
            "idle workers",
            "how",
            "RPC/s (all)",
            "RPC/s per worker",
            "by function",
            "DB connections (peak)",
            "of which PostgREST",
            "worker CPU % of a core, each",
            "procrastinate: DB connections",
        ],
        [
            [
                r["mode"],
                str(r["workers"]),
                r["how"],
                fmt(r["requests_per_s"], 1),
                fmt(r["per_worker_per_s"], 3),
                ", ".join(f"{k} {v}" for k, v in r["calls"].items()),
                str(r["db_connections"]),
                str(r["authenticator_connections"]),
                fmt(r["worker_cpu_pct_per_worker"], 2),
                str(peer_conns.get(r["workers"], "not run")) if r["mode"] == "polling" else "",
            ]
            for r in rows
        ],
    )
    print("\n" + text)
    if args.no_write:
        return
    _report.save_results(
        "idle_cost", {"machine": machine(), "window": window, "rows": rows, "procrastinate": peers}
    )
    body = (
        f"Machine: {machine()}.\n\n{window:.0f} s counted per size, after start-up. "
        f"Function calls are counted over the window (`pg_stat_user_functions`); "
        f"connections are the peak of 1 s samples of `pg_stat_activity`.\n\n{text}\n"
    )
    _report.write_section("idle_cost", "Idle cost", body)
    from bench import plot

    plot.render()


if __name__ == "__main__":
    main()
