"""HTTP edge cases of the transport, which a real server cannot easily produce on demand:
timeouts, dropped connections, 5xx pages from a proxy, malformed bodies. (What PostgREST
really answers is covered against the real stack in tests/contract and tests/sql.)"""

from __future__ import annotations

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
from supaworker.transport import SupabaseAsyncTransport, SupabaseSyncTransport, last_http_status

URL = "http://queue.test"
RPC = f"{URL}/rest/v1/rpc/queue_stats"
KEY = "service-key-for-tests"


async def _client() -> AsyncQueueClient:
    return AsyncQueueClient(await SupabaseAsyncTransport.connect(URL, KEY))


@respx.mock
async def test_read_timeout_means_outcome_unknown() -> None:
    respx.post(RPC).mock(side_effect=httpx.ReadTimeout("slow"))
    client = await _client()
    with pytest.raises(RequestTimeout) as info:
        await client.stats()
    assert "outcome is unknown" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


@respx.mock
async def test_refused_connection_is_connection_failed() -> None:
    respx.post(RPC).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ConnectionFailed):
        await (await _client()).stats()


@respx.mock
async def test_dropped_connection_mid_request_is_outcome_unknown() -> None:
    respx.post(RPC).mock(side_effect=httpx.RemoteProtocolError("peer closed"))
    with pytest.raises(RequestTimeout):
        await (await _client()).stats()


@respx.mock
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, "<html>Bad Gateway</html>"),
        (503, '{"code":"PGRST001","message":"Database client error"}'),
        (504, '{"code":"PGRST003","message":"Timed out acquiring connection from pool."}'),
        (500, '{"code":"57014","message":"canceling statement due to statement timeout"}'),
    ],
)
async def test_server_errors_are_transient(status: int, body: str) -> None:
    respx.post(RPC).mock(return_value=httpx.Response(status, text=body))
    with pytest.raises(ServerError) as info:
        await (await _client()).stats()
    assert info.value.status == status


@respx.mock
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
    code: str, status: int, error: type[Exception]
) -> None:
    body = {"code": code, "message": "refused", "hint": "do this instead", "details": None}
    respx.post(RPC).mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(error) as info:
        await (await _client()).stats()
    assert "do this instead" in str(info.value)
    assert (info.value.code, info.value.status) == (code, status)  # type: ignore[attr-defined]


@respx.mock
async def test_unknown_function_says_to_apply_migrations() -> None:
    body = {
        "code": "PGRST202",
        "message": "Could not find the function",
        "hint": None,
        "details": "searched",
    }
    respx.post(RPC).mock(return_value=httpx.Response(404, json=body))
    with pytest.raises(NotFound) as info:
        await (await _client()).stats()
    assert "supabase db push" in str(info.value)


@respx.mock
async def test_non_json_success_body_is_malformed() -> None:
    respx.post(RPC).mock(return_value=httpx.Response(200, text="<html>captive portal</html>"))
    with pytest.raises(MalformedResponse):
        await (await _client()).stats()


@respx.mock
async def test_wrong_shape_is_malformed_not_a_crash() -> None:
    respx.post(f"{URL}/rest/v1/rpc/claim_next_job").mock(
        return_value=httpx.Response(200, json={"not": "a list"})
    )
    with pytest.raises(MalformedResponse):
        await (await _client()).claim("w1", 1, None)
    respx.post(f"{URL}/rest/v1/rpc/claim_next_job").mock(
        return_value=httpx.Response(200, json=[{"id": "not-a-uuid"}])
    )
    with pytest.raises(MalformedResponse):
        await (await _client()).claim("w1", 1, None)


@respx.mock
async def test_every_request_carries_the_key() -> None:
    route = respx.post(RPC).mock(return_value=httpx.Response(200, json={"by_status": {}}))
    await (await _client()).stats()
    request = route.calls.last.request
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"


@respx.mock
def test_sync_client_translates_the_same_way() -> None:
    respx.post(RPC).mock(side_effect=httpx.ReadTimeout("slow"))
    client = QueueClient(SupabaseSyncTransport.connect(URL, KEY))
    with pytest.raises(RequestTimeout):
        client.stats()
    client.close()


@respx.mock
async def test_the_status_of_a_success_is_known_too() -> None:
    """A void function answers 204, a value 200: a permission matrix needs to tell them."""
    respx.post(f"{URL}/rest/v1/rpc/deregister_worker").mock(return_value=httpx.Response(204))
    respx.post(RPC).mock(return_value=httpx.Response(200, json={"by_status": {}}))
    client = await _client()
    await client.deregister_worker("w1")
    assert last_http_status() == 204
    await client.stats()
    assert last_http_status() == 200
    sync = SupabaseSyncTransport.connect(URL, KEY)
    sync.call("deregister_worker", {"p_worker_id": "w1"})
    assert last_http_status() == 204
    sync.close()
