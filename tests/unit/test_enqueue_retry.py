"""`enqueue` rides out a passing outage (issue 19: 5,300-5,900 enqueues were dropped by a
producer during a PostgreSQL restart) and never retries a refusal. HTTP edge cases through
respx (the sync client) and a scripted loopback server (the async one); the real outage is
tests/ops/test_enqueue_outage.py."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import respx

from supaworker.client import AsyncQueueClient, QueueClient
from supaworker.exceptions import (
    ConfigurationError,
    ConnectionFailed,
    NotFound,
    PermissionDenied,
    ServerError,
)
from supaworker.retry import RetryPolicy
from supaworker.transport import AsyncRpcTransport, SupabaseSyncTransport
from tests.unit.scripted_server import DROP, HANG, Answer, scripted_server

URL = "http://queue.test"
RPC = f"{URL}/rest/v1/rpc/enqueue_job"
KEY = "service-key-for-tests"
DOC = uuid.UUID("6f1c1b8e-0000-4000-8000-000000000001")
FAST = RetryPolicy(within=2.0, first_delay=0.01, max_delay=0.05)


def _job_row() -> dict[str, Any]:
    now = "2026-12-01T00:00:00+00:00"
    return {
        "id": str(uuid.uuid4()),
        "user_document_id": str(DOC),
        "user_id": None,
        "queue": "default",
        "status": "pending",
        "priority": 0,
        "payload": {},
        "result": None,
        "error_message": None,
        "retry_count": 0,
        "attempt": 0,
        "max_attempts": 5,
        "run_at": now,
        "timeout_seconds": None,
        "requires": {},
        "progress_percent": None,
        "progress_message": None,
        "cancel_requested": False,
        "assigned_to": None,
        "assigned_at": None,
        "started_at": None,
        "completed_at": None,
        "created_at": now,
        "updated_at": now,
    }


# What a passing outage looks like from the client: each is followed by a success.
TRANSIENT = [
    httpx.ConnectError("connection refused"),
    httpx.ReadTimeout("no answer"),
    httpx.RemoteProtocolError("peer closed the connection"),
    httpx.Response(502, json={"message": "An invalid response was received from the upstream"}),
    httpx.Response(503, text="<html>Service Unavailable</html>"),
    httpx.Response(504, json={"message": "The upstream server is timing out"}),
    httpx.Response(503, json={"code": "PGRST001", "message": "Database client error."}),
    httpx.Response(503, json={"code": "PGRST003", "message": "Timed out acquiring connection"}),
    httpx.Response(503, json={"code": "57P01", "message": "terminating connection"}),
]
REFUSALS = [
    (httpx.Response(404, json={"code": "PT404", "message": "document not found"}), NotFound),
    (httpx.Response(401, json={"message": "Invalid API key"}), PermissionDenied),
    (httpx.Response(403, json={"code": "42501", "message": "permission denied"}), PermissionDenied),
]


def _sync() -> QueueClient:
    return QueueClient(SupabaseSyncTransport.connect(URL, KEY), enqueue_retry=FAST)


async def _async(url: str) -> AsyncQueueClient:
    transport = await AsyncRpcTransport.connect(url, KEY, timeout=httpx.Timeout(0.3, connect=1))
    return AsyncQueueClient(transport, enqueue_retry=FAST)


# The same outages as they reach the async client over a real socket.
ASYNC_TRANSIENT = [
    DROP,
    HANG,
    Answer.json({"message": "An invalid response was received from the upstream"}, 502),
    Answer(503, "<html>Service Unavailable</html>", "text/html"),
    Answer.json({"code": "PGRST003", "message": "Timed out acquiring connection"}, 504),
    Answer.json({"code": "57P01", "message": "terminating connection"}, 503),
]
ASYNC_REFUSALS = [
    (Answer.json({"code": "PT404", "message": "document not found"}, 404), NotFound),
    (Answer.json({"message": "Invalid API key"}, 401), PermissionDenied),
    (Answer.json({"code": "42501", "message": "permission denied"}, 403), PermissionDenied),
]


@respx.mock
@pytest.mark.parametrize("failure", TRANSIENT, ids=lambda f: type(f).__name__ + str(f)[:40])
def test_sync_enqueue_retries_a_transient_failure(failure: Any) -> None:
    route = respx.post(RPC)
    route.side_effect = [failure, failure, httpx.Response(200, json=_job_row())]
    job = _sync().enqueue(DOC)
    assert job.user_document_id == DOC
    assert route.call_count == 3
    # Every try sent the same call: the same document, so the database queues it once.
    bodies = {call.request.content for call in route.calls}
    assert len(bodies) == 1 and json.loads(bodies.pop())["p_user_document_id"] == str(DOC)


@pytest.mark.parametrize("failure", ASYNC_TRANSIENT, ids=str)
async def test_async_enqueue_retries_a_transient_failure(failure: Answer | str) -> None:
    async with scripted_server() as server:
        server.answer("enqueue_job", failure, Answer.json(_job_row()))
        client = await _async(server.url)
        job = await client.enqueue(DOC)
        await client.aclose()
    assert job.user_document_id == DOC
    assert server.calls("enqueue_job") == 2
    assert len(set(server.bodies["enqueue_job"])) == 1  # the same call both times


@respx.mock
@pytest.mark.parametrize(("answer", "error"), REFUSALS)
def test_a_refusal_is_never_retried(answer: httpx.Response, error: type[Exception]) -> None:
    route = respx.post(RPC).mock(return_value=answer)
    with pytest.raises(error):
        _sync().enqueue(DOC)
    assert route.call_count == 1


@pytest.mark.parametrize(("answer", "error"), ASYNC_REFUSALS)
async def test_async_a_refusal_is_never_retried(answer: Answer, error: type[Exception]) -> None:
    async with scripted_server() as server:
        server.answer("enqueue_job", answer)
        client = await _async(server.url)
        with pytest.raises(error):
            await client.enqueue(DOC)
        await client.aclose()
    assert server.calls("enqueue_job") == 1


@respx.mock
def test_an_outage_longer_than_the_budget_raises_the_last_error_in_time() -> None:
    route = respx.post(RPC).mock(side_effect=httpx.ConnectError("refused"))
    client = QueueClient(
        SupabaseSyncTransport.connect(URL, KEY),
        enqueue_retry=RetryPolicy(within=0.5, first_delay=0.05, max_delay=0.1),
    )
    began = time.monotonic()
    with pytest.raises(ConnectionFailed):
        client.enqueue(DOC)
    assert time.monotonic() - began <= 0.5 + 0.2
    assert route.call_count >= 4  # it did keep trying meanwhile


@respx.mock
def test_within_zero_tries_once() -> None:
    route = respx.post(RPC).mock(return_value=httpx.Response(503, json={"message": "down"}))
    client = QueueClient(SupabaseSyncTransport.connect(URL, KEY), enqueue_retry=RetryPolicy(0))
    with pytest.raises(ServerError):
        client.enqueue(DOC)
    assert route.call_count == 1


@respx.mock
def test_other_calls_are_not_retried() -> None:
    """Only enqueue is known to be idempotent; a retry or cancel raises at once."""
    route = respx.post(f"{URL}/rest/v1/rpc/retry_job").mock(side_effect=httpx.ConnectError("x"))
    with pytest.raises(ConnectionFailed):
        _sync().retry(DOC)
    assert route.call_count == 1


def test_the_budget_comes_from_the_environment() -> None:
    env = {"SUPABASE_URL": URL, "SUPABASE_SERVICE_ROLE_KEY": KEY}
    assert QueueClient.from_env(env).enqueue_retry.within == 30.0
    env["SUPAWORKER_ENQUEUE_RETRY_SECONDS"] = "5"
    assert QueueClient.from_env(env).enqueue_retry.within == 5.0
    env["SUPAWORKER_ENQUEUE_RETRY_SECONDS"] = "soon"
    with pytest.raises(ConfigurationError, match="SUPAWORKER_ENQUEUE_RETRY_SECONDS"):
        QueueClient.from_env(env)
