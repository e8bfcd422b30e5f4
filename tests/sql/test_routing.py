"""Routing by numbers in `requires` (issue 18): comparisons (gte, lte, eq, in) in the claim's
immutable helper, the same answers from the Python model, enqueue's check of malformed
comparisons, and queue_stats' pending jobs that no live worker can take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from supaworker import rpc
from supaworker.exceptions import InvalidArgument
from supaworker.models import requires_met
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Svc, make_documents, make_stale, sql_enqueue

pytestmark = pytest.mark.stack

MB = 1048576
CAPS = {"max_file_size": 10 * MB, "supports_edge_fallback": True, "lang": "de", "langs": ["de"]}
CASES: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"max_file_size": {"gte": 10 * MB}}, True),
    ({"max_file_size": {"gte": 20 * MB}}, False),
    ({"max_file_size": {"lte": 10 * MB}}, True),
    ({"max_file_size": {"lte": 5 * MB}}, False),
    ({"max_file_size": {"gte": 1, "lte": 20 * MB}}, True),
    ({"max_file_size": {"eq": 10 * MB}}, True),
    ({"max_file_size": {"eq": 10.0 * MB}}, True),  # jsonb: 1 = 1.0
    ({"max_file_size": {"eq": 1}}, False),
    ({"lang": {"in": ["en", "de"]}}, True),
    ({"lang": {"in": ["en", "fr"]}}, False),
    ({"lang": {"gte": 1}}, False),  # not a number
    ({"gpu_memory": {"gte": 1}}, False),  # no such capability
    ({"supports_edge_fallback": True}, True),  # containment, as before
    ({"supports_edge_fallback": False}, False),
    ({"langs": ["de"]}, True),
    ({"supports_edge_fallback": True, "max_file_size": {"gte": 20 * MB}}, False),
]


@pytest.mark.parametrize(("requires", "met"), CASES)
def test_requires_met_in_sql_and_in_python(
    admin_db: Admin, requires: dict[str, Any], met: bool
) -> None:
    row = admin_db.execute(
        "select supaworker_private.requires_met(%s, %s)", (Jsonb(requires), Jsonb(CAPS))
    ).fetchone()
    assert row == (met,)
    assert requires_met(CAPS, requires) is met


def test_a_big_document_goes_to_the_worker_that_can_take_it(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("route")
    user = make_user()
    small, big = make_documents(admin_db, user, 2)
    (big_job,) = sql_enqueue(admin_db, [big], queue, requires={"max_file_size": {"gte": 20 * MB}})
    (small_job,) = sql_enqueue(admin_db, [small], queue)
    seed = unique("w-seed")
    svc.register(seed, slots=5, queues=[queue], capabilities=CAPS)
    assert [j["id"] for j in svc.claim(seed, 5)] == [str(small_job)]
    large = unique("w-large")
    svc.register(large, slots=5, queues=[queue], capabilities={"max_file_size": 50 * MB})
    assert [j["id"] for j in svc.claim(large, 5)] == [str(big_job)]


@pytest.mark.parametrize(
    ("requires", "message"),
    [
        ({"max_file_size": {"gte": "20MB"}}, "p_requires.max_file_size: gte and lte take a number"),
        ({"lang": {"in": []}}, "p_requires.lang: in takes a non-empty array"),
        ({"lang": {"in": "de"}}, "p_requires.lang: in takes a non-empty array"),
        ({"size": {"gte": 1, "unit": "b"}}, "p_requires.size mixes comparisons"),
    ],
)
def test_a_malformed_comparison_is_refused_at_enqueue(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    requires: dict[str, Any],
    message: str,
) -> None:
    (doc,) = make_documents(admin_db, make_user(), 1)
    with pytest.raises(InvalidArgument) as refused:
        svc.call(rpc.enqueue_job(doc, queue=unique("bad-route"), requires=requires))
    assert refused.value.code == "22023"
    assert message in str(refused.value)


def test_queue_stats_counts_pending_jobs_no_live_worker_can_take(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("stuck")
    user = make_user()
    docs = make_documents(admin_db, user, 3)
    sql_enqueue(admin_db, docs[:2], queue, requires={"max_file_size": {"gte": 20 * MB}})
    # Requires on every job, so that live workers of other tests (serving every queue with
    # other capabilities) cannot take any of them.
    sql_enqueue(admin_db, docs[2:], queue, requires={"lang": {"eq": "de"}})

    def stuck() -> int | None:
        value: int | None = svc.call(rpc.queue_stats())["no_capable_worker"].get(queue)
        return value

    assert stuck() == 3  # no capable worker at all
    seed = unique("w-stuck")
    svc.register(seed, slots=1, queues=[queue], capabilities=CAPS)
    assert stuck() == 2  # the seed worker takes the small one, not the big ones
    large = unique("w-big")
    svc.register(large, slots=1, queues=[queue], capabilities={"max_file_size": 50 * MB})
    assert stuck() is None
    make_stale(admin_db, large)  # a dead worker is no capable worker
    assert stuck() == 2
