"""Fixtures for the edge-function tests: callers that go through supabase-py's
`functions.invoke` and keep the raw responses (invoke itself returns only the body)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from supabase import ClientOptions, create_client
from supabase_functions.errors import FunctionsHttpError

from supaworker_local.config import StackConfig

FUNCTIONS = ("enqueue-document", "job-status")


@dataclass
class Call:
    status: int
    body: Any
    headers: httpx.Headers


class FunctionsCaller:
    """A supabase-py client (anon key + optional user token) whose responses are recorded, so
    a test sees the status and full body of what `functions.invoke` returned or raised."""

    def __init__(self, stack: StackConfig, token: str | None = None, key: str | None = None):
        self.responses: list[httpx.Response] = []
        self.http = httpx.Client(timeout=30, event_hooks={"response": [self._record]})
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        options = ClientOptions(
            headers=headers,
            httpx_client=self.http,
            auto_refresh_token=False,
            persist_session=False,
        )
        self.client = create_client(stack.api_url, key or stack.anon_key, options)

    def _record(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    def invoke(
        self,
        name: str,
        body: Any = None,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> Call:
        options: dict[str, Any] = {
            "method": method,
            "responseType": "json",
            "headers": headers or {},
        }
        if body is not None:
            options["body"] = body
        try:
            self.client.functions.invoke(name, options)
        except FunctionsHttpError as exc:
            assert exc.status == self.responses[-1].status_code
        last = self.responses[-1]
        payload = (
            last.json()
            if last.content and "json" in last.headers.get("content-type", "")
            else last.text
        )
        return Call(last.status_code, payload, last.headers)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="session")
def functions_ready(stack: StackConfig) -> StackConfig:
    """Wait for every function's first start (a clean machine downloads supabase-js from npm
    then), so the tests' own timeouts measure the functions, not Deno's cache."""
    with httpx.Client(timeout=180) as http:
        for name in FUNCTIONS:
            resp = http.options(f"{stack.api_url}/functions/v1/{name}")
            assert resp.status_code == 200, (name, resp.status_code, resp.text)
    return stack


@pytest.fixture()
def caller(functions_ready: StackConfig) -> Iterator[Callable[..., FunctionsCaller]]:
    made: list[FunctionsCaller] = []

    def factory(token: str | None = None, key: str | None = None) -> FunctionsCaller:
        made.append(FunctionsCaller(functions_ready, token, key))
        return made[-1]

    yield factory
    for item in made:
        item.close()
