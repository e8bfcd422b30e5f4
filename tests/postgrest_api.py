"""PostgREST through the gateway as a chosen caller (anon, a user, a queue admin,
service_role), with answers that keep their HTTP status, so a test can check exactly what
each caller gets.

`Api.call` sends a `supaworker.rpc` call (the names and parameters written once, in rpc.py)
through the product's sync transport. `Api.rpc` is the raw path, for what rpc.py does not
send on purpose: malformed or unknown arguments, and functions outside rpc.py (the
dashboard's `admin_*`). `Api.table` reads and writes tables (PostgREST's REST side).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError

from supaworker.exceptions import RpcError, ServerError
from supaworker.rpc import RpcCall
from supaworker.transport import SupabaseSyncTransport, last_http_status
from supaworker_local.config import StackConfig


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


class Api:
    """PostgREST through the gateway with a chosen bearer token; answers keep their status."""

    def __init__(self, stack: StackConfig) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=f"{stack.api_url}/rest/v1", timeout=30)
        self.transports: dict[str, SupabaseSyncTransport] = {}

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"apikey": self.stack.anon_key, "Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def call(self, token: str, call: RpcCall[Any]) -> Reply:
        """`call` as the holder of `token` (the anon key, a user JWT or the service key),
        through `SupabaseSyncTransport` as an app would send it. The body is the JSON the
        database answered (not parsed into models), an error's the PostgREST error body."""
        transport = self.transports.get(token)
        if transport is None:
            transport = SupabaseSyncTransport.connect(
                self.stack.api_url, self.stack.anon_key, access_token=token
            )
            self.transports[token] = transport
        try:
            body = transport.call(call.function, call.params)
        except (RpcError, ServerError) as exc:
            cause = exc.__cause__
            assert isinstance(cause, APIError), f"not an answer: {exc!r}"
            assert exc.status is not None
            return Reply(exc.status, cause.json())
        status = last_http_status()
        assert status is not None
        return Reply(status, body)

    def rpc(self, token: str | None, fn: str, params: dict[str, Any] | None = None) -> Reply:
        """RAW: a hand-written call, for arguments rpc.py would never send."""
        resp = self.http.post(f"/rpc/{fn}", json=params or {}, headers=self.headers(token))
        return Reply(resp.status_code, resp.json() if resp.content else None)

    def table(
        self, token: str | None, method: str, table: str, query: str = "", body: Any = None
    ) -> Reply:
        headers = self.headers(token) | {"Prefer": "return=representation"}
        resp = self.http.request(method, f"/{table}{query}", json=body, headers=headers)
        return Reply(resp.status_code, resp.json() if resp.content else None)

    def close(self) -> None:
        self.http.close()
        for transport in self.transports.values():
            transport.close()


@pytest.fixture()
def api(stack: StackConfig) -> Iterator[Api]:
    client = Api(stack)
    yield client
    client.close()
