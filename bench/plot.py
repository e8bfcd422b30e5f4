"""Draws docs/benchmarks.png from bench/results/*.json (whatever benchmarks have run).

.venv/bin/python bench/plot.py
"""

from __future__ import annotations

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench._report import ROOT, load_results

OUT = ROOT / "docs" / "benchmarks.png"
COLORS = {
    "supaworker@": "#b0b0b0",
    "supaworker": "#3ecf8e",
    "supaworker+realtime": "#8fe3bd",
    "supaworker-nobatch": "#1f7a53",
    "procrastinate": "#6b7bd6",
    "arq": "#d65f5f",
}


def _empty(ax: Axes, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _color(system: str) -> str:
    return COLORS["supaworker@"] if system.startswith("supaworker@") else COLORS[system]


def throughput(ax: Axes) -> None:
    data = load_results("throughput")
    if not data:
        _empty(ax, "Throughput")
        return
    rows = data["rows"]
    ceilings = ("sql", "pgbench")
    shapes = sorted(
        {(r["workers"], r["concurrency"]) for r in rows if not r["system"].startswith(ceilings)}
    )
    order = [*[r["system"] for r in rows if r["system"].startswith("supaworker@")], *COLORS]
    present = {r["system"] for r in rows}
    systems = [s for s in dict.fromkeys(order) if s in present]
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        values = [
            next(
                (
                    r["rate"]
                    for r in rows
                    if r["system"] == system and (r["workers"], r["concurrency"]) == shape
                ),
                0,
            )
            for shape in shapes
        ]
        xs = [x + (i - (len(systems) - 1) / 2) * width for x in range(len(shapes))]
        ax.bar(xs, values, width, label=system, color=_color(system))
    styles = {"pgbench bare batched": ":", "sql batched": "-", "sql single": "--"}
    for r in rows:
        if r["system"] in styles:
            ax.axhline(
                r["rate"],
                color="black",
                linestyle=styles[r["system"]],
                linewidth=1,
                label=f"{r['system']} ({r['rate']:,.0f}/s)",
            )
    ax.set_yscale("log")
    ax.set_ylim(5, 2e6)
    ax.set_xticks(range(len(shapes)), [f"{w}x{c}" for w, c in shapes])
    ax.set_xlabel("worker processes x concurrency")
    ax.set_ylabel("jobs/s (median, log)")
    ax.set_title("Throughput, no-op jobs")
    ax.legend(fontsize=6.5, loc="upper center", ncol=3)


def latency(ax: Axes) -> None:
    data = load_results("latency")
    if not data:
        _empty(ax, "Enqueue -> start latency")
        return
    rows = [r for r in data["rows"] if r.get("p50") is not None]
    labels = [r["mode"] for r in rows]
    xs = range(len(rows))
    ax.bar(
        [x - 0.2 for x in xs], [r["p50"] * 1000 for r in rows], 0.4, label="p50", color="#3ecf8e"
    )
    ax.bar(
        [x + 0.2 for x in xs], [r["p99"] * 1000 for r in rows], 0.4, label="p99", color="#1f7a53"
    )
    ax.axhline(100, color="black", linestyle="--", linewidth=1, label="Realtime target p50")
    ax.axhline(250, color="black", linestyle=":", linewidth=1, label="Realtime target p99")
    ax.set_yscale("log")
    ax.set_ylim(bottom=10)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("ms (log)")
    ax.set_title("Enqueue -> start, idle worker")
    ax.legend(fontsize=7)


def idle(ax: Axes) -> None:
    data = load_results("idle_cost")
    if not data:
        _empty(ax, "Idle cost")
        return
    for mode, style in (("polling", "-"), ("realtime", ":")):
        rows = [r for r in data["rows"] if r.get("mode", "polling") == mode]
        if not rows:
            continue
        workers = [r["workers"] for r in rows]
        ax.plot(
            workers,
            [r["requests_per_s"] for r in rows],
            "o" + style,
            color="#3ecf8e",
            label=f"supaworker ({mode}): RPC/s, all workers",
        )
        ax.plot(
            workers,
            [r["db_connections"] for r in rows],
            "s" + style,
            color="#1f7a53",
            label=f"supaworker ({mode}): DB connections",
        )
    peers = data.get("procrastinate") or []
    if peers:
        ax.plot(
            [p["workers"] for p in peers],
            [p["db_connections"] for p in peers],
            "^--",
            color="#6b7bd6",
            label="procrastinate: DB connections",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("idle workers")
    ax.set_title("Idle cost")
    ax.legend(fontsize=7)


def growth(ax: Axes) -> None:
    data = load_results("growth")
    if not data:
        _empty(ax, "Claim cost")
        return
    rows = data["rows"]
    kept = [r["finished_rows"] for r in rows]
    ax.plot(kept, [r["claim_ms"] for r in rows], "o-", color="#3ecf8e", label="finished rows kept")
    ax.plot(
        kept,
        [r["claim_ms_after_purge"] for r in rows],
        "o--",
        color="#1f7a53",
        label="finished rows purged + vacuumed",
    )
    backlog = data.get("backlog") or []
    if backlog:
        ax.plot(
            [b["pending"] for b in backlog],
            [b["claim_ms"] for b in backlog],
            "s-",
            color="#d65f5f",
            label="pending backlog in the claimed queue",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows in processing_queue")
    ax.set_ylabel("claim_next_job(1) in SQL, p50 ms (log)")
    ax.set_title("Claim cost: finished rows vs a pending backlog")
    ax.legend(fontsize=7)


def render() -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    throughput(axes[0][0])
    latency(axes[0][1])
    idle(axes[1][0])
    growth(axes[1][1])
    fig.suptitle("supaworker benchmarks (local stack, 2 cores; see docs/benchmarks.md)")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90)
    plt.close(fig)
    print(f"plot: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    render()
