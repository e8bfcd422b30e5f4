"""An app that enqueues while PostgREST or PostgreSQL restarts loses nothing (issue 19: a
producer saw 5,300-5,900 enqueue calls fail and dropped them). `QueueClient.enqueue`
retries transient failures within its budget (30 s by default); enqueue_job is idempotent
per document, so a retry after a lost answer queues nothing twice."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest

from supaworker import QueueClient
from supaworker_local import postgres
from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig
from tests.conftest import StackUser

pytestmark = [pytest.mark.stack, pytest.mark.chaos]


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "call_retried":
            self.count += 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("outage", ["postgrest", "postgres"])
def test_enqueue_through_a_restart_loses_nothing(
    stack: StackConfig,
    stack_env: dict[str, str],
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    outage: str,
) -> None:
    queue_name = unique("outage")
    user = make_user()
    with psycopg.connect(stack.admin_db_url, autocommit=True) as db:
        docs = [
            uuid.UUID(str(r[0]))
            for r in db.execute(
                "insert into public.user_documents (user_id, name, content)"
                " select %s, 'outage-' || g, 'x' from generate_series(1, 3000) g returning id",
                (user.id,),
            ).fetchall()
        ]
    retries = _Retries()
    logging.getLogger("supaworker.retry").addHandler(retries)
    stop = threading.Event()
    done: dict[uuid.UUID, uuid.UUID] = {}
    errors: list[BaseException] = []

    def produce() -> None:
        # One API server's request handler after another: each enqueue must succeed.
        with QueueClient.from_env(stack_env) as client:
            for doc in docs:
                if stop.is_set():
                    return
                try:
                    done[doc] = client.enqueue(doc, queue=queue_name).id
                except BaseException as exc:
                    errors.append(exc)
                    return
                time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(1.0)
        before = len(done)
        if outage == "postgrest":
            dev_stack.stop_postgrest(stack)
            time.sleep(3.0)
            dev_stack.start_postgrest(stack)
        else:
            postgres.stop(stack)
            time.sleep(3.0)
            postgres.start(stack)
        time.sleep(1.0)
    finally:
        stop.set()
        producer.join(60)
        logging.getLogger("supaworker.retry").removeHandler(retries)
        if not postgres.is_running(stack):
            postgres.start(stack)
        dev_stack.start_postgrest(stack)
    assert not producer.is_alive()
    assert errors == [], errors
    assert before > 0 and len(done) > before  # enqueues before, during and after the outage
    assert retries.count > 0, "the outage never reached an enqueue: the test proved nothing"
    with psycopg.connect(stack.admin_db_url, autocommit=True) as db:
        rows = db.execute(
            "select user_document_id, id from public.processing_queue where queue = %s",
            (queue_name,),
        ).fetchall()
    queued = {uuid.UUID(str(d)): uuid.UUID(str(j)) for d, j in rows}
    # Every document the app enqueued is queued, once, under the id the app was given.
    assert queued == done
    print(f"{outage}: {len(done)} enqueued, {retries.count} retried tries, 0 lost")
