"""Issue 7: bad input gets a clear error and changes nothing.

Complements tests/sql/test_permissions.py (every function x role x HTTP status),
tests/functions (edge-function errors), tests/ops/test_operator_cli.py (CLI flags) and
tests/acceptance/test_run.py (handler import errors, timeouts, non-JSON results)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import psycopg
import pytest

from supaworker import QueueClient
from supaworker.dev import keys
from supaworker.dev.config import StackConfig
from supaworker.exceptions import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QueueError,
)
from supaworker.models import Job, JobStatus
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack
Db = psycopg.Connection[tuple[object, ...]]


def _jobs_for(admin_db: Db, doc: uuid.UUID) -> int:
    row = admin_db.execute(
        "select count(*) from public.processing_queue where user_document_id = %s", (doc,)
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def _queue_size(admin_db: Db) -> int:
    row = admin_db.execute("select count(*) from public.processing_queue").fetchone()
    assert row is not None
    return int(str(row[0]))


@pytest.mark.parametrize(
    ("document", "error", "words"),
    [
        ("not-a-uuid", InvalidArgument, "invalid input syntax for type uuid"),
        (str(uuid.UUID(int=7)), NotFound, "not found"),
    ],
)
def test_bad_document_ids(
    queue: QueueClient, admin_db: Db, document: str, error: type[QueueError], words: str
) -> None:
    before = _queue_size(admin_db)
    with pytest.raises(error) as info:
        queue.enqueue(document)
    assert words in str(info.value)
    assert _queue_size(admin_db) == before


def test_another_users_document_is_refused(
    stack: StackConfig, admin_db: Db, make_user: Callable[..., StackUser]
) -> None:
    owner, intruder = make_user(), make_user()
    doc = owner.create_document(admin_db)
    client = QueueClient.connect(stack.api_url, stack.anon_key, access_token=intruder.token)
    with pytest.raises(PermissionDenied):
        client.enqueue(doc)
    client.close()
    assert _jobs_for(admin_db, doc) == 0


@pytest.mark.parametrize("priority", [10**6, -(10**6)])
def test_out_of_range_priority(
    queue: QueueClient, admin_db: Db, make_user: Callable[..., StackUser], priority: int
) -> None:
    doc = make_user().create_document(admin_db)
    with pytest.raises(InvalidArgument) as info:
        queue.enqueue(doc, priority=priority)
    assert "priority" in str(info.value)
    assert _jobs_for(admin_db, doc) == 0


def test_oversize_payload(
    queue: QueueClient, admin_db: Db, make_user: Callable[..., StackUser]
) -> None:
    doc = make_user().create_document(admin_db)
    with pytest.raises(PayloadTooLarge) as info:
        queue.enqueue(doc, payload={"blob": "x" * 300_000})
    assert "payload" in str(info.value).lower()
    assert _jobs_for(admin_db, doc) == 0


@pytest.mark.parametrize("token_kind", ["expired", "forged", "wrong_secret_service_role"])
def test_bad_tokens_are_refused(
    stack: StackConfig, admin_db: Db, make_user: Callable[..., StackUser], token_kind: str
) -> None:
    user = make_user()
    doc = user.create_document(admin_db)
    if token_kind == "expired":
        token = keys.user_token(stack.jwt_secret, user.id, user.email, ttl=-120)
    elif token_kind == "forged":
        token = user.token[:-6] + "AAAAAA"
    else:
        token = keys.service_role_key("another-projects-secret-at-least-32-chars-long!")
    client = QueueClient.connect(stack.api_url, stack.anon_key, access_token=token)
    with pytest.raises(PermissionDenied) as info:
        client.enqueue(doc)
    client.close()
    assert info.value.code == "PGRST301"
    assert _jobs_for(admin_db, doc) == 0


def test_handler_that_kills_its_process_fails_only_that_attempt(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    """With --executor process the child dies, the attempt fails with the exit code, the
    worker lives on and runs the next job."""
    name = unique("q")
    (crash,) = submit(queue_name=name, payload={"mode": "exit"}, max_attempts=1)
    (fine,) = submit(queue_name=name, payload={"mode": "ok"})
    worker = start_worker(
        "--queue", name, "--executor", "process", handler="tests.handlers:handle_process"
    )
    wait_for(lambda: queue.get(fine.id).status == JobStatus.COMPLETED, 60, "the next job")
    row = queue.get(crash.id)
    assert row.status == JobStatus.FAILED
    assert "exited with code 17" in (row.error_message or "")
    assert worker.proc.poll() is None
    time.sleep(0.2)
    assert worker.stop() == 0
