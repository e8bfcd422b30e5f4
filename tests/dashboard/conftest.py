"""Helpers of the dashboard tests: raw PostgREST calls through the gateway that keep the HTTP
status, so each test can check exactly what anon, a user, a queue admin and service_role get."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from supaworker.dev.config import StackConfig


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


class Api:
    """PostgREST behind the gateway, called with the anon key and a chosen bearer token."""

    def __init__(self, stack: StackConfig) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=f"{stack.api_url}/rest/v1", timeout=30)

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "apikey": self.stack.anon_key,
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Prefer": "return=representation",
        }

    def rpc(self, token: str, fn: str, params: dict[str, Any] | None = None) -> Reply:
        resp = self.http.post(f"/rpc/{fn}", json=params or {}, headers=self._headers(token))
        return Reply(resp.status_code, resp.json() if resp.content else None)

    def table(
        self, token: str, method: str, table: str, query: str = "", body: Any = None
    ) -> Reply:
        resp = self.http.request(
            method, f"/{table}{query}", json=body, headers=self._headers(token)
        )
        return Reply(resp.status_code, resp.json() if resp.content else None)

    def close(self) -> None:
        self.http.close()


@pytest.fixture()
def api(stack: StackConfig) -> Iterator[Api]:
    client = Api(stack)
    yield client
    client.close()
