"""Shared fixtures: one local stack per test session, brought up by the same code as
`supaworker dev up`, on its own ports and state folder so it never touches a developer's stack.

Isolation between tests: the stack is shared, so every test uses fresh users, documents,
worker ids and queue names (see `unique`); nothing a test does is visible to another.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from supabase import Client, ClientOptions, create_client

from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig

pytest_plugins = ["tests.worker_fixtures", "tests.realtime.js_clients"]

ROOT = Path(__file__).resolve().parents[1]
TEST_STATE_DIR = Path(os.environ.get("SUPAWORKER_TEST_STATE_DIR", ROOT / ".supaworker-test"))
TEST_PORTS = {
    "db_port": int(os.environ.get("SUPAWORKER_TEST_DB_PORT", "55322")),
    "api_port": int(os.environ.get("SUPAWORKER_TEST_API_PORT", "55321")),
    "postgrest_port": int(os.environ.get("SUPAWORKER_TEST_POSTGREST_PORT", "55330")),
    "postgrest_admin_port": int(os.environ.get("SUPAWORKER_TEST_POSTGREST_PORT", "55330")) + 1,
}


@pytest.fixture(scope="session")
def stack() -> Iterator[StackConfig]:
    os.environ.setdefault("SUPAWORKER_PROJECT_DIR", str(ROOT))
    config = dev_stack.up(TEST_STATE_DIR, **TEST_PORTS)
    yield config
    if os.environ.get("SUPAWORKER_KEEP_TEST_STACK") != "1":
        dev_stack.down(TEST_STATE_DIR)


@pytest.fixture(scope="session")
def stack_env(stack: StackConfig) -> dict[str, str]:
    """The environment a worker on a VPS would have (plus the local-only extras)."""
    return dev_stack.env_vars(stack)


@pytest.fixture()
def admin_db(stack: StackConfig) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A superuser connection (autocommit) for setting up and inspecting state."""
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        yield conn


def _client(stack: StackConfig, key: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    options = ClientOptions(headers=headers, auto_refresh_token=False, persist_session=False)
    return create_client(stack.api_url, key, options)


@pytest.fixture()
def service_client(stack: StackConfig) -> Client:
    return _client(stack, stack.service_role_key)


@pytest.fixture()
def anon_client(stack: StackConfig) -> Client:
    return _client(stack, stack.anon_key)


@dataclass
class StackUser:
    id: uuid.UUID
    email: str
    token: str
    client: Client

    def create_document(
        self,
        admin_db: psycopg.Connection[tuple[object, ...]],
        name: str = "doc.txt",
        content: str | None = "hello",
    ) -> uuid.UUID:
        row = admin_db.execute(
            "insert into public.user_documents (user_id, name, content) values (%s, %s, %s)"
            " returning id",
            (self.id, name, content),
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))


@pytest.fixture()
def make_user(stack: StackConfig) -> Callable[..., StackUser]:
    def factory(admin: bool = False) -> StackUser:
        email = f"user-{uuid.uuid4().hex[:12]}@example.test"
        user_id, token = dev_stack.create_user(stack, email, admin=admin)
        return StackUser(user_id, email, token, _client(stack, stack.anon_key, token))

    return factory


@pytest.fixture()
def unique() -> Callable[[str], str]:
    """Names private to one test: `unique("queue")` -> "queue-3f9a1c"."""
    suffix = uuid.uuid4().hex[:8]
    return lambda prefix: f"{prefix}-{suffix}"
