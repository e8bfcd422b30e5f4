"""Raw PostgREST calls through the gateway that keep the HTTP status, so a test can check
exactly what anon, a user, a queue admin and service_role each get."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

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

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"apikey": self.stack.anon_key, "Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def rpc(self, token: str | None, fn: str, params: dict[str, Any] | None = None) -> Reply:
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


@pytest.fixture()
def api(stack: StackConfig) -> Iterator[Api]:
    client = Api(stack)
    yield client
    client.close()
