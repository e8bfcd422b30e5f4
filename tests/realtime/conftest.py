"""Fixtures of the Realtime endpoint tests: a fresh RLS-protected table per test, published
through `supabase_realtime`, and raw Phoenix clients."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import psycopg
import pytest
from aiohttp import web

from supaworker_local.config import StackConfig
from supaworker_local.realtime import setup_realtime
from supaworker_local.realtime.server import SERVER_KEY, RealtimeServer
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


LocalRealtime = Callable[..., Awaitable[tuple[StackConfig, RealtimeServer]]]


@pytest.fixture()
async def local_realtime(realtime_stack: StackConfig) -> AsyncIterator[LocalRealtime]:
    """A second Realtime endpoint on the test stack's database, in this process, with its own
    plan and limits (`await local_realtime("free", max_events_per_second=2)`): what the gateway
    mounts, on a free port, so a test can exceed small quotas without touching the shared one."""
    runners: list[web.AppRunner] = []

    async def start(plan: str = "pro", **limits: int) -> tuple[StackConfig, RealtimeServer]:
        with socket.socket() as sock:
            sock.bind((realtime_stack.host, 0))
            port = int(sock.getsockname()[1])
        config = dataclasses.replace(
            realtime_stack, api_port=port, realtime_plan=plan, realtime_limits=limits, extra={}
        )
        app = web.Application()
        setup_realtime(app, config)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, config.host, port).start()
        runners.append(runner)
        return config, app[SERVER_KEY]

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclasses.dataclass(frozen=True)
class PrivateTopics:
    """Topics `<prefix>:<user id>` each user may read and write, and `<prefix>-ro:<user id>`
    they may only read: RLS policies on realtime.messages, as a project would write them."""

    prefix: str

    def own(self, user_id: uuid.UUID) -> str:
        return f"{self.prefix}:{user_id}"

    def read_only(self, user_id: uuid.UUID) -> str:
        return f"{self.prefix}-ro:{user_id}"


@pytest.fixture()
def private_topics(realtime_stack: StackConfig) -> Iterator[PrivateTopics]:
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    # As `postgres`, the migration owner: a project's migrations create these policies.
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:
        db.execute(
            f'create policy "{prefix} read" on realtime.messages for select to authenticated'
            f" using (realtime.topic() in ('{prefix}:' || (select auth.uid())::text,"
            f" '{prefix}-ro:' || (select auth.uid())::text)"
            " and realtime.messages.extension in ('broadcast', 'presence'))"
        )
        db.execute(
            f'create policy "{prefix} write" on realtime.messages for insert to authenticated'
            f" with check (realtime.topic() = '{prefix}:' || (select auth.uid())::text"
            " and realtime.messages.extension in ('broadcast', 'presence'))"
        )
    yield PrivateTopics(prefix)
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:
        db.execute(f'drop policy "{prefix} read" on realtime.messages')
        db.execute(f'drop policy "{prefix} write" on realtime.messages')


@pytest.fixture()
def broadcasting_table(realtime_stack: StackConfig, private_topics: PrivateTopics) -> Iterator[str]:
    """A table whose trigger calls realtime.broadcast_changes to `<prefix>:<owner>`."""
    name = f"rt_bc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:
        db.execute(f"create table public.{name} (id bigint primary key, owner uuid, body text)")
        db.execute(f"alter table public.{name} enable row level security")
        db.execute(
            f"create function public.{name}_changed() returns trigger language plpgsql"
            " security definer set search_path = '' as $$ begin"
            f" perform realtime.broadcast_changes('{private_topics.prefix}:' ||"
            " coalesce(new.owner, old.owner)::text, tg_op, tg_op, tg_table_name,"
            " tg_table_schema, new, old); return null; end $$"
        )
        db.execute(
            f"create trigger {name}_changed after insert or update or delete on public.{name}"
            f" for each row execute function public.{name}_changed()"
        )
    yield name
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:
        db.execute(f"drop table public.{name}")
        db.execute(f"drop function public.{name}_changed()")
