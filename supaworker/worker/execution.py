"""Running one handler call and turning whatever happens into an `Outcome`.

Sync handlers never run on the event loop, so heartbeats keep flowing while they work:
- `thread` (default): one daemon thread per job. A thread cannot be killed, so a timed-out
  sync handler is told to stop (`ctx.is_cancelled()`) and abandoned; its late result is
  ignored because the attempt is already failed (and fenced in SQL).
- `process`: one child process per job (worker/processes.py), killed on timeout or cancel.
  For CPU-bound work that holds the GIL, and for handlers that may crash their process. The
  child imports the handler by its path and calls `handler(job)`: a `JobContext` (progress,
  cancellation, the Supabase client) cannot cross into it, so a sync `(job, ctx)` handler is
  refused at start (`check_executor`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from supaworker.exceptions import ConfigurationError, HandlerFailed, PermanentError
from supaworker.logs import redact
from supaworker.models import Job
from supaworker.worker.handler import Handler, JobContext, is_async, wants_context

if TYPE_CHECKING:
    from supaworker.worker.processes import ProcessExecutor

Executor = Literal["thread", "process"]

MAX_ERROR_CHARS = 4000

OutcomeKind = Literal["completed", "failed"]


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    result: Any = None
    error: str | None = None
    retryable: bool = True
    # Seconds before the retry when the handler said (HandlerFailed.retry_after); None: the
    # queue's backoff.
    retry_after: float | None = None

    @classmethod
    def failed(cls, error: str, *, retryable: bool, retry_after: float | None = None) -> Outcome:
        # The error is stored on the job, which its owner reads (RLS, Realtime): an exception
        # quoting a key or a signed URL's token must not carry it there.
        return cls(
            "failed",
            error=redact(error)[:MAX_ERROR_CHARS],
            retryable=retryable,
            retry_after=retry_after,
        )


def describe(exc: BaseException) -> str:
    """`Type: message` plus the innermost frames, short enough to store on the job."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} [{where}]" if where else text


def _checked_result(result: Any, max_bytes: int | None) -> Outcome:
    try:
        encoded = json.dumps(result)
    except (TypeError, ValueError) as exc:
        return Outcome.failed(
            f"The handler's return value is not JSON-serialisable: {exc}", retryable=False
        )
    # The result lives in the job row, which the document's owner reads and Realtime sends
    # (a record over Realtime's 1 MB limit reaches subscribers as an error, not the row).
    # Deterministic, so not retried. (ASCII-escaped JSON: characters are bytes.)
    if max_bytes is not None and len(encoded) > max_bytes:
        return Outcome.failed(
            f"The handler's result is {len(encoded):,} bytes of JSON, more than the "
            f"{max_bytes:,} a job keeps (SUPAWORKER_MAX_RESULT_BYTES): store large output "
            "in Storage or a table and return its path",
            retryable=False,
        )
    return Outcome("completed", result=result)


def _outcome_of(exc: BaseException) -> Outcome:
    if isinstance(exc, HandlerFailed):
        # An external handler's own message: the adapter's frames would only mislead.
        return Outcome.failed(
            str(exc), retryable=not isinstance(exc, PermanentError), retry_after=exc.retry_after
        )
    if isinstance(exc, PermanentError):
        return Outcome.failed(describe(exc), retryable=False)
    return Outcome.failed(describe(exc), retryable=True)


def check_executor(handler: Handler, executor: Executor, handler_path: str) -> None:
    """Raise ConfigurationError when `executor` cannot run `handler` (checked at start, so
    that a worker never spends every job's attempts on a call that cannot work)."""
    if executor == "process" and not is_async(handler) and wants_context(handler):
        raise ConfigurationError(
            f"--executor process cannot run {handler_path or 'the handler'}: it takes "
            "(job, ctx), and a JobContext cannot be passed to a child process. Use "
            "--executor thread, or a handler that takes only (job)"
        )


def _arguments(handler: Handler, job: Job, ctx: JobContext) -> tuple[Any, ...]:
    return (job, ctx) if wants_context(handler) else (job,)


async def run_handler(
    handler: Handler,
    job: Job,
    ctx: JobContext,
    *,
    timeout: float | None,
    processes: ProcessExecutor | None = None,
    max_result_bytes: int | None = None,
) -> Outcome:
    """Run the handler once: async handlers on the loop, sync ones in `processes` when
    given (the process executor), else in a thread. Raises CancelledError only if the
    calling task is cancelled."""
    try:
        if is_async(handler):
            # In the job's own task (wait_for would wrap the coroutine in a second task).
            async with asyncio.timeout(timeout):
                result = await handler(*_arguments(handler, job, ctx))
        elif processes is not None:
            result = await processes.run(job, timeout)
        else:
            result = await asyncio.wait_for(_in_thread(handler, job, ctx), timeout)
    except TimeoutError:
        ctx.cancel()
        return Outcome.failed(f"Timed out after {timeout:g}s", retryable=True)
    except asyncio.CancelledError:
        ctx.cancel()
        raise
    except Exception as exc:
        return _outcome_of(exc)
    return _checked_result(result, max_result_bytes)


def _in_thread(handler: Handler, job: Job, ctx: JobContext) -> asyncio.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(handler(*_arguments(handler, job, ctx)))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name=f"job-{job.id}", daemon=True).start()
    return asyncio.wrap_future(future)
