"""Issue 19, fault 3: what a job's owner reads of a failure, apart from what operators read,
and the redaction of common secret shapes in both."""

from __future__ import annotations

import pytest

from supaworker import Job
from supaworker.exceptions import PermanentError, UserFacingError
from supaworker.logs import redact
from supaworker.testing import InMemoryTransport
from supaworker.worker.loop import EXIT_OK
from tests.unit.worker_doubles import enqueue, worker_on

DSN = "postgres://app:hunter2@db.internal:5432/main"
AWS = "AKIAIOSFODNN7EXAMPLE"


class QuotaExceeded(Exception):
    user_message = "monthly quota reached: upgrade your plan"


class Unsupported(UserFacingError):
    pass


@pytest.mark.parametrize(
    ("exc", "owner_reads"),
    [
        (ConnectionError(f"could not connect to {DSN} with key {AWS}"), "ConnectionError"),
        (PermanentError("unsupported file type"), "unsupported file type"),
        (Unsupported("scanned PDFs are not supported"), "scanned PDFs are not supported"),
        (QuotaExceeded(f"tenant 42 over quota, {DSN}"), "monthly quota reached: upgrade your plan"),
        (PermanentError(f"cannot open {DSN}"), "cannot open postgres://app:[redacted]@db.internal"),
    ],
)
async def test_the_owner_reads_a_safe_message_and_operators_the_detail(
    exc: Exception, owner_reads: str
) -> None:
    async def handler(job: Job) -> None:
        raise exc

    fake = InMemoryTransport()
    worker = worker_on(fake, handler)
    (job_id,) = enqueue(fake, p_max_attempts=1)
    assert await worker.run() == EXIT_OK
    job = fake.jobs[job_id]
    assert job["status"] == "failed"
    assert job["error_message"].startswith(owner_reads)
    detail = fake.error_details[(job_id, job["attempt"])]
    assert detail.startswith(type(exc).__name__) and " in handler]" in detail  # frames
    for shown in (job["error_message"], detail):
        assert "hunter2" not in shown and AWS not in shown


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"connect {DSN} failed", "hunter2"),
        (f"key {AWS} denied", AWS),
        ("GET /x?password=s3cret&user=bob", "s3cret"),
        ('{"token": "tok_live_123"}', "tok_live_123"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKC\n-----END RSA PRIVATE KEY-----", "MIIE"),
        ("sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz", "N7UND0Ug"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnop", "eyJzdWIi"),
    ],
)
def test_common_secret_shapes_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted and "[redacted]" in redacted


def test_plain_text_stays_readable() -> None:
    for text in ("ValueError: bad input at line 3", "password is too short", "tokens used: 5"):
        assert redact(text) == text
