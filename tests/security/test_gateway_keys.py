"""The gateway keeps API keys to itself (issue 19): a key sent as `?apikey=` (as browsers'
EventSource and some SDKs do) reached PostgREST in the query, which read it as a filter or an
RPC argument and quoted it back in its error, e.g. "failed to parse filter (sb_secret_...)".
Supabase's gateway (Kong key-auth, hide_credentials) strips it; so does the local one."""

from __future__ import annotations

import httpx
import pytest

from supaworker_local.config import StackConfig

pytestmark = pytest.mark.stack

# Requests PostgREST answers with an error that quotes what it could not use: a filter it
# cannot parse, a function with an unknown argument, a table it does not have.
FAILING = [
    ("GET", "processing_queue?select=no_such_column"),
    ("GET", "processing_queue?id=eq.not-a-uuid&limit=1"),
    ("GET", "no_such_table"),
    ("GET", "rpc/get_job?p_job_id=not-a-uuid"),
    ("POST", "rpc/no_such_function"),
    ("GET", "user_documents?id=eq.not-a-uuid"),
]


def _keys(stack: StackConfig) -> dict[str, str]:
    return {
        "secret": stack.secret_key,
        "service_role": stack.service_role_key,
        "publishable": stack.publishable_key,
        "anon": stack.anon_key,
    }


@pytest.mark.parametrize("name", ["secret", "service_role", "publishable", "anon"])
def test_no_key_appears_in_any_error_body(stack: StackConfig, name: str) -> None:
    key = _keys(stack)[name]
    seen: list[int] = []
    with httpx.Client(base_url=f"{stack.api_url}/rest/v1", timeout=10) as http:
        for method, path in FAILING:
            joiner = "&" if "?" in path else "?"
            response = http.request(method, f"{path}{joiner}apikey={key}", json={})
            seen.append(response.status_code)
            assert key not in response.text, (method, path, response.text)
            # Not even a piece of it (an error may cut or re-quote a long value).
            assert key[-16:] not in response.text, (method, path, response.text)
    assert all(status >= 400 for status in seen), seen  # every request above is an error


def test_a_key_in_the_query_authenticates_and_is_no_argument(stack: StackConfig) -> None:
    """GET rpc/queue_stats?apikey=...: the key signs the call and is not taken for a
    parameter of queue_stats() (which has none: PGRST202 when the key was passed on)."""
    response = httpx.get(
        f"{stack.api_url}/rest/v1/rpc/queue_stats", params={"apikey": stack.secret_key}
    )
    assert response.status_code == 200, response.text
    assert "by_status" in response.json()
