"""The worker process: `Worker` runs the loop, `handler` loads and calls user code."""

from __future__ import annotations
