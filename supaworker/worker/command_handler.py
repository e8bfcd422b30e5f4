"""`--handler-command "CMD ARGS"`: a handler in any language, as one long-lived child process.

The worker starts CMD once (no shell; the command line is split like a POSIX shell would) and
talks JSON lines with it, one object per line:

    to stdin     {"type": "job", "job": {...the job row...}}
                 {"type": "cancel", "job_id": "..."}
    from stdout  {"type": "progress", "job_id": "...", "percent": 0-100, "message": "..."}
                 {"type": "result", "job_id": "...", "result": <any JSON>}
                 {"type": "error", "job_id": "...", "message": "...", "permanent": false}

- Up to `--concurrency` jobs are in flight in the one process at once; the child answers each
  job exactly once (`result` or `error`), in any order. `permanent: true` fails the job
  without retrying.
- A cancel (an operator's cancel, the job's timeout, shutdown) asks the child to stop that
  job; its answer to a cancelled job is ignored, but it must answer (an `error` is fine)
  within `SUPAWORKER_HANDLER_CANCEL_GRACE` seconds, or the child is killed and restarted.
  A cancel for a job the child does not know is to be ignored.
- A line that is not a JSON object with a `job_id`, or names a job not in flight, is logged
  and ignored. stderr goes to the worker's log line by line, with the job id when known.
- A child that exits fails the attempts it was running (retryable) and is started again, at
  once after a long life, with a growing delay while it keeps crashing. End of stdin means
  the worker is stopping: the child should exit.

This is an ordinary async handler (`async def __call__(job, ctx)`) for the unchanged worker
loop, plus an async context manager that starts and stops the child around the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shlex
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from supaworker.exceptions import ConfigurationError, HandlerFailed, PermanentHandlerFailed
from supaworker.models import Job
from supaworker.worker.handler import JobContext

log = logging.getLogger("supaworker.worker.command")

# A result line may be large (results up to SUPAWORKER_MAX_RESULT_BYTES, and the worker
# reports an oversized one as the job's error rather than dropping the line).
LINE_LIMIT = 64 * 1024 * 1024
# A child that lived shorter than this before exiting counts as crashing again.
CRASH_WINDOW = 10.0
MAX_RESTART_DELAY = 30.0


@dataclass
class _InFlight:
    ctx: JobContext
    answer: asyncio.Future[Any]


@dataclass
class _Child:
    process: asyncio.subprocess.Process
    started_at: float = field(default_factory=time.monotonic)
    alive: bool = True
    jobs: dict[str, _InFlight] = field(default_factory=dict)
    # Cancelled jobs whose answer has not come: set when it comes (or the child exits).
    cancelling: dict[str, asyncio.Event] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


class CommandHandler:
    def __init__(self, command: str, *, cancel_grace: float = 5.0) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise ConfigurationError(f"--handler-command cannot be parsed: {exc}") from exc
        if not self.argv:
            raise ConfigurationError("--handler-command is empty")
        self.command = command
        self.cancel_grace = cancel_grace
        self._child: _Child | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._crashes = 0
        self._restart: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        try:
            self._install(await self._spawn())
        except OSError as exc:
            raise ConfigurationError(
                f"--handler-command {self.command!r} cannot be started: {exc}"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the child's stdin (its cue to exit), then terminate, then kill."""
        self._closing = True
        self._ready.set()  # jobs waiting for a child: there will be none
        if self._restart is not None:
            self._restart.cancel()
        child = self._child
        if child is None:
            return
        process = child.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        for signal_child in (None, process.terminate, process.kill):
            if signal_child is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal_child()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), self.cancel_grace)
                break
        await asyncio.gather(*child.tasks, return_exceptions=True)

    async def _spawn(self) -> _Child:
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
            # Its own session: a Ctrl-C at the terminal reaches only the worker, which drains
            # its jobs and then stops the child (closing its stdin) instead of losing them.
            start_new_session=True,
        )
        log.info(
            "handler command started (pid %d): %s",
            process.pid,
            self.command,
            extra={"action": "handler_started", "pid": process.pid},
        )
        return _Child(process)

    def _install(self, child: _Child) -> None:
        child.tasks = [
            asyncio.create_task(self._read_stdout(child), name=f"handler-stdout-{child.pid}"),
            asyncio.create_task(self._read_stderr(child), name=f"handler-stderr-{child.pid}"),
        ]
        self._child = child
        self._ready.set()

    # -- one job --------------------------------------------------------------------------
    async def __call__(self, job: Job, ctx: JobContext) -> Any:
        key = str(job.id)
        child = await self._live_child()
        # A previous attempt of this job still being cancelled in this child: its late
        # answer would be taken for this one's (the protocol names jobs by id only).
        while key in child.cancelling:
            await child.cancelling[key].wait()
            child = await self._live_child()
        # No await from here to the write: the child is alive and the line goes out whole.
        entry = _InFlight(ctx, asyncio.get_running_loop().create_future())
        child.jobs[key] = entry
        _write(child, {"type": "job", "job": job.model_dump(mode="json")})
        try:
            return await entry.answer
        except asyncio.CancelledError:
            # Unless its answer came in just before the cancel (then the child is done
            # with it and would never answer a cancel: it would be killed for nothing).
            if entry.answer.cancelled():
                self._cancel(child, key)
            raise
        finally:
            if child.jobs.get(key) is entry:
                del child.jobs[key]

    async def _live_child(self) -> _Child:
        while True:
            if self._closing:
                raise HandlerFailed("The worker is stopping its handler command")
            child = self._child
            if child is not None and child.alive:
                return child
            self._ready.clear()
            await self._ready.wait()

    def _cancel(self, child: _Child, key: str) -> None:
        """The job's task was cancelled: tell the child, and kill it if it does not answer."""
        if not child.alive or key in child.cancelling:
            return
        answered = asyncio.Event()
        child.cancelling[key] = answered
        _write(child, {"type": "cancel", "job_id": key})
        asyncio.get_running_loop().call_later(
            self.cancel_grace, self._kill_if_unanswered, child, key, answered
        )

    def _kill_if_unanswered(self, child: _Child, key: str, answered: asyncio.Event) -> None:
        if answered.is_set() or not child.alive or self._closing:
            return
        log.warning(
            "handler command (pid %d) did not answer the cancel of job %s within %gs: "
            "killing it (%d other job(s) in flight fail and are retried)",
            child.pid,
            key,
            self.cancel_grace,
            len(child.jobs),
            extra={"action": "handler_killed", "pid": child.pid, "job_id": key},
        )
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()

    # -- the child's output ---------------------------------------------------------------
    async def _read_stdout(self, child: _Child) -> None:
        stdout = child.process.stdout
        assert stdout is not None
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:
                    _ignored(child, "a line longer than the limit", b"")
                    continue
                if not line:
                    break
                if line.strip():
                    self._on_line(child, line)
        finally:
            await self._exited(child)

    def _on_line(self, child: _Child, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            _ignored(child, "not JSON", line)
            return
        if not isinstance(message, dict) or not isinstance(message.get("job_id"), str):
            _ignored(child, 'not a JSON object with a "job_id"', line)
            return
        kind, key = message.get("type"), message["job_id"]
        if kind not in ("progress", "result", "error"):
            _ignored(child, f"unknown type {kind!r}", line)
            return
        answered = child.cancelling.get(key)
        if answered is not None:
            if kind != "progress":
                del child.cancelling[key]
                answered.set()
            return  # the job was cancelled: its outcome is written already
        entry = child.jobs.get(key)
        if entry is None or entry.answer.done():
            _ignored(child, f"job {key} is not in flight", line)
            return
        if kind == "progress":
            _progress(child, entry, key, message, line)
        elif kind == "result":
            entry.answer.set_result(message.get("result"))
        else:
            text = message.get("message")
            error = text if isinstance(text, str) and text else "the handler reported an error"
            failure = PermanentHandlerFailed if message.get("permanent") is True else HandlerFailed
            entry.answer.set_exception(failure(error))

    async def _read_stderr(self, child: _Child) -> None:
        stderr = child.process.stderr
        assert stderr is not None
        while True:
            try:
                line = await stderr.readline()
            except ValueError:
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            if not text:
                continue
            # The job id when known: the line names a job in flight, or only one is.
            named = [k for k in child.jobs if k in text]
            job_id = named[0] if named else next(iter(child.jobs)) if len(child.jobs) == 1 else None
            log.info(
                "handler: %s",
                text,
                extra={"action": "handler_stderr", "pid": child.pid, "job_id": job_id},
            )

    async def _exited(self, child: _Child) -> None:
        child.alive = False
        try:
            code = await asyncio.wait_for(child.process.wait(), 5)
        except TimeoutError:  # closed its stdout but lives on: it can no longer answer
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            code = await child.process.wait()
        jobs = [entry for entry in child.jobs.values() if not entry.answer.done()]
        for entry in jobs:
            entry.answer.set_exception(_exited(child, code))
        for answered in child.cancelling.values():
            answered.set()
        child.cancelling.clear()
        if self._closing:
            log.info(
                "handler command (pid %d) exited with code %s",
                child.pid,
                code,
                extra={"action": "handler_stopped", "pid": child.pid, "code": code},
            )
            return
        lived = time.monotonic() - child.started_at
        self._crashes = self._crashes + 1 if lived < CRASH_WINDOW else 1
        # At once after a long life; 0.5 s, 1 s, 2 s ... while it keeps crashing.
        delay = min(0.5 * 2 ** (self._crashes - 2), MAX_RESTART_DELAY) if self._crashes > 1 else 0.0
        log.warning(
            "handler command (pid %d) exited with code %s after %.1fs, failing %d job(s) in "
            "flight; restarting in %.1fs",
            child.pid,
            code,
            lived,
            len(jobs),
            delay,
            extra={"action": "handler_exited", "pid": child.pid, "code": code, "jobs": len(jobs)},
        )
        self._restart = asyncio.create_task(self._restart_after(delay), name="handler-restart")

    async def _restart_after(self, delay: float) -> None:
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                self._install(await self._spawn())
                return
            except OSError as exc:
                delay = min(max(delay * 2, 0.5), MAX_RESTART_DELAY)
                log.error(
                    "handler command cannot be started again (%s); next try in %.1fs",
                    exc,
                    delay,
                    extra={"action": "handler_start_failed"},
                )


def _write(child: _Child, message: dict[str, Any]) -> None:
    """One line to the child. Not drained: at most --concurrency jobs and their cancels are
    ever waiting in the pipe. A child that is exiting loses it; its stdout reader then fails
    the jobs it had."""
    stdin = child.process.stdin
    assert stdin is not None
    with contextlib.suppress(OSError):
        stdin.write(json.dumps(message).encode() + b"\n")


def _exited(child: _Child, code: int | None = None) -> HandlerFailed:
    how = f"exited with code {code}" if code is not None else "exited"
    return HandlerFailed(f"The handler command (pid {child.pid}) {how} while running the job")


def _progress(
    child: _Child, entry: _InFlight, key: str, message: dict[str, Any], line: bytes
) -> None:
    percent, text = message.get("percent"), message.get("message")
    if (
        not isinstance(percent, int | float)
        or isinstance(percent, bool)
        or not math.isfinite(percent)
        or not 0 <= percent <= 100
        or (text is not None and not isinstance(text, str))
    ):
        _ignored(child, f'progress for {key} needs "percent" 0-100 and a string "message"', line)
        return
    entry.ctx.progress(float(percent), text)


def _ignored(child: _Child, why: str, line: bytes) -> None:
    log.warning(
        "handler command (pid %d) wrote a line that is ignored: %s",
        child.pid,
        why,
        extra={
            "action": "handler_line_ignored",
            "pid": child.pid,
            "line": line[:200].decode(errors="replace"),
        },
    )
