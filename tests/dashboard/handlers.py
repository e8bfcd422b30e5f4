"""The dashboard test's handler: a job fails for good on its first attempt and succeeds on any
later one, so an operator's retry visibly fixes it."""

from __future__ import annotations

from typing import Any

from supaworker import Job, JobContext, PermanentError


async def fail_first_attempt(job: Job, ctx: JobContext) -> dict[str, Any]:
    if job.attempt == 1:
        raise PermanentError("the first attempt fails on purpose")
    return {"attempt": job.attempt}
