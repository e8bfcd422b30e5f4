"""Shared plumbing for the benchmarks: the bench stack, seeding, timing and CPU accounting.

The benchmarks run against their own local stack (state dir `.supaworker-bench`, ports db
53422, api 53421, PostgREST 53430) so they never touch a developer's or the tests' stack.
Nothing here asserts a timing: the scripts print figures and ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from supaworker_local import postgres as dev_postgres  # noqa: E402
from supaworker_local import stack as dev_stack  # noqa: E402
from supaworker_local.config import StackConfig  # noqa: E402

STATE_DIR = Path(os.environ.get("SUPAWORKER_BENCH_STATE_DIR", ROOT / ".supaworker-bench"))
PORTS = {
    "db_port": int(os.environ.get("SUPAWORKER_BENCH_DB_PORT", "53422")),
    "api_port": int(os.environ.get("SUPAWORKER_BENCH_API_PORT", "53421")),
    "postgrest_port": int(os.environ.get("SUPAWORKER_BENCH_POSTGREST_PORT", "53430")),
}
PORTS["postgrest_admin_port"] = PORTS["postgrest_port"] + 1
PYTHON = sys.executable
SUPAWORKER = str(Path(PYTHON).with_name("supaworker"))
BENCH_EMAIL = "bench@supaworker.invalid"


# -- the stack ------------------------------------------------------------------------------
def ensure_stack() -> StackConfig:
    """Bring the bench stack up (idempotent) and enable function call counting."""
    os.environ.setdefault("SUPAWORKER_PROJECT_DIR", str(ROOT))
    config = None
    if (STATE_DIR / "stack.json").exists():
        config = StackConfig.load(STATE_DIR)
        if not all(s.healthy for s in dev_stack.status(config)):
            config = None
        else:  # a stack left running by an earlier run: bring its schema up to date
            dev_stack.apply_migrations(config)
    if config is None:  # `supaworker dev up` (applies the migrations)
        config = dev_stack.up(STATE_DIR, **PORTS)
    if config.extra.get("realtime_idle_multiplier") != "1":
        # Issue 8 measures latency with the Realtime endpoint polling at Realtime's own ~100 ms
        # throughout (the dev default backs off to 500 ms while the slot is empty).
        config.extra["realtime_idle_multiplier"] = "1"
        config.save()
        dev_stack.stop_gateway(config)
        dev_stack.start_gateway(config)
    with admin(config) as conn:
        row = conn.execute(
            "select coalesce(array_to_string(setconfig, ','), '') from pg_db_role_setting "
            "where setrole = 0 and setdatabase = (select oid from pg_database "
            "where datname = 'postgres')"
        ).fetchone()
        if row is None or "track_functions=all" not in row[0]:
            # Function call counts (pg_stat_user_functions) for idle_cost.py. A database
            # setting applies to new sessions: restart PostgREST so its pool reconnects.
            conn.execute("alter database postgres set track_functions = 'all'")
            dev_stack.stop_postgrest(config)
            dev_stack.start_postgrest(config)
    return config


def worker_env(config: StackConfig, **extra: str) -> dict[str, str]:
    """What a worker on a VPS has: the API URL and a service key (no database credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPAWORKER_", "SUPABASE_"))}
    env.update(dev_stack.env_vars(config))
    env.update(extra)
    return env


@contextmanager
def admin(config: StackConfig, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
    url = config.admin_db_url.replace("/postgres?", f"/{dbname}?")
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def admin_url(config: StackConfig, dbname: str = "postgres") -> str:
    return config.admin_db_url.replace("/postgres?", f"/{dbname}?")


def bench_user(conn: psycopg.Connection[Any]) -> uuid.UUID:
    row = conn.execute(
        "insert into auth.users (id, aud, role, email) "
        "values (gen_random_uuid(), 'authenticated', 'authenticated', %s) "
        "on conflict (email) do update set email = excluded.email returning id",
        (BENCH_EMAIL,),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def reset_queue(conn: psycopg.Connection[Any]) -> None:
    """Empty the queue (and its bloat) so every round starts from the same state."""
    conn.execute(
        "truncate public.processing_queue, public.job_events, public.job_error_details, "
        "public.vps_workers, public.user_documents cascade"  # cascade: worker_wakeups
    )
    conn.execute("update public.queue_settings set last_rescue_at = null")


def seed_jobs(
    conn: psycopg.Connection[Any], n: int, queue: str, *, status: str = "pending"
) -> None:
    """n jobs (one document each) in one statement, as the queue's own insert would make them.

    status "completed" makes finished rows (for the growth benchmark) without job_events.
    """
    user = bench_user(conn)
    if status == "pending":
        conn.execute(
            "with d as (insert into public.user_documents (user_id, name) "
            "  select %s, 'bench' from generate_series(1, %s) returning id, user_id) "
            "insert into public.processing_queue (user_document_id, user_id, queue) "
            "select id, user_id, %s from d",
            (user, n, queue),
        )
        return
    conn.execute(
        "with d as (insert into public.user_documents (user_id, name) "
        "  select %s, 'bench' from generate_series(1, %s) returning id, user_id) "
        "insert into public.processing_queue (user_document_id, user_id, queue, status, "
        "  attempt, assigned_to, assigned_at, started_at, completed_at, progress_percent) "
        "select id, user_id, %s, %s, 1, 'bench-history', now() - interval '2 days', "
        "  now() - interval '2 days', now() - interval '2 days', 100 from d",
        (user, n, queue, status),
    )


def finished_window(conn: psycopg.Connection[Any], queue: str) -> tuple[int, float, float]:
    """(completed jobs, epoch of the first claim, epoch of the last completion) of a queue."""
    row = conn.execute(
        "select count(*) filter (where status = 'completed'), "
        "extract(epoch from min(assigned_at)), extract(epoch from max(completed_at)) "
        "from public.processing_queue where queue = %s",
        (queue,),
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0), float(row[2] or 0.0)


def function_calls(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Calls of every public function since the statistics were last reset."""
    rows = conn.execute(
        "select funcname, calls from pg_stat_user_functions where schemaname = 'public'"
    ).fetchall()
    return {str(name): int(calls) for name, calls in rows}


# -- worker processes -----------------------------------------------------------------------
def start_workers(
    config: StackConfig,
    count: int,
    *args: str,
    prefix: str,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(count):
        wid = f"{prefix}-{i}"
        out: Any = subprocess.DEVNULL
        if log_dir is not None:
            out = open(log_dir / f"{wid}.log", "wb")  # noqa: SIM115 (closed by the process end)
        procs.append(
            subprocess.Popen(
                [
                    SUPAWORKER,
                    "run",
                    "--handler",
                    "bench.handlers:noop",
                    "--worker-id",
                    wid,
                    "--log-format",
                    "json",
                    *args,
                ],
                cwd=ROOT,
                env=env or worker_env(config),
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        )
    return procs


def wait_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    wait_all(procs, timeout)


# -- CPU accounting -------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # utime, stime, cutime, cstime are fields 14-17 (1-based) of /proc/pid/stat.
    return sum(int(x) for x in fields[11:15]) / _TICK


def _children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == ppid:
            out.append(int(entry.name))
    return out


def stack_pids(config: StackConfig) -> dict[str, list[int]]:
    """The stack's processes by part: gateway, PostgREST, and every Postgres process."""
    pids: dict[str, list[int]] = {}
    for name in ("gateway", "postgrest"):
        try:
            pids[name] = [int((config.path / "pids" / f"{name}.pid").read_text().split()[0])]
        except (OSError, ValueError):
            pids[name] = []
    try:
        master = int((dev_postgres.data_dir(config) / "postmaster.pid").read_text().split()[0])
        pids["postgres"] = [master, *_children(master)]
    except (OSError, ValueError):
        pids["postgres"] = []
    return pids


class CpuTimeline:
    """CPU seconds of groups of processes, sampled in a background thread.

    `window(t0, t1)` gives each group's CPU between two wall-clock times (e.g. the first
    claim and the last completion, read from the database: same machine, same clock).
    Postgres backends are re-listed at every sample, so pooled connections opened during the
    run are counted from when they are first seen.
    """

    def __init__(self, config: StackConfig, interval: float = 0.1) -> None:
        self.config = config
        self.interval = interval
        self.extra: dict[str, list[int]] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def track(self, group: str, pid: int) -> None:
        self.extra.setdefault(group, []).append(pid)
        self._base.setdefault(pid, 0.0)  # a new process: count from its start

    def _groups(self) -> dict[str, list[int]]:
        return {**stack_pids(self.config), **self.extra}

    def sample(self) -> None:
        totals: dict[str, float] = {}
        for group, pids in self._groups().items():
            total = 0.0
            for pid in pids:
                value = _cpu_seconds(pid)
                if value:
                    self._base.setdefault(pid, value)
                    self._last[pid] = value
                total += self._last.get(pid, 0.0) - self._base.get(pid, 0.0)
            totals[group] = total
        self.samples.append((time.time(), totals))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> CpuTimeline:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def window(self, t0: float, t1: float) -> dict[str, float]:
        before = [s for s in self.samples if s[0] <= t0] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= t1] or self.samples[-1:]
        start, end = before[-1][1], after[0][1]
        return {g: max(0.0, end.get(g, 0.0) - start.get(g, 0.0)) for g in end}


# -- numbers and tables ---------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    data = [v for v in values if v == v]
    return statistics.median(data) if data else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable on a terminal)."""
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
        for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, sep, *body])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, load avg at start {load}"
    )
