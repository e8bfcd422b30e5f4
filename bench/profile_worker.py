"""Where a worker's CPU goes: one `supaworker run --burst` under py-spy, summarised.

    .venv/bin/python bench/profile_worker.py [--jobs 1500] [--concurrency 32] [--no-batch]

Seeds the jobs, runs one worker process under `py-spy record` (sampling, 100 Hz), and prints
the share of samples under the frames that matter (inclusive), plus the hottest leaf frames.
Needs the `bench` extra (py-spy). Prints only; nothing is written to the docs.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import tempfile
import uuid
from pathlib import Path

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)

from bench._common import (
    ROOT,
    SUPAWORKER,
    admin,
    ensure_stack,
    finished_window,
    reset_queue,
    seed_jobs,
    worker_env,
)

PY_SPY = str(Path(SUPAWORKER).with_name("py-spy"))
# Inclusive buckets: (label, substring of a frame).
BUCKETS = [
    ("HTTP: postgrest-py + httpx + httpcore, all", ("postgrest/_async/", "httpx/", "httpcore/")),
    ("  httpx/httpcore connection pool", "httpcore/_async/connection_pool.py"),
    (
        "  httpcore current_async_library (failed `import sniffio` each call)",
        "current_async_library",
    ),
    ("  socket writes", "_SelectorSocketTransport.write"),
    ("start_job calls", "AsyncQueueClient.start "),
    ("complete_job calls", "AsyncQueueClient.complete "),
    ("complete_jobs calls (batched)", "AsyncQueueClient.complete_many "),
    ("claim_next_job calls", "AsyncQueueClient.claim "),
    ("heartbeats", "AsyncQueueClient.heartbeat "),
    ("pydantic: parsing rows into Job", "_jobs (supaworker/rpc.py"),
    ("logging (JSON lines)", "Logger._log"),
    ("the handler itself", "noop (bench/handlers.py"),
    ("Realtime client (websocket messages)", "realtime/"),
]


def summarise(raw: Path) -> str:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for label, needle in BUCKETS:
            needles = (needle,) if isinstance(needle, str) else needle
            if any(x in stack for x in needles):
                inclusive[label] += n
        leaf = stack.rsplit(";", 1)[-1]
        leaves[leaf.split(" (")[0] + " (" + leaf.rsplit("/", 1)[-1]] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples (active CPU only, start-up included)", "", "inclusive share:"]
    for label, _ in BUCKETS:
        lines.append(f"  {inclusive[label] / total * 100:5.1f} %  {label}")
    lines += ["", "hottest leaf frames:"]
    for leaf, n in leaves.most_common(12):
        lines.append(f"  {n / total * 100:5.1f} %  {leaf}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--no-batch", action="store_true", help="completion batching off (on by default)"
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="Realtime on (the default of `supaworker run`; off here, as in throughput.py)",
    )
    args = parser.parse_args()
    config = ensure_stack()
    queue = f"prof-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        reset_queue(conn)
        seed_jobs(conn, args.jobs, queue)
    extra = {"SUPAWORKER_COMPLETE_BATCH_SIZE": "0"} if args.no_batch else {}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "worker.raw"
        subprocess.run(
            [
                PY_SPY,
                "record",
                "--format",
                "raw",
                "--rate",
                "100",
                "--output",
                str(raw),
                "--nonblocking",
                "--",
                SUPAWORKER,
                "run",
                "--handler",
                "bench.handlers:noop",
                "--worker-id",
                queue,
                "--burst",
                "--queue",
                queue,
                "--concurrency",
                str(args.concurrency),
                "--log-format",
                "json",
                "--realtime" if args.realtime else "--no-realtime",
            ],
            cwd=ROOT,
            env=worker_env(config, **extra),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with admin(config) as conn:
            done, t0, t1 = finished_window(conn, queue)
        print(
            f"{done} jobs in {t1 - t0:.2f}s ({done / max(t1 - t0, 1e-9):.0f} jobs/s, under "
            f"the profiler), concurrency {args.concurrency}, batching "
            f"{'off' if args.no_batch else 'on'}\n"
        )
        print(summarise(raw))


if __name__ == "__main__":
    main()
