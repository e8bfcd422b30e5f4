"""HTTP edge cases of the transports, which a real PostgREST cannot easily produce on demand:
timeouts, dropped connections, 5xx pages from a proxy, malformed bodies. The async transport
(aiohttp) meets them from a real loopback server scripted per test; the sync one (httpx)
through respx. (What PostgREST really answers is covered against the real stack in
tests/contract and tests/sql.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
import respx

from supaworker.client import AsyncQueueClient, QueueClient
from supaworker.exceptions import (
    ConnectionFailed,
    InvalidArgument,
    MalformedResponse,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
    RequestTimeout,
    ServerError,
)
from supaworker.transport import AsyncRpcTransport, SupabaseSyncTransport, last_http_status
from tests.unit.scripted_server import (
    DROP,
    HANG,
    Answer,
    ScriptedServer,
    closed_port_url,
    scripted_server,
)

URL = "http://queue.test"
RPC = f"{URL}/rest/v1/rpc/queue_stats"
KEY = "service-key-for-tests"
STATS = {"by_status": {}}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with scripted_server() as running:
        yield running


async def _client(url: str, *, read_timeout: float = 30.0) -> AsyncQueueClient:
    timeout = httpx.Timeout(read_timeout, connect=2.0)
    return AsyncQueueClient(await AsyncRpcTransport.connect(url, KEY, timeout=timeout))


async def test_read_timeout_means_outcome_unknown(server: ScriptedServer) -> None:
    server.answer("queue_stats", HANG)
    client = await _client(server.url, read_timeout=0.3)
    with pytest.raises(RequestTimeout) as info:
        await client.stats()
    await client.aclose()
    assert "outcome is unknown" in str(info.value)
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_refused_connection_is_connection_failed() -> None:
    client = await _client(closed_port_url())
    with pytest.raises(ConnectionFailed) as info:
        await client.stats()
    await client.aclose()
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


async def test_dropped_connection_mid_request_is_outcome_unknown(server: ScriptedServer) -> None:
    server.answer("queue_stats", DROP)
    client = await _client(server.url)
    with pytest.raises(RequestTimeout) as info:
        await client.stats()
    await client.aclose()
    assert "mid-request" in str(info.value)
    assert server.calls("queue_stats") == 1  # the request did arrive: the outcome is unknown


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, "<html>Bad Gateway</html>"),
        (503, '{"code":"PGRST001","message":"Database client error"}'),
        (504, '{"code":"PGRST003","message":"Timed out acquiring connection from pool."}'),
        (500, '{"code":"57014","message":"canceling statement due to statement timeout"}'),
        (503, ""),
    ],
)
async def test_server_errors_are_transient(server: ScriptedServer, status: int, body: str) -> None:
    server.answer("queue_stats", Answer(status, body))
    client = await _client(server.url)
    with pytest.raises(ServerError) as info:
        await client.stats()
    await client.aclose()
    assert info.value.status == status


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("22023", 400, InvalidArgument),
        ("22P02", 400, InvalidArgument),
        ("PT403", 403, PermissionDenied),
        ("42501", 401, PermissionDenied),
        ("PGRST301", 401, PermissionDenied),
        ("PT404", 404, NotFound),
        ("PT413", 413, PayloadTooLarge),
        ("PT429", 429, QuotaExceeded),
    ],
)
async def test_database_refusals_map_by_sqlstate(
    server: ScriptedServer, code: str, status: int, error: type[Exception]
) -> None:
    body = {"code": code, "message": "refused", "hint": "do this instead", "details": None}
    server.answer("queue_stats", Answer.json(body, status))
    client = await _client(server.url)
    with pytest.raises(error) as info:
        await client.stats()
    await client.aclose()
    assert "do this instead" in str(info.value)
    assert (info.value.code, info.value.status) == (code, status)  # type: ignore[attr-defined]


async def test_a_refused_key_at_the_gateway_is_permission_denied(server: ScriptedServer) -> None:
    server.answer("queue_stats", Answer.json({"message": "Invalid API key"}, 401))
    client = await _client(server.url)
    with pytest.raises(PermissionDenied) as info:
        await client.stats()
    await client.aclose()
    assert info.value.status == 401


async def test_unknown_function_says_to_apply_migrations(server: ScriptedServer) -> None:
    body = {"code": "PGRST202", "message": "Could not find the function", "details": "searched"}
    server.answer("queue_stats", Answer.json(body, 404))
    client = await _client(server.url)
    with pytest.raises(NotFound) as info:
        await client.stats()
    await client.aclose()
    assert "supabase db push" in str(info.value)


async def test_non_json_success_body_is_malformed(server: ScriptedServer) -> None:
    server.answer("queue_stats", Answer(200, "<html>captive portal</html>", "text/html"))
    client = await _client(server.url)
    with pytest.raises(MalformedResponse):
        await client.stats()
    await client.aclose()


async def test_wrong_shape_is_malformed_not_a_crash(server: ScriptedServer) -> None:
    server.answer("claim_next_job", Answer.json({"not": "a list"}), Answer.json([{"id": "x"}]))
    client = await _client(server.url)
    with pytest.raises(MalformedResponse):
        await client.claim("w1", 1, None)
    with pytest.raises(MalformedResponse):
        await client.claim("w1", 1, None)
    await client.aclose()


async def test_every_request_carries_the_key_and_the_params_as_json(
    server: ScriptedServer,
) -> None:
    server.answer("queue_stats", Answer.json(STATS))
    client = await _client(server.url)
    await client.stats()
    await client.aclose()
    request = server.requests["queue_stats"][-1]
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert isinstance(json.loads(server.bodies["queue_stats"][-1]), dict)


async def test_a_user_token_replaces_the_key_in_authorization(server: ScriptedServer) -> None:
    server.answer("queue_stats", Answer.json(STATS))
    transport = await AsyncRpcTransport.connect(server.url, KEY, access_token="user-jwt")
    await AsyncQueueClient(transport).stats()
    await transport.aclose()
    request = server.requests["queue_stats"][-1]
    assert (request.headers["apikey"], request.headers["authorization"]) == (KEY, "Bearer user-jwt")


async def test_the_async_status_of_a_success_is_known_too(server: ScriptedServer) -> None:
    """A void function answers 204, a value 200: a permission matrix needs to tell them."""
    server.answer("deregister_worker", Answer(204))
    server.answer("queue_stats", Answer.json(STATS))
    client = await _client(server.url)
    await client.deregister_worker("w1")
    assert last_http_status() == 204
    await client.stats()
    assert last_http_status() == 200
    await client.aclose()


@respx.mock
def test_sync_client_translates_the_same_way() -> None:
    respx.post(RPC).mock(side_effect=httpx.ReadTimeout("slow"))
    client = QueueClient(SupabaseSyncTransport.connect(URL, KEY))
    with pytest.raises(RequestTimeout):
        client.stats()
    client.close()


@respx.mock
def test_the_sync_status_of_a_success_is_known_too() -> None:
    respx.post(f"{URL}/rest/v1/rpc/deregister_worker").mock(return_value=httpx.Response(204))
    sync = SupabaseSyncTransport.connect(URL, KEY)
    sync.call("deregister_worker", {"p_worker_id": "w1"})
    assert last_http_status() == 204
    sync.close()


def _pgrst(code: str, message: str) -> str:
    """An error body as PostgREST writes it: all four keys, hint and details null when empty
    (older postgrest-py versions refuse a body without them)."""
    return json.dumps({"code": code, "message": message, "hint": None, "details": None})


@respx.mock
@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (502, "<html>Bad Gateway</html>", ServerError),
        (
            504,
            _pgrst("PGRST003", "Timed out acquiring a connection"),
            ServerError,
        ),
        (
            400,
            _pgrst("22P02", "invalid input syntax for type uuid"),
            InvalidArgument,
        ),
        (
            429,
            _pgrst("PT429", "max_pending_per_user is 5"),
            QuotaExceeded,
        ),
        (401, '{"message":"Invalid API key"}', PermissionDenied),
        (
            404,
            _pgrst("PGRST202", "Could not find the function"),
            NotFound,
        ),
    ],
)
def test_the_sync_transport_maps_answers_as_the_async_one(
    status: int, body: str, error: type[Exception]
) -> None:
    respx.post(RPC).mock(return_value=httpx.Response(status, text=body))
    client = QueueClient(SupabaseSyncTransport.connect(URL, KEY))
    with pytest.raises(error) as info:
        client.stats()
    client.close()
    assert info.value.status == status  # type: ignore[attr-defined]
