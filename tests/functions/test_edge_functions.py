"""`enqueue-document` and `job-status` under real Deno behind the local gateway, called the way
an app's backend in Python calls them: supabase-py's `functions.invoke`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.functions.conftest import FunctionsCaller

pytestmark = pytest.mark.stack

Db = psycopg.Connection[tuple[object, ...]]
MakeCaller = Callable[..., FunctionsCaller]
MakeUser = Callable[..., StackUser]


def job_rows(admin_db: Db, document_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return admin_db.execute(
        "select id, status, user_id, user_priority from public.processing_queue"
        " where user_document_id = %s",
        (document_id,),
    ).fetchall()


def assert_error(call: Any, status: int, error: str) -> None:
    assert call.status == status, call.body
    assert call.body["error"] == error
    assert isinstance(call.body["message"], str) and call.body["message"]
    assert call.headers["access-control-allow-origin"] == "*"


# -- enqueue-document ------------------------------------------------------------------------
def test_enqueue_queues_the_owners_document(
    make_user: MakeUser, admin_db: Db, caller: MakeCaller
) -> None:
    user = make_user()
    document_id = user.create_document(admin_db)
    call = caller(user.token).invoke("enqueue-document", {"user_document_id": str(document_id)})
    assert call.status == 202
    assert call.body["success"] is True
    assert call.body["status"] == "queued"
    job = call.body["job"]
    assert job["user_document_id"] == str(document_id)
    assert job["status"] == "pending"
    assert "assigned_to" not in job and "payload" not in job
    [(job_id, status, owner, _)] = job_rows(admin_db, document_id)
    assert str(job_id) == job["id"]
    assert status == "pending"
    assert owner == user.id


def test_enqueue_through_the_users_own_client(
    make_user: MakeUser, admin_db: Db, functions_ready: StackConfig
) -> None:
    user = make_user()
    document_id = user.create_document(admin_db)
    data = user.client.functions.invoke(
        "enqueue-document",
        {"body": {"user_document_id": str(document_id), "priority": 7}, "responseType": "json"},
    )
    assert isinstance(data, dict)  # responseType json: the parsed body
    # A user's priority orders only that user's jobs (issue 18): it is user_priority.
    assert (data["job"]["user_priority"], data["job"]["priority"]) == (7, 0)
    [(_, _, _, user_priority)] = job_rows(admin_db, document_id)
    assert user_priority == 7


def test_enqueue_over_the_users_quota_is_429_and_writes_nothing(
    make_user: MakeUser, admin_db: Db, caller: MakeCaller
) -> None:
    user = make_user()
    first, second = user.create_document(admin_db), user.create_document(admin_db)
    admin_db.execute("update public.queue_settings set max_pending_per_user = 1")
    try:
        ok = caller(user.token).invoke("enqueue-document", {"user_document_id": str(first)})
        assert ok.status == 202, ok.body
        call = caller(user.token).invoke("enqueue-document", {"user_document_id": str(second)})
    finally:
        admin_db.execute("update public.queue_settings set max_pending_per_user = null")
    assert_error(call, 429, "quota_exceeded")
    assert "max_pending_per_user is 1" in call.body["message"]
    assert "has 1 pending or running jobs" in call.body["message"]
    assert job_rows(admin_db, second) == []


def test_enqueue_with_the_anon_key_only_is_401(caller: MakeCaller) -> None:
    call = caller().invoke("enqueue-document", {"user_document_id": str(uuid.uuid4())})
    assert_error(call, 401, "unauthorized")


def test_publishable_key_is_swapped_for_the_anon_jwt(
    caller: MakeCaller, stack: StackConfig
) -> None:
    # Kong's rule: `Bearer sb_publishable_...` becomes the anon JWT, which verify_jwt accepts;
    # the function then refuses it for lack of a user.
    call = caller(key=stack.publishable_key).invoke(
        "enqueue-document", {"user_document_id": str(uuid.uuid4())}
    )
    assert_error(call, 401, "unauthorized")


def test_request_without_authorization_is_rejected_by_verify_jwt(stack: StackConfig) -> None:
    resp = httpx.post(f"{stack.api_url}/functions/v1/enqueue-document", json={}, timeout=30)
    assert resp.status_code == 401
    assert resp.json() == {"msg": "Error: Missing authorization header"}


@pytest.mark.parametrize("forge", ["wrong-secret", "expired", "garbage"])
def test_forged_token_is_rejected_by_verify_jwt(
    make_user: MakeUser, admin_db: Db, caller: MakeCaller, stack: StackConfig, forge: str
) -> None:
    user = make_user()
    document_id = user.create_document(admin_db)
    token = {
        "wrong-secret": keys.user_token("x" * 40, user.id, user.email),
        "expired": keys.user_token(stack.jwt_secret, user.id, user.email, ttl=-3600),
        "garbage": "a.b.c",
    }[forge]
    call = caller(token).invoke("enqueue-document", {"user_document_id": str(document_id)})
    assert call.status == 401
    assert call.body == {"msg": "Invalid JWT"}
    assert job_rows(admin_db, document_id) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        {},
        {"user_document_id": "not-a-uuid"},
        {"user_document_id": 12},
        {"user_document_id": "6f1c1b8e-0000-4000-8000-000000000000", "priority": 1.5},
        {"user_document_id": "6f1c1b8e-0000-4000-8000-000000000000", "priority": "high"},
    ],
    ids=["not-json", "empty", "not-uuid", "number", "float-priority", "text-priority"],
)
def test_malformed_request_is_400(make_user: MakeUser, caller: MakeCaller, body: Any) -> None:
    call = caller(make_user().token).invoke("enqueue-document", body)
    assert call.status == 400
    assert call.body["error"] in ("invalid_body", "invalid_argument")


def test_body_too_large_is_413(make_user: MakeUser, caller: MakeCaller) -> None:
    body = {"user_document_id": str(uuid.uuid4()), "pad": "x" * 100_000}
    assert_error(
        caller(make_user().token).invoke("enqueue-document", body), 413, "payload_too_large"
    )


def test_wrong_method_is_405_with_allow(make_user: MakeUser, caller: MakeCaller) -> None:
    call = caller(make_user().token).invoke("enqueue-document", method="GET")
    assert_error(call, 405, "method_not_allowed")
    assert call.headers["allow"] == "POST, OPTIONS"


def test_another_users_document_is_403_and_not_queued(
    make_user: MakeUser, admin_db: Db, caller: MakeCaller
) -> None:
    owner, intruder = make_user(), make_user()
    document_id = owner.create_document(admin_db)
    call = caller(intruder.token).invoke("enqueue-document", {"user_document_id": str(document_id)})
    assert_error(call, 403, "forbidden")
    assert job_rows(admin_db, document_id) == []


def test_unknown_document_is_404(make_user: MakeUser, caller: MakeCaller) -> None:
    call = caller(make_user().token).invoke(
        "enqueue-document", {"user_document_id": str(uuid.uuid4())}
    )
    assert_error(call, 404, "not_found")


def test_cors_preflight(stack: StackConfig, functions_ready: StackConfig) -> None:
    for name in ("enqueue-document", "job-status"):
        resp = httpx.options(
            f"{stack.api_url}/functions/v1/{name}",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, apikey, content-type",
            },
            timeout=30,
        )
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == "*"
        assert "authorization" in resp.headers["access-control-allow-headers"]


# -- job-status ------------------------------------------------------------------------------
def test_job_status_of_own_job(make_user: MakeUser, admin_db: Db, caller: MakeCaller) -> None:
    user = make_user()
    document_id = user.create_document(admin_db)
    as_user = caller(user.token)
    job_id = as_user.invoke("enqueue-document", {"user_document_id": str(document_id)}).body["job"][
        "id"
    ]
    for query in (f"user_document_id={document_id}", f"job_id={job_id}"):
        call = as_user.invoke(f"job-status?{query}", method="GET")
        assert call.status == 200, call.body
        job = call.body["job"]
        assert job["id"] == job_id
        assert job["status"] == "pending"
        for field in (
            "progress_percent",
            "progress_message",
            "error_message",
            "result",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
        ):
            assert field in job
        assert call.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?job_id=nope",
        "?user_document_id=",
        f"?job_id={uuid.uuid4()}&user_document_id={uuid.uuid4()}",
    ],
    ids=["none", "bad-uuid", "empty", "both"],
)
def test_job_status_needs_one_valid_parameter(
    make_user: MakeUser, caller: MakeCaller, query: str
) -> None:
    call = caller(make_user().token).invoke(f"job-status{query}", method="GET")
    assert_error(call, 400, "invalid_argument")


def test_job_status_unknown_job_is_404(make_user: MakeUser, caller: MakeCaller) -> None:
    call = caller(make_user().token).invoke(f"job-status?job_id={uuid.uuid4()}", method="GET")
    assert_error(call, 404, "not_found")


def test_job_status_without_a_user_is_401(caller: MakeCaller) -> None:
    call = caller().invoke(f"job-status?job_id={uuid.uuid4()}", method="GET")
    assert_error(call, 401, "unauthorized")


# -- two users -------------------------------------------------------------------------------
def test_two_users_cannot_see_or_enqueue_each_others_documents(
    make_user: MakeUser, admin_db: Db, caller: MakeCaller
) -> None:
    alice, bob = make_user(), make_user()
    docs = {alice.id: alice.create_document(admin_db), bob.id: bob.create_document(admin_db)}
    callers = {alice.id: caller(alice.token), bob.id: caller(bob.token)}
    jobs: dict[uuid.UUID, str] = {}
    for me, other in ((alice, bob), (bob, alice)):
        mine = callers[me.id]
        theirs = {"user_document_id": str(docs[other.id])}
        assert mine.invoke("enqueue-document", theirs).status == 403
        own = mine.invoke("enqueue-document", {"user_document_id": str(docs[me.id])})
        assert own.status == 202
        jobs[me.id] = own.body["job"]["id"]
    for me, other in ((alice, bob), (bob, alice)):
        mine = callers[me.id]
        assert mine.invoke(f"job-status?job_id={jobs[me.id]}", method="GET").status == 200
        assert mine.invoke(f"job-status?job_id={jobs[other.id]}", method="GET").status == 404
        by_doc = mine.invoke(f"job-status?user_document_id={docs[other.id]}", method="GET")
        assert by_doc.status == 404
    # Each document has exactly its owner's job.
    for user_id, document_id in docs.items():
        [(_, _, owner, _)] = job_rows(admin_db, document_id)
        assert owner == user_id
