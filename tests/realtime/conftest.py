"""Fixtures of the Realtime endpoint tests: a fresh RLS-protected table per test, published
through `supabase_realtime`, and raw Phoenix clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from supaworker_local.config import StackConfig
from tests.realtime.wire import WireClient, websocket_url

Admin = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="session")
def realtime_stack(stack: StackConfig) -> StackConfig:
    """The stack, once we know its Postgres lets the gateway decode WAL with wal2json."""
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        slot = f"rt_probe_{uuid.uuid4().hex[:8]}"
        try:
            conn.execute("select pg_create_logical_replication_slot(%s, 'wal2json', true)", (slot,))
        except psycopg.Error as exc:
            pytest.fail(
                "The local Postgres refuses wal2json logical slots, so Realtime cannot work: "
                f"{exc.diag.message_primary} (hint: {exc.diag.message_hint}). The server needs "
                "wal_level=logical and wal2json in output_plugin_libraries."
            )
        conn.execute("select pg_drop_replication_slot(%s)", (slot,))
    return stack


@pytest.fixture()
def rt_table(realtime_stack: StackConfig, admin_db: Admin) -> Iterator[str]:
    """`public.rt_test_<hex>`: owner-only RLS, readable by authenticated and service_role."""
    name = f"rt_test_{uuid.uuid4().hex[:10]}"
    admin_db.execute(
        f"create table public.{name} (id bigint generated always as identity primary key,"
        " owner uuid, body text, n int)"
    )
    admin_db.execute(f"alter table public.{name} enable row level security")
    admin_db.execute(
        f"create policy owner_reads on public.{name} for select to authenticated"
        " using (owner = auth.uid())"
    )
    # Explicit grants, as on current Supabase projects (the bootstrap's default privileges
    # would otherwise give anon everything).
    admin_db.execute(f"revoke all on public.{name} from anon, authenticated, service_role")
    admin_db.execute(f"grant select on public.{name} to authenticated, service_role")
    admin_db.execute(f"alter publication supabase_realtime add table public.{name}")
    yield name
    # A fresh session: the test may have restarted the database under `admin_db`.
    with psycopg.connect(realtime_stack.admin_db_url, autocommit=True) as conn:
        conn.execute(f"drop table if exists public.{name}")


def insert(admin: Admin, table: str, owner: uuid.UUID | None, body: str, n: int = 0) -> int:
    row = admin.execute(
        f"insert into public.{table} (owner, body, n) values (%s, %s, %s) returning id",
        (owner, body, n),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


@pytest.fixture()
async def wire(realtime_stack: StackConfig) -> AsyncIterator[list[WireClient]]:
    """Raw Phoenix clients opened by a test; all closed at its end."""
    clients: list[WireClient] = []
    yield clients
    for client in clients:
        await client.close()


async def connect(
    clients: list[WireClient], stack: StackConfig, key: str, vsn: str = "1.0.0"
) -> WireClient:
    client = await WireClient.connect(websocket_url(stack, key, vsn), vsn)
    clients.append(client)
    return client
