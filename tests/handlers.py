"""Handlers used by the acceptance and chaos tests; behaviour is chosen by the job's payload.

payload.mode:
  ok          return {"doc": <document id>, "attempt": n}
  fail_until  raise RuntimeError while attempt index (retry_count) < payload.failures
  permanent   raise PermanentError
  sleep       sleep payload.seconds (async), honouring cancellation
  sync_sleep  time.sleep payload.seconds in the handler's thread
  block       time.sleep payload.seconds inside the async handler: blocks the event loop
  cpu         spin the CPU in pure Python for payload.seconds (holds the GIL)
  progress    report progress 0..100 in payload.steps steps
  not_json    return an object that is not JSON-serialisable
  read_doc    read the job's document row through ctx.supabase (the worker's supabase-py client)
  big_result  return payload.bytes characters of text
  exit        kill its own process (os._exit)
Every execution is appended to $SUPAWORKER_TEST_RECORD (one line: job id, attempt, worker)
when that variable is set, so tests can count executions across killed workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from supaworker import Job, JobContext, PermanentError


def _record(job: Job, ctx: JobContext | None) -> None:
    path = os.environ.get("SUPAWORKER_TEST_RECORD")
    if path:
        worker = ctx.worker_id if ctx else os.environ.get("SUPAWORKER_WORKER_ID", "?")
        with open(path, "a") as f:
            f.write(f"{job.id} {job.attempt} {worker}\n")


def _spin(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += sum(i * i for i in range(2000))
    return n


async def handle(job: Job, ctx: JobContext) -> Any:
    _record(job, ctx)
    mode = job.payload.get("mode", "ok")
    if mode == "ok":
        return {"doc": str(job.user_document_id), "attempt": job.attempt}
    if mode == "fail_until":
        if job.retry_count < int(job.payload.get("failures", 1)):
            raise RuntimeError(f"transient failure on try {job.retry_count + 1}")
        return {"recovered_after": job.retry_count}
    if mode == "permanent":
        raise PermanentError("this document can never be processed")
    if mode == "sleep":
        await asyncio.sleep(float(job.payload.get("seconds", 1)))
        return {"slept": job.payload.get("seconds", 1)}
    if mode == "block":
        time.sleep(float(job.payload.get("seconds", 1)))  # the bug this mode exists to show
        return {"blocked": job.payload.get("seconds", 1)}
    if mode == "progress":
        steps = int(job.payload.get("steps", 4))
        for i in range(1, steps + 1):
            ctx.progress(100 * i / steps, f"step {i}/{steps}")
            await asyncio.sleep(float(job.payload.get("step_seconds", 0.3)))
        return {"steps": steps}
    if mode == "read_doc":
        rows = (
            await ctx.supabase.table("user_documents")
            .select("id")
            .eq("id", str(job.user_document_id))
            .execute()
        ).data
        return {"rows": rows}
    if mode == "not_json":
        return {"when": object()}
    if mode == "big_result":
        return {"text": "x" * int(job.payload.get("bytes", 300_000))}
    if mode == "exit":
        os._exit(17)
    raise PermanentError(f"unknown test mode {mode!r}")


def handle_sync(job: Job, ctx: JobContext) -> Any:
    """The same modes, for the sync (thread / process) executors."""
    _record(job, ctx)
    mode = job.payload.get("mode", "ok")
    if mode == "cpu":
        return {"spins": _spin(float(job.payload.get("seconds", 2)))}
    if mode == "sync_sleep":
        time.sleep(float(job.payload.get("seconds", 1)))
        return {"slept": True}
    if mode == "exit":
        os._exit(17)
    if mode == "ok":
        return {"doc": str(job.user_document_id)}
    raise PermanentError(f"unsupported sync mode {mode!r}")


def handle_process(job: Job) -> Any:
    """For --executor process: runs in a child process, so it takes no ctx."""
    _record(job, None)
    mode = job.payload.get("mode", "ok")
    if mode == "cpu":
        return {"spins": _spin(float(job.payload.get("seconds", 2)))}
    if mode == "exit":
        os._exit(17)
    if mode == "sync_sleep":
        time.sleep(float(job.payload.get("seconds", 1)))
        return {"slept": True}
    return {"doc": str(job.user_document_id), "pid": os.getpid()}
