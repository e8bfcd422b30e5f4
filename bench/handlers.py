"""Handlers for the benchmarks: they do nothing, so the queue's own cost is what is measured."""

from __future__ import annotations

from typing import Any


async def noop(job: Any, ctx: Any) -> None:
    """A no-op async handler (the job's result stays null)."""
    return None
