"""HTTP: how an `RpcCall` reaches PostgREST, and how failures come back.

This is the only module that knows HTTP. Two transports speak the same `POST
/rest/v1/rpc/<function>` with the same headers:

- `AsyncRpcTransport` (aiohttp): what `AsyncQueueClient` and so the worker use. An RPC is
  most of what a worker and an enqueueing API server do, and aiohttp spends about a quarter
  of httpx's CPU per request (bench/http_client.py); aiohttp is a dependency already (the
  worker's own HTTP port).
- `SupabaseSyncTransport` (supabase-py's sync client, httpx): `QueueClient` and the CLI, and
  the tests that act as a signed-in user through a supabase-py client.

Every lower-level failure (aiohttp or httpx errors, PostgREST error bodies) becomes a
`supaworker.exceptions` error, keeping the cause chained:

- nothing was sent (connect refused, DNS)             -> ConnectionFailed  (safe to retry)
- sent, no answer (read timeout, dropped connection)  -> RequestTimeout    (outcome unknown)
- 5xx / pool timeout / database unavailable           -> ServerError
- a refusal by the database (SQLSTATE)                -> RpcError subclasses by code

Errors with an answer carry its HTTP status (`status`); `last_http_status()` gives it for
successes too (a permission matrix tells 200 from 204 from 401 from 403).
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import aiohttp
import certifi
import httpx
from postgrest.exceptions import APIError
from supabase import (
    AsyncClient,
    AsyncClientOptions,
    Client,
    ClientOptions,
    acreate_client,
    create_client,
)

import supaworker
from supaworker.exceptions import (
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    InvalidArgument,
    MalformedResponse,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
    RequestTimeout,
    RpcError,
    ServerError,
)
from supaworker.rpc import RpcCall

T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

# PostgREST's own codes for "the database is not reachable right now" (HTTP 503/504).
_UNAVAILABLE = {"PGRST000", "PGRST001", "PGRST002", "PGRST003"}
_BY_CODE: dict[str, type[RpcError]] = {
    "22023": InvalidArgument,
    "22P02": InvalidArgument,  # invalid input syntax (a non-UUID id)
    "22007": InvalidArgument,  # invalid datetime
    "PGRST102": InvalidArgument,  # invalid JSON body
    "42501": PermissionDenied,
    "PGRST301": PermissionDenied,
    "PGRST302": PermissionDenied,
    "PT401": PermissionDenied,
    "PT403": PermissionDenied,
    "PT404": NotFound,
    "PT409": Conflict,
    "PT413": PayloadTooLarge,
    "PT429": QuotaExceeded,
    "401": PermissionDenied,
    "403": PermissionDenied,
    "404": NotFound,
}


# supabase-py hands back the body only; the status is caught by an httpx response hook. A
# context variable, not an attribute, so that threads (sync) and tasks (async) sharing one
# transport each see the status of their own request.
_http_status: ContextVar[int | None] = ContextVar("supaworker_http_status", default=None)


def last_http_status() -> int | None:
    """The HTTP status of the latest answer a transport made by `connect()` received in this
    thread or task (None before any, or when nothing came back)."""
    return _http_status.get()


def _remember_status(response: httpx.Response) -> None:
    _http_status.set(response.status_code)


class AsyncTransport(Protocol):
    async def call(self, function: str, params: Mapping[str, Any]) -> Any: ...

    async def aclose(self) -> None: ...


class SyncTransport(Protocol):
    def call(self, function: str, params: Mapping[str, Any]) -> Any: ...

    def close(self) -> None: ...


async def execute(transport: AsyncTransport, call: RpcCall[T]) -> T:
    return call.parse(await transport.call(call.function, call.params))


def execute_sync(transport: SyncTransport, call: RpcCall[T]) -> T:
    return call.parse(transport.call(call.function, call.params))


# The API gateway (Kong on Supabase, supaworker_local/gateway.py locally) answers a key it does
# not accept with 401 {"message": "Invalid API key"} or "No API key found in request", and no
# code: that is a refused key, not an outage to wait out.
_GATEWAY_KEY_REFUSALS = ("invalid api key", "no api key found")


def translate_api_error(function: str, exc: APIError, *, status: int | None = None) -> Exception:
    """Map a PostgREST error (as postgrest-py raises it) to the most specific supaworker
    error."""
    # Older postgrest-py versions give a gateway's bare HTTP status as an int.
    return translate_refusal(
        function,
        code=str(exc.code or ""),
        message=exc.message,
        hint=exc.hint,
        details=exc.details,
        status=status,
    )


def translate_refusal(
    function: str,
    *,
    code: str,
    message: str | None,
    hint: str | None,
    details: object,
    status: int | None,
) -> Exception:
    """Map a PostgREST error body's fields and the answer's HTTP status to the most specific
    supaworker error."""
    message = message or "request failed"
    if not code and message.lower().startswith(_GATEWAY_KEY_REFUSALS):
        return PermissionDenied(
            f"{function}: {message}", code="401", hint=hint, status=status or 401
        )
    http_5xx = code.isdigit() and code.startswith("5")
    if not code or http_5xx or code in _UNAVAILABLE or code.startswith(("08", "53", "57")):
        return ServerError(f"{function}: {message} ({code or 'no code'})", status=status)
    if code == "PGRST202":
        return NotFound(
            f"The database has no function {function}() with these arguments: apply the "
            "migrations (supabase db push) that match this supaworker version",
            code=code,
            hint=hint,
            details=str(details or ""),
            status=status,
        )
    cls = _BY_CODE.get(code, RpcError)
    return cls(message, code=code, hint=hint, details=str(details or "") or None, status=status)


def _refusal_from_body(function: str, status: int, content: bytes) -> Exception:
    """An error answer: PostgREST's JSON body when it is one, else (a proxy's page, an empty
    body) what postgrest-py makes of it: the HTTP status as the code."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"code": str(status), "message": content.decode(errors="replace")[:300] or None}
    return translate_refusal(
        function,
        code=str(body.get("code") or ""),
        message=body.get("message"),
        hint=body.get("hint"),
        details=body.get("details"),
        status=status,
    )


# Failures of either HTTP library, by what they say about the request's outcome.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)
_NO_ANSWER_IN_TIME = (httpx.TimeoutException, TimeoutError)  # aiohttp's timeouts are these


def _translate_transport(function: str, exc: Exception) -> Exception:
    """An httpx or aiohttp failure: not sent (safe to retry), no answer in time, or a
    connection lost mid-request (both: the outcome is unknown)."""
    if isinstance(exc, _NOT_SENT):
        return ConnectionFailed(f"{function}: cannot reach the Supabase API ({exc})")
    if isinstance(exc, _NO_ANSWER_IN_TIME):
        return RequestTimeout(f"{function}: no answer in time; the outcome is unknown ({exc!r})")
    return RequestTimeout(f"{function}: the connection failed mid-request ({exc!r})")


def _check_settings(url: str, key: str) -> None:
    if not url or not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            "SUPABASE_URL is missing or not an http(s) URL (e.g. https://<ref>.supabase.co)"
        )
    if not key:
        raise ConfigurationError("No API key: set SUPABASE_SERVICE_ROLE_KEY or SUPABASE_SECRET_KEY")


def _aiohttp_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    # httpx's read timeout is per read, as aiohttp's sock_read; neither bounds the whole call.
    return aiohttp.ClientTimeout(total=None, connect=timeout.connect, sock_read=timeout.read)


def _env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url`, as httpx honours them. Read once:
    aiohttp's own `trust_env` reads the environment and ~/.netrc again on every request."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class AsyncRpcTransport:
    """Calls `POST /rest/v1/rpc/<function>` with aiohttp, as supabase-py would.

    Never retries: a claim is not idempotent. Retries belong to the caller, which knows
    whether the outcome matters. The session is made in `connect()`, inside the event loop
    that will use it.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, *, proxy: str | None = None):
        self._session = session
        self._rpc_url = f"{url.rstrip('/')}/rest/v1/rpc/"
        self._proxy = proxy

    @classmethod
    async def connect(
        cls,
        url: str,
        key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        access_token: str | None = None,
    ) -> AsyncRpcTransport:
        _check_settings(url, key)
        headers = {
            "apikey": key,
            "Authorization": f"Bearer {access_token or key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Client-Info": f"supaworker-py/{supaworker.__version__}",
        }
        session = aiohttp.ClientSession(
            timeout=_aiohttp_timeout(timeout),
            # The CA bundle httpx (supabase-py) trusts, so both transports accept the same
            # servers whatever the host's own store holds.
            connector=aiohttp.TCPConnector(
                limit=64, ssl=ssl.create_default_context(cafile=certifi.where())
            ),
            headers=headers,
            # PostgREST sets no cookies.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return cls(session, url, proxy=_env_proxy(url))

    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        _http_status.set(None)
        body = json.dumps(params, separators=(",", ":")).encode()
        try:
            async with self._session.post(
                self._rpc_url + function, data=body, proxy=self._proxy
            ) as response:
                status = response.status
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate_transport(function, exc) from exc
        _http_status.set(status)
        if not 200 <= status < 300:
            raise _refusal_from_body(function, status, content)
        if not content:
            return []  # a void function (204), as postgrest-py reports it
        try:
            return json.loads(content)
        except ValueError as exc:  # a 2xx body that is not JSON (a captive portal)
            raise MalformedResponse(f"{function}: the answer is not JSON") from exc

    async def aclose(self) -> None:
        await self._session.close()


class HandlerClient:
    """The async supabase-py client a handler gets as `ctx.supabase` (Storage downloads,
    table reads), with its own httpx connections: the queue's RPCs do not go through it."""

    def __init__(self, client: AsyncClient, http: httpx.AsyncClient) -> None:
        self.client = client
        self._http = http

    @classmethod
    async def connect(cls, url: str, key: str) -> HandlerClient:
        _check_settings(url, key)
        http = httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
        options = AsyncClientOptions(
            httpx_client=http, auto_refresh_token=False, persist_session=False
        )
        return cls(await acreate_client(url, key, options), http)

    async def aclose(self) -> None:
        await self._http.aclose()


class SupabaseSyncTransport:
    """Calls `POST /rest/v1/rpc/<function>` with supabase-py's sync client.

    supabase-py never retries POST RPCs, which is right (see `AsyncRpcTransport`)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def connect(
        cls,
        url: str,
        key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        access_token: str | None = None,
    ) -> SupabaseSyncTransport:
        _check_settings(url, key)
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        http = httpx.Client(timeout=timeout, event_hooks={"response": [_remember_status]})
        options = ClientOptions(
            headers=headers, httpx_client=http, auto_refresh_token=False, persist_session=False
        )
        return cls(create_client(url, key, options))

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        _http_status.set(None)
        try:
            response = self.client.rpc(function, dict(params)).execute()
        except APIError as exc:
            raise translate_api_error(function, exc, status=_http_status.get()) from exc
        except httpx.HTTPError as exc:
            raise _translate_transport(function, exc) from exc
        except ValueError as exc:
            raise MalformedResponse(f"{function}: the answer is not JSON") from exc
        return response.data

    def close(self) -> None:
        http = self.client.options.httpx_client
        if http is not None:
            http.close()
