"""The API as an attacker sees it: every function PostgREST exposes, called with the anon key
and with a signed-in user's token; the private schema; tokens that are expired, forged,
unsigned, re-signed or carry a role PostgREST must not switch to.

The function list is read from the catalog, so a function added later is swept too (the
hand-written matrix with expected statuses per role is tests/sql/test_permissions.py; the
queue-admin cells are tests/dashboard/test_admin_api.py). Each refused call must change
nothing: the queue's tables are fingerprinted before and after.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.postgrest_api import Api
from tests.security.state import Db, fingerprint

pytestmark = pytest.mark.stack

# Functions a signed-in user may execute; each checks ownership or the queue-admin claim
# inside and answers PT403 / PT404 to a user who is neither owner nor admin.
USER_CALLABLE = {"enqueue_job", "cancel_job", "enqueue_jobs"}


def _value(sql_type: str) -> Any:
    """A well-typed argument, so that PostgREST finds the function and the database decides."""
    return {
        "uuid": str(uuid.uuid4()),
        "text": "x",
        "integer": 1,
        "numeric": 1,
        "boolean": True,
        "jsonb": {},
        "interval": "1 hour",
        "timestamp with time zone": datetime.now(UTC).isoformat(),
        "text[]": ["x"],
        "uuid[]": [],
    }[sql_type]


def exposed_functions(admin_db: Db) -> list[tuple[str, dict[str, Any]]]:
    """Every function in `public` with a value for each argument without a default."""
    rows = admin_db.execute(
        """
        select p.proname, p.pronargs - p.pronargdefaults, coalesce(p.proargnames, '{}'),
               array(select format_type(t, null) from unnest(p.proargtypes) t)
          from pg_proc p
         where p.pronamespace = 'public'::regnamespace and p.prokind = 'f'
         order by p.proname
        """
    ).fetchall()
    functions = []
    for name, required, arg_names, arg_types in rows:
        assert isinstance(arg_names, list) and isinstance(arg_types, list)
        params = {arg_names[i]: _value(arg_types[i]) for i in range(int(str(required)))}
        functions.append((str(name), params))
    return functions


def test_every_exposed_function_refuses_anon_and_users(
    api: Api, admin_db: Db, make_user: Callable[..., StackUser], stack: StackConfig
) -> None:
    user = make_user()
    functions = exposed_functions(admin_db)
    assert len(functions) >= 27, [f for f, _ in functions]  # queue, operator reads, admin_*
    before = fingerprint(admin_db)
    answers: dict[tuple[str, str], tuple[int, str | None]] = {}
    for name, params in functions:
        for who, token in (("anon", stack.anon_key), ("user", user.token)):
            reply = api.rpc(token, name, params)
            answers[(name, who)] = (reply.status, reply.code)
            refused = isinstance(reply.body, dict) and reply.body.get("message")
            assert refused, (name, who, reply.status, reply.body)
    for (name, who), (status, code) in answers.items():
        if who == "anon":
            expected = {(401, "42501")}  # no function is executable by anon
        elif name == "enqueue_jobs":
            expected = {(400, "22023")}  # {} is not an array of documents: checked first
        elif name in USER_CALLABLE:
            expected = {(404, "PT404")}  # a random id: not found (own rows only otherwise)
        elif name.startswith("admin_"):
            expected = {(403, "PT403")}  # not a queue admin
        else:
            expected = {(403, "42501")}  # service role only
        assert (status, code) in expected, (name, who, status, code)
    assert fingerprint(admin_db) == before


def test_private_schema_is_not_reachable(api: Api, stack: StackConfig) -> None:
    """The reaper, the backoff and the triggers live in supaworker_private, which PostgREST
    does not expose; asking for it by profile header is refused before any SQL runs."""
    for token in (stack.anon_key, stack.service_role_key):
        resp = api.http.post(
            "/rpc/reap",
            json={},
            headers=api.headers(token) | {"Content-Profile": "supaworker_private"},
        )
        assert resp.status_code == 406, resp.text
        assert resp.json()["code"] == "PGRST106"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged_tokens(stack: StackConfig, user: StackUser) -> dict[str, str]:
    header, _payload, signature = user.token.split(".")
    claims = keys.decode(stack.jwt_secret, user.token)
    escalated = claims | {"role": "service_role"}
    return {
        # {"alg": "none"}: the classic signature bypass.
        "unsigned_service_role": _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(escalated) + ".",
        # The user's own token with the role changed and the signature kept.
        "tampered_role": f"{header}.{_b64(escalated)}.{signature}",
        # Signed with the public anon key as the HMAC secret (key confusion).
        "signed_with_anon_key": keys.mint(stack.anon_key, "service_role"),
        "expired_service_role": keys.mint(stack.jwt_secret, "service_role", ttl=-120),
        "other_project_service_role": keys.service_role_key(
            "another-projects-secret-at-least-32-characters"
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "unsigned_service_role",
        "tampered_role",
        "signed_with_anon_key",
        "expired_service_role",
        "other_project_service_role",
    ],
)
def test_forged_tokens_get_401_and_change_nothing(
    api: Api, admin_db: Db, make_user: Callable[..., StackUser], stack: StackConfig, kind: str
) -> None:
    user = make_user()
    token = forged_tokens(stack, user)[kind]
    before = fingerprint(admin_db)
    for fn in ("queue_stats", "retry_failed_jobs"):
        reply = api.rpc(token, fn, {})
        assert (reply.status, reply.code) == (401, "PGRST301"), (kind, fn, reply.body)
    reply = api.table(token, "GET", "processing_queue", query="?limit=1")
    assert reply.status == 401, reply.body
    assert fingerprint(admin_db) == before


@pytest.mark.parametrize(
    ("role", "status", "code"),
    [
        ("postgres", 403, "42501"),
        ("supabase_admin", 403, "42501"),
        ("authenticator", 403, "42501"),
        ("no_such_role", 400, "22023"),
    ],
)
def test_validly_signed_token_for_a_non_api_role_is_refused(
    api: Api, admin_db: Db, stack: StackConfig, role: str, status: int, code: str
) -> None:
    """Even a token signed with the project's secret cannot make PostgREST act as the
    migration owner or the superuser: `authenticator` may only switch to the API roles.
    (Whoever holds the JWT secret can still mint a service_role token: it is the project's
    root secret and never leaves the server.)"""
    token = keys.mint(stack.jwt_secret, role)
    before = fingerprint(admin_db)
    reply = api.rpc(token, "retry_failed_jobs", {})
    assert (reply.status, reply.code) == (status, code), (role, reply.body)
    assert fingerprint(admin_db) == before
