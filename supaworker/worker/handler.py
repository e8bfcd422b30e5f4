"""Loading the user's processing function and what it receives besides the job.

Contract: `def f(job)` or `async def f(job)`, optionally `(job, ctx)`. The return value must be
JSON-serialisable and becomes the job's `result`. `PermanentError` fails without retry.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supaworker.exceptions import HandlerImportError
from supaworker.models import Job

Handler = Callable[..., Any]


def load_handler(path: str) -> Handler:
    """Import `package.module:function`; raise HandlerImportError with what to fix."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise HandlerImportError(
            f"--handler must look like MODULE:FUNCTION (e.g. myapp.processing:process), "
            f"got {path!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerImportError(
            f"Cannot import module {module_name!r} for --handler: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise HandlerImportError(
                f"Module {module_name!r} has no attribute {attribute!r}"
            ) from exc
    if not callable(target):
        raise HandlerImportError(f"--handler {path!r} is not callable")
    return target  # type: ignore[no-any-return]


def wants_context(handler: Handler) -> bool:
    """True when the handler takes a second positional parameter (`ctx`)."""
    return _shape(handler)[0]


def is_async(handler: Handler) -> bool:
    return _shape(handler)[1]


def _shape(handler: Handler) -> tuple[bool, bool]:
    # Asked once per job of the same handler; inspect.signature alone was 4 % of a busy
    # worker's CPU (bench/profile_worker.py). Unhashable callable objects are inspected anew.
    try:
        return _cached_shape(handler)
    except TypeError:
        return _inspect_shape(handler)


@functools.lru_cache(maxsize=32)
def _cached_shape(handler: Handler) -> tuple[bool, bool]:
    return _inspect_shape(handler)


def _inspect_shape(handler: Handler) -> tuple[bool, bool]:
    return _takes_context(handler), _is_coroutine_function(handler)


def _takes_context(handler: Handler) -> bool:
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def _is_coroutine_function(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


ProgressSink = Callable[[float, str | None], None]


@dataclass
class JobContext:
    """The second argument of a handler.

    `progress()` and `is_cancelled()` are safe to call from a sync handler's thread;
    `supabase` is the worker's async Supabase client (for storage downloads and the like).
    """

    job: Job
    worker_id: str
    logger: logging.Logger
    supabase: Any = None
    _progress_sink: ProgressSink | None = None
    # A plain flag, not a threading.Event: set once from the loop, read from any thread
    # (an attribute read is atomic), and an Event per job was 4 % of a busy worker's CPU.
    _cancelled: bool = False

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0-100). Never blocks; only the latest value is sent when updates
        come faster than the worker forwards them."""
        if not 0 <= percent <= 100:
            raise ValueError(f"progress percent must be within 0..100, got {percent}")
        if self._progress_sink is not None:
            self._progress_sink(float(percent), message)

    def is_cancelled(self) -> bool:
        """True once cancellation was requested (by an operator, a timeout or shutdown)."""
        return self._cancelled

    async def wait_cancelled(self) -> None:
        while not self._cancelled:
            await asyncio.sleep(0.05)

    def cancel(self) -> None:
        self._cancelled = True
