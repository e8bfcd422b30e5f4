"""Runs every benchmark in turn (each writes its block of docs/benchmarks.md), then the plot.

    .venv/bin/python bench/run_all.py [--full] [--only throughput,latency,idle_cost,growth]

Each script runs as its own process; a failing one is reported and the others still run.
The default sizes finish in about 10 minutes on a 2-core machine; --full takes longer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)

from bench._common import ROOT

SCRIPTS = ["throughput", "latency", "idle_cost", "growth"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    chosen = [s for s in SCRIPTS if not args.only or s in args.only.split(",")]
    failed = []
    for name in chosen:
        began = time.monotonic()
        print(f"=== {name} ===", flush=True)
        code = subprocess.call(
            [
                sys.executable,
                str(ROOT / "bench" / f"{name}.py"),
                *(["--full"] if args.full else []),
            ],
            cwd=ROOT,
        )
        print(f"=== {name}: exit {code} in {time.monotonic() - began:.0f}s ===\n", flush=True)
        if code:
            failed.append(name)
    from bench import plot

    plot.render()
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
