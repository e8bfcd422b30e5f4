"""`--executor process`: each job runs in a child process of its own, started ahead of need.

A child imports the handler first and says it is ready; only then is it given a job, and
only then does the job's timeout clock start: starting a process (forkserver) and importing
the handler can take seconds on a loaded machine, and an innocent job must not time out for
them (a job's timeout counts only its own run). One ready child is kept spare, started when
the previous spare is taken, so that the job after a killed child (timeout, cancel) does not
wait for a new one either. A child runs one job and exits, so killing it on timeout or
cancel never leaves a half-used process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
from typing import Any

from supaworker.exceptions import PermanentError
from supaworker.models import Job

_mp = multiprocessing.get_context("forkserver")

# Seconds a child may take to start and import the handler before it counts as broken.
READY_TIMEOUT = 120.0


class HandlerProcessDied(Exception):
    """The child process ended without an answer (killed, crashed, os._exit)."""


def _child_main(handler_path: str, conn: multiprocessing.connection.Connection) -> None:
    from supaworker.worker.execution import describe
    from supaworker.worker.handler import load_handler

    try:
        try:
            handler = load_handler(handler_path)
        except BaseException as exc:
            conn.send(("error", describe(exc)))
            return
        conn.send(("ready", None))
        job = Job.model_validate_json(conn.recv())
        try:
            result = handler(job)
            json.dumps(result)
            conn.send(("ok", result))
        except PermanentError as exc:
            conn.send(("permanent", describe(exc)))
        except BaseException as exc:
            conn.send(("error", describe(exc)))
    except (EOFError, BrokenPipeError):  # the worker is gone or gave up on us
        pass
    finally:
        conn.close()


class _Child:
    def __init__(self, handler_path: str) -> None:
        self.conn, theirs = _mp.Pipe(duplex=True)
        self.process: multiprocessing.process.BaseProcess = _mp.Process(
            target=_child_main, args=(handler_path, theirs), daemon=True
        )
        self.process.start()
        theirs.close()
        self._ready: asyncio.Task[tuple[str, Any]] = asyncio.create_task(self._receive(None))

    async def _receive(self, timeout: float | None) -> tuple[str, Any]:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(self.conn.fileno(), on_readable)
        try:
            await asyncio.wait_for(readable, timeout)
        finally:
            loop.remove_reader(self.conn.fileno())
        try:
            message: tuple[str, Any] = self.conn.recv()
        except EOFError as exc:
            await asyncio.to_thread(self.process.join, 5)
            raise HandlerProcessDied(
                f"The handler's process exited with code {self.process.exitcode} before answering"
            ) from exc
        return message

    @property
    def ready(self) -> bool:
        return self._ready.done() and not self._ready.cancelled()

    async def run(self, job: Job, timeout: float | None) -> Any:
        try:
            try:
                status, value = await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT)
            except TimeoutError:
                raise HandlerProcessDied(
                    f"The handler's process did not start within {READY_TIMEOUT:g}s"
                ) from None
            if status == "ready":
                self.conn.send(job.model_dump_json())
                # The job's clock starts here: the process is up and the handler imported.
                status, value = await self._receive(timeout)
        finally:
            await self.close()
        if status == "permanent":
            raise PermanentError(value)
        if status == "error":
            raise RuntimeError(value)
        return value

    async def close(self) -> None:
        self._ready.cancel()
        with contextlib.suppress(BaseException):
            await self._ready
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        await asyncio.to_thread(self.process.join, 5)


class ProcessExecutor:
    """Children for `handler_path`, one always spare."""

    def __init__(self, handler_path: str) -> None:
        self.handler_path = handler_path
        self._spare: _Child | None = None

    @property
    def spare_ready(self) -> bool:
        """Whether the spare child has imported the handler and waits for a job."""
        return self._spare is not None and self._spare.ready

    def warm(self) -> None:
        """Start the spare child now (idempotent)."""
        if self._spare is None:
            self._spare = _Child(self.handler_path)

    async def run(self, job: Job, timeout: float | None) -> Any:
        self.warm()
        child, self._spare = self._spare, None
        assert child is not None
        # The next job's child starts while this one runs. (Out of processes or memory: the
        # next job starts its own, or fails retryably.)
        with contextlib.suppress(OSError):
            self.warm()
        return await child.run(job, timeout)

    async def close(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            await spare.close()
