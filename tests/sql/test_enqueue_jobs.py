"""Bulk enqueue (issue 18): enqueue_jobs takes up to 10,000 documents in one call, each with its
own options, idempotent per document like enqueue_job, quotas applied, all or nothing (a bad
element refuses the call with its index and nothing is written)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from supaworker import rpc
from supaworker.exceptions import InvalidArgument, NotFound, QuotaExceeded
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Api, Svc, job_row, make_documents

pytestmark = pytest.mark.stack


def snapshot(admin_db: Admin) -> tuple[Any, ...]:
    """What a refused call must leave as it was."""
    return tuple(
        admin_db.execute(sql).fetchone()
        for sql in (
            "select count(*), max(updated_at) from public.processing_queue",
            "select count(*) from public.job_events",
            "select count(*), sum(last_tag) from supaworker_private.owner_clock",
        )
    )


@pytest.fixture
def quota(admin_db: Admin) -> Iterator[Callable[[int | None], None]]:
    def set_quota(limit: int | None) -> None:
        admin_db.execute("update public.queue_settings set max_pending_per_user = %s", (limit,))

    yield set_quota
    set_quota(None)


def test_ten_thousand_documents_in_one_call_with_fair_tags(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("bulk")
    a, b = make_user(), make_user()
    docs_a, docs_b = make_documents(admin_db, a, 9000), make_documents(admin_db, b, 1000)
    items: list[rpc.BulkItem] = [*docs_a, *docs_b]
    jobs = svc.call(rpc.enqueue_jobs(items, queue=queue))
    assert [j["user_document_id"] for j in jobs] == [str(d) for d in items]  # input order
    assert {j["status"] for j in jobs} == {"pending"}
    # Each owner's jobs get consecutive tags from the level's V: B's 1,000 are not behind
    # A's 9,000, as with 10,000 single enqueues.
    assert [j["fair_tag"] for j in jobs[:9000]] == list(range(9000))
    assert [j["fair_tag"] for j in jobs[9000:]] == list(range(1000))
    events = admin_db.execute(
        "select count(*) from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'enqueued'",
        (queue,),
    ).fetchone()
    assert events == (10000,)


def test_each_document_has_its_own_options_and_the_call_is_idempotent(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("bulk-opts")
    user = make_user()
    plain, urgent, twice, done = make_documents(admin_db, user, 4)
    first = svc.call(rpc.enqueue_jobs([done], queue=queue))
    admin_db.execute(
        "update public.processing_queue set status = 'completed', completed_at = now()"
        " where id = %s",
        (first[0]["id"],),
    )
    items: list[rpc.BulkItem] = [
        plain,
        (urgent, {"priority": 7, "payload": {"lang": "de"}, "max_attempts": 2}),
        twice,
        (twice, {"priority": 9}),  # the first element of a document decides
        done,
    ]
    jobs = svc.call(rpc.enqueue_jobs(items, queue=queue, timeout_seconds=60))
    assert [(j["priority"], j["payload"], j["max_attempts"]) for j in jobs[:2]] == [
        (0, {}, 5),
        (7, {"lang": "de"}, 2),
    ]
    assert jobs[2]["id"] == jobs[3]["id"] and jobs[3]["priority"] == 0
    assert {j["timeout_seconds"] for j in jobs} == {60}
    assert jobs[4]["id"] == first[0]["id"] and jobs[4]["status"] == "pending"  # a new cycle
    again = svc.call(rpc.enqueue_jobs(items, queue=queue))
    assert [j["id"] for j in again] == [j["id"] for j in jobs]
    assert [j["updated_at"] for j in again] == [j["updated_at"] for j in jobs]  # unchanged


@pytest.mark.parametrize(
    ("element", "error", "message"),
    [
        ({"user_document_id": "nope"}, InvalidArgument, "p_jobs[2]: user_document_id must be"),
        ("just-a-string", InvalidArgument, "p_jobs[2]: must be a JSON object"),
        ({"prio": 1}, InvalidArgument, "p_jobs[2]: unknown key prio"),
        ({"priority": 5000}, InvalidArgument, "p_jobs[2]: priority must be between -1000 and"),
        (
            {"priority": "high"},
            InvalidArgument,
            'p_jobs[2]: priority must be an integer, got "high"',
        ),
        ({"queue": "no spaces"}, InvalidArgument, "p_jobs[2]: invalid queue name"),
        ({"max_attempts": 0}, InvalidArgument, "p_jobs[2]: max_attempts must be between 1 and"),
        ({"requires": {"size": {"gte": "1MB"}}}, InvalidArgument, "p_jobs[2]: p_requires.size"),
        ({"run_at": "tomorrow-ish"}, InvalidArgument, "p_jobs[2]: run_at tomorrow-ish is not"),
        ({"user_document_id": str(uuid.uuid4())}, NotFound, "p_jobs[2]: document"),
    ],
)
def test_a_bad_element_refuses_the_call_with_its_index_and_writes_nothing(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    element: Any,
    error: type[Exception],
    message: str,
) -> None:
    docs = make_documents(admin_db, make_user(), 4)
    good = [{"user_document_id": str(d), "queue": unique("bulk-bad")} for d in docs]
    if isinstance(element, dict) and "user_document_id" not in element:
        element = {**good[2], **element}
    raw = [good[0], good[1], element, good[3]]
    before = snapshot(admin_db)
    with pytest.raises(error) as refused:
        svc.transport.call("enqueue_jobs", {"p_jobs": raw})  # RAW: elements rpc.py never sends
    assert message in str(refused.value)
    assert "Nothing was enqueued" in str(refused.value)
    assert snapshot(admin_db) == before


def test_more_than_ten_thousand_is_refused_before_anything(svc: Svc) -> None:
    with pytest.raises(InvalidArgument, match="p_jobs has 10001 elements, at most 10000"):
        svc.transport.call(  # RAW: rpc.enqueue_jobs refuses this itself
            "enqueue_jobs", {"p_jobs": [{"user_document_id": str(uuid.uuid4())}] * 10001}
        )
    with pytest.raises(ValueError, match="at most 10000"):
        rpc.enqueue_jobs([uuid.uuid4()] * 10001)


def test_the_quota_counts_the_calls_new_documents(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    quota: Callable[[int | None], None],
) -> None:
    queue = unique("bulk-quota")
    a, b = make_user(), make_user()
    docs_a, docs_b = make_documents(admin_db, a, 4), make_documents(admin_db, b, 2)
    svc.call(rpc.enqueue_jobs(docs_a[:2], queue=queue))
    quota(3)
    before = snapshot(admin_db)
    with pytest.raises(QuotaExceeded) as refused:
        svc.call(rpc.enqueue_jobs([*docs_b, *docs_a], queue=queue))
    assert str(refused.value).startswith(
        f"p_jobs[4]: user {a.id} has 2 pending or running jobs and this call adds 2;"
        " max_pending_per_user is 3"
    )
    assert snapshot(admin_db) == before
    # Already active documents are not new work: A adds one, B two.
    jobs = svc.call(rpc.enqueue_jobs([*docs_b, *docs_a[:3]], queue=queue))
    assert len({j["id"] for j in jobs}) == 5


def test_users_bulk_enqueue_their_own_documents_only(
    api: Api,
    admin_db: Admin,
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("bulk-user")
    owner, stranger = make_user(), make_user()
    mine, theirs = make_documents(admin_db, owner, 2), make_documents(admin_db, stranger, 1)
    reply = api.call(
        owner.token, rpc.enqueue_jobs([(mine[0], {"priority": 99}), mine[1]], queue=queue)
    )
    assert reply.status == 200, reply.body
    assert [(j["priority"], j["user_priority"]) for j in reply.body] == [(0, 10), (0, 0)]
    refused = api.call(owner.token, rpc.enqueue_jobs([mine[0], theirs[0]], queue=queue))
    assert (refused.status, refused.code) == (403, "PT403")
    assert refused.body["message"] == f"p_jobs[1]: document {theirs[0]} does not belong to you"
    options = api.call(owner.token, rpc.enqueue_jobs([(mine[0], {"payload": {"x": 1}})]))
    assert (options.status, options.code) == (403, "PT403")
    assert options.body["message"] == "p_jobs[0]: only the service role may set payload"
    anon = api.call(stack.anon_key, rpc.enqueue_jobs([mine[0]]))
    assert anon.status == 401
    assert job_row(admin_db, reply.body[0]["id"])["payload"] == {}
