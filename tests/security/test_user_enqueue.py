"""Security finding S1: a signed-in user could set every enqueue option of the API server.

`enqueue_job` is executable by `authenticated` (the edge function calls it as the caller), and
a user holds the public anon key and their own token, so they can call
`/rest/v1/rpc/enqueue_job` directly, bypassing the edge function, which only passes the
document id and priority. Before the fix a user could set, on their own document:
- `p_payload`, which handlers treat as trusted input from the API server (a
  `storage_path` of another user's file, a callback URL, ...);
- `p_run_at` in the past, to jump ahead of everyone else at the same priority;
- `p_requires`, to route the job to one chosen worker (`supaworker.worker_id`);
- `p_max_attempts` 100, so a document that crashes its worker does so 100 times, not 5;
- `p_timeout_seconds`, e.g. 1 s, so the thread executor abandons (cannot kill) the handler
  thread on every attempt.
Migration 0009_user_enqueue_options.sql refuses those options (PT403, HTTP 403)
for anon/authenticated callers; they keep the document id, priority (clamped) and queue.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.postgrest_api import Api

pytestmark = pytest.mark.stack
Db = psycopg.Connection[tuple[object, ...]]

USER_ONLY_REFUSED: list[tuple[str, Any]] = [
    ("p_payload", {"storage_path": "someone-else/secret.pdf"}),
    ("p_run_at", "1970-01-01T00:00:00Z"),
    ("p_requires", {"supaworker.worker_id": "vps1"}),
    ("p_max_attempts", 100),
    ("p_timeout_seconds", 1),
]


def _job_rows(admin_db: Db, doc: object) -> list[tuple[object, ...]]:
    return admin_db.execute(
        "select status, payload, run_at, requires, max_attempts, timeout_seconds, queue"
        " from public.processing_queue where user_document_id = %s",
        (doc,),
    ).fetchall()


@pytest.mark.parametrize(
    ("param", "value"), USER_ONLY_REFUSED, ids=[p for p, _ in USER_ONLY_REFUSED]
)
def test_users_cannot_set_service_only_enqueue_options(
    api: Api, admin_db: Db, make_user: Callable[..., StackUser], param: str, value: Any
) -> None:
    user = make_user()
    doc = user.create_document(admin_db)
    reply = api.rpc(user.token, "enqueue_job", {"p_user_document_id": str(doc), param: value})
    assert (reply.status, reply.code) == (403, "PT403"), reply.body
    assert param in reply.body["message"]
    assert "service role" in reply.body["hint"]
    assert _job_rows(admin_db, doc) == []  # nothing queued


def test_re_enqueue_by_the_user_cannot_smuggle_options_either(
    api: Api, admin_db: Db, make_user: Callable[..., StackUser], stack: StackConfig
) -> None:
    """The second path into the row: a finished job re-queued as a new cycle (an UPDATE)."""
    user = make_user()
    doc = user.create_document(admin_db)
    first = api.rpc(
        stack.service_role_key,
        "enqueue_job",
        {"p_user_document_id": str(doc), "p_payload": {"lang": "de"}},
    )
    assert first.status == 200
    admin_db.execute("select public.cancel_job(%s)", (first.body["id"],))
    before = _job_rows(admin_db, doc)
    reply = api.rpc(
        user.token,
        "enqueue_job",
        {"p_user_document_id": str(doc), "p_payload": {"storage_path": "x"}},
    )
    assert (reply.status, reply.code) == (403, "PT403")
    assert _job_rows(admin_db, doc) == before  # still cancelled, payload untouched


def test_users_keep_document_priority_queue_and_a_later_start(
    api: Api, admin_db: Db, make_user: Callable[..., StackUser], unique: Callable[[str], str]
) -> None:
    """What the edge function and the documented user calls pass still works, and so do the
    defaults spelled out (an explicit `{}` payload, the default attempts) and a later start."""
    user = make_user()
    doc, later = user.create_document(admin_db), user.create_document(admin_db)
    queue = unique("user-q")
    reply = api.rpc(
        user.token,
        "enqueue_job",
        {
            "p_user_document_id": str(doc),
            "p_priority": 99,
            "p_queue": queue,
            "p_payload": {},
            "p_requires": {},
            "p_max_attempts": None,
        },
    )
    assert reply.status == 200, reply.body
    assert (reply.body["priority"], reply.body["queue"], reply.body["payload"]) == (10, queue, {})
    start = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    reply = api.rpc(
        user.token, "enqueue_job", {"p_user_document_id": str(later), "p_run_at": start}
    )
    assert reply.status == 200, reply.body
    # The user's own re-enqueue of a finished job (a new cycle) keeps working.
    admin_db.execute("select public.cancel_job(%s)", (reply.body["id"],))
    again = api.rpc(user.token, "enqueue_job", {"p_user_document_id": str(later)})
    assert (again.status, again.body["status"]) == (200, "pending")


def test_service_role_and_queue_admin_retry_keep_every_option(
    api: Api, admin_db: Db, make_user: Callable[..., StackUser], stack: StackConfig
) -> None:
    """The refusal applies to end users only: the API server sets every option, and a queue
    admin's retry of a job that carries a payload is not mistaken for a user setting it."""
    user, admin = make_user(), make_user(admin=True)
    doc = user.create_document(admin_db)
    options = {
        "p_payload": {"lang": "de"},
        "p_run_at": "2000-01-01T00:00:00Z",
        "p_requires": {"gpu": True},
        "p_max_attempts": 9,
        "p_timeout_seconds": 60,
    }
    reply = api.rpc(
        stack.service_role_key, "enqueue_job", {"p_user_document_id": str(doc), **options}
    )
    assert reply.status == 200, reply.body
    job = reply.body["id"]
    admin_db.execute("select public.cancel_job(%s)", (job,))
    retried = api.rpc(admin.token, "admin_retry_job", {"p_job_id": job})
    assert (retried.status, retried.body["status"]) == (200, "pending"), retried.body
    assert (retried.body["payload"], retried.body["max_attempts"]) == ({"lang": "de"}, 9)
