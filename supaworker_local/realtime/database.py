"""Database access of the Realtime endpoint: a small connection pool and catalog reads.

Realtime logs into the project database as the superuser (here `supabase_admin` over the
unix socket). Sessions run in UTC, as a hosted project's do, because `to_jsonb(timestamptz)`
renders values in the session time zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from supaworker_local.realtime.wal import TableColumn, TableView

log = logging.getLogger("supaworker_local.realtime")

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
PUBLICATION = "supabase_realtime"
_TYPE_CACHE_LIMIT = 4096
_PING_AFTER_IDLE_S = 1.0


async def connect(dsn: str, application_name: str, *, statement_timeout_ms: int = 0) -> Conn:
    options = "-c TimeZone=UTC"
    if statement_timeout_ms:
        options += f" -c statement_timeout={statement_timeout_ms}"
    conn: Conn = await psycopg.AsyncConnection.connect(
        dsn,
        autocommit=True,
        application_name=application_name,
        options=options,
        connect_timeout=5,
    )
    return conn


class Pool:
    """At most `size` connections, opened lazily.

    A connection that sat idle for a while is pinged before use: after a database restart
    every pooled session is dead, and the first batch after the restart must not be lost to
    one of them.
    """

    def __init__(
        self, dsn: str, *, size: int, application_name: str, statement_timeout_ms: int = 10_000
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._statement_timeout_ms = statement_timeout_ms
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[Conn, float]] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        if self._closed:
            raise psycopg.OperationalError("the Realtime connection pool is closed")
        async with self._slots:
            conn = await self._checkout()
            try:
                yield conn
            finally:
                await self._release(conn)

    async def _checkout(self) -> Conn:
        while self._idle:
            conn, since = self._idle.pop()
            if time.monotonic() - since < _PING_AFTER_IDLE_S or await _alive(conn):
                return conn
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
        return await connect(
            self._dsn, self._application_name, statement_timeout_ms=self._statement_timeout_ms
        )

    async def _release(self, conn: Conn) -> None:
        # Reuse only a clean session: not broken, and not left inside a transaction.
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if not conn.closed and not conn.broken and idle and not self._closed:
            self._idle.append((conn, time.monotonic()))
            return
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


async def _alive(conn: Conn) -> bool:
    try:
        await conn.execute("select 1")
    except (psycopg.Error, OSError):
        return False
    return True


# -- the publication ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Publication:
    """The tables of `supabase_realtime` and what it publishes."""

    tables: dict[tuple[str, str], int] = field(default_factory=dict)
    actions: str = "insert,update,delete"

    def oid(self, schema: str, table: str) -> int | None:
        return self.tables.get((schema, table))

    def add_tables(self) -> str:
        """wal2json's `add-tables` list, escaped as `realtime.quote_wal2json` does."""
        return ",".join(
            f"{_wal2json_escape(schema)}.{_wal2json_escape(table)}"
            # realtime.list_changes leaves out names with spaces (wal2json cannot parse them).
            for schema, table in sorted(self.tables)
            if " " not in table
        )


def _wal2json_escape(name: str) -> str:
    return "".join(f"\\{c}" if c in "\\,." or c.isspace() else c for c in name)


async def fetch_publication(conn: Conn, name: str = PUBLICATION) -> Publication:
    cur = await conn.execute(
        """
        select pp.pubinsert, pp.pubupdate, pp.pubdelete, pt.schemaname, pt.tablename, c.oid
        from pg_catalog.pg_publication pp
        left join pg_catalog.pg_publication_tables pt on pt.pubname = pp.pubname
        left join pg_catalog.pg_namespace n on n.nspname = pt.schemaname
        left join pg_catalog.pg_class c on c.relnamespace = n.oid and c.relname = pt.tablename
        where pp.pubname = %s
        """,
        (name,),
    )
    rows = await cur.fetchall()
    if not rows:
        return Publication(actions="")
    insert, update, delete = rows[0][:3]
    actions = ",".join(
        action for action, on in (("insert", insert), ("update", update), ("delete", delete)) if on
    )
    tables = {(str(r[3]), str(r[4])): int(r[5]) for r in rows if r[5] is not None}
    return Publication(tables=tables, actions=actions)


# -- tables as a role sees them --------------------------------------------------------------
async def fetch_table_views(
    conn: Conn, pairs: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], TableView]:
    """Columns (attnum order), SELECT privilege per role, primary key and RLS flag."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    cur = await conn.execute(
        """
        select e.rel, e.role, c.relrowsecurity, a.attname, t.typname,
               case when pg_catalog.to_regrole(e.role) is null then false
                    else pg_catalog.has_column_privilege(e.role, e.rel, a.attnum, 'SELECT') end,
               coalesce(a.attnum = any(pk.conkey), false)
        from unnest(%s::oid[], %s::text[]) as e(rel, role)
        join pg_catalog.pg_class c on c.oid = e.rel
        join pg_catalog.pg_attribute a on a.attrelid = e.rel and a.attnum > 0
                                       and not a.attisdropped
        join pg_catalog.pg_type t on t.oid = a.atttypid
        left join pg_catalog.pg_constraint pk on pk.conrelid = e.rel and pk.contype = 'p'
        order by e.rel, e.role, a.attnum
        """,
        ([rel for rel, _ in wanted], [role for _, role in wanted]),
    )
    views: dict[tuple[int, str], TableView] = {}
    for rel, role, rls, name, type_name, selectable, is_pk in await cur.fetchall():
        view = views.setdefault((int(rel), str(role)), TableView(rls_enabled=bool(rls)))
        view.columns.append(TableColumn(str(name), str(type_name), bool(selectable), bool(is_pk)))
    return views


class TypeNames:
    """`typeoid::regtype::text` per type oid: SQL-ready type names for casts, cached."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    async def resolve(self, conn: Conn, oids: Iterable[int]) -> dict[int, str]:
        wanted = set(oids)
        found = {oid: self._names[oid] for oid in wanted if oid in self._names}
        missing = sorted(wanted - found.keys())
        if missing:
            cur = await conn.execute(
                "select o, o::regtype::text from unnest(%s::oid[]) as o", (missing,)
            )
            fetched = {int(oid): str(name) for oid, name in await cur.fetchall()}
            if len(self._names) + len(fetched) > _TYPE_CACHE_LIMIT:
                self._names.clear()  # bounded memory; the next batches refill what they need
            self._names.update(fetched)
            found.update(fetched)
        return found
