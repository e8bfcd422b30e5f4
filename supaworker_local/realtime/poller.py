"""The replication poller: one temporary wal2json slot, polled like Realtime's
`Extensions.PostgresCdcRls.ReplicationPoller`.

* A dedicated session creates `pg_create_logical_replication_slot(name, 'wal2json', true)`;
  the slot is temporary, so it lives and dies with that session.
* Each poll reads at most 100 changes of the `supabase_realtime` publication's tables with
  Realtime's wal2json options, plus the inserts into `realtime.messages` (Broadcast from the
  database, which hosted reads over its own pgoutput replication connection) while any channel
  is joined. Cadence as Realtime's: poll again at once after delivering rows, after `interval`
  (+50..100 ms jitter) when the slot had changes nobody wanted, and after `interval` again when
  the slot was empty (`idle_multiplier` > 1 stretches that last wait; hosted has no such idle
  back-off, so the default is 1).
* The slot is opened when the first subscription arrives and dropped after a minute with
  none; during that minute it is advanced without decoding (no one could receive a change).
  A lost connection (database restart, terminated backend) is retried with backoff;
  the new slot only sees changes committed after it exists, so changes in the gap are lost,
  as on Realtime. Subscribers are then told "Subscribed to PostgreSQL" again, their cue to
  catch up by reading the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable

import psycopg

from supaworker_local.realtime.database import Conn, Publication, connect, fetch_publication
from supaworker_local.realtime.wal import WalChange, parse_change

log = logging.getLogger("supaworker_local.realtime")

MAX_CHANGES = 100
IDLE_MULTIPLIER = 1
MESSAGES_TABLE = "realtime.messages"
IDLE_SHUTDOWN_S = 60.0
PUBLICATION_REFRESH_S = 5.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
FLUSH_MESSAGE_PREFIX = "supaworker_realtime_flush"

ProcessFn = Callable[[list[WalChange], Publication], Awaitable[int]]


class PollerUnavailable(Exception):
    """The slot could not be created (database down, wal2json refused, ...)."""


class ReplicationPoller:
    def __init__(
        self,
        dsn: str,
        *,
        interval_ms: int,
        process: ProcessFn,
        has_subscribers: Callable[[], bool],
        on_slot_recreated: Callable[[], None],
        wants_messages: Callable[[], bool] = lambda: False,
        idle_multiplier: int = IDLE_MULTIPLIER,
    ) -> None:
        self._dsn = dsn
        self._interval = max(interval_ms, 1) / 1000
        self._idle_multiplier = max(idle_multiplier, 1)
        self._process = process
        self._has_subscribers = has_subscribers
        self._wants_messages = wants_messages
        self._on_slot_recreated = on_slot_recreated
        self.slot_name = f"supabase_realtime_replication_slot_{os.getpid()}_{secrets.token_hex(3)}"
        self._conn: Conn | None = None
        self._publication = Publication()
        self._published_at = 0.0
        self._flush_before_poll = False
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._waiters = 0
        self._last_error = ""
        self._failed_at: float | None = None
        # Set when a live slot was lost to an error (not dropped for idleness): the next slot
        # must be announced to subscribers, who may have missed changes in between.
        self._slot_lost = False
        self._task: asyncio.Task[None] | None = None

    # -- control --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="realtime-replication-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    @property
    def publication(self) -> Publication:
        return self._publication

    def set_publication(self, publication: Publication) -> None:
        """A fresher table list (read by a subscriber's validation); used from the next poll."""
        self._publication = publication
        self._published_at = time.monotonic()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def failing(self, within_s: float) -> str | None:
        """The last error, if opening the slot failed in the last `within_s` seconds."""
        if self._failed_at is not None and time.monotonic() - self._failed_at < within_s:
            return self._last_error
        return None

    async def ensure_ready(self, timeout: float) -> None:
        """Return once the slot exists, so changes committed from now on will be read."""
        self.start()
        self._waiters += 1
        self._wake.set()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError as exc:
            raise PollerUnavailable(
                self._last_error or "the replication slot is not ready"
            ) from exc
        finally:
            self._waiters -= 1

    # -- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        idle_since: float | None = None
        while True:
            wanted = self._waiters > 0 or self._has_subscribers() or self._wants_messages()
            if self._conn is None and not wanted:
                await self._sleep_until_woken()
                continue
            idle_since = None if wanted else (idle_since or time.monotonic())
            if idle_since is not None and time.monotonic() - idle_since > IDLE_SHUTDOWN_S:
                log.info(
                    "No Realtime subscribers left: dropping the replication slot",
                    extra={"action": "realtime.slot_idle_drop", "slot": self.slot_name},
                )
                await self._disconnect()
                continue
            try:
                if self._conn is None:
                    await self._open_slot()
                    backoff = BACKOFF_MIN_S
                delay = await self._poll_once(wanted)
            except Exception as exc:
                # Database errors are expected (restarts, terminated sessions); anything else is
                # a bug, logged with its traceback. Either way the poller lives on.
                self._last_error = _describe(exc)
                self._failed_at = time.monotonic()
                log.log(
                    logging.WARNING if isinstance(exc, psycopg.Error | OSError) else logging.ERROR,
                    "Realtime replication failed (%s); retrying in %.1f s",
                    self._last_error,
                    backoff,
                    exc_info=not isinstance(exc, psycopg.Error | OSError),
                    extra={"action": "realtime.poller_error", "slot": self.slot_name},
                )
                self._slot_lost = self._slot_lost or self._conn is not None
                await self._disconnect()
                delay, backoff = backoff, min(backoff * 2, BACKOFF_MAX_S) * random.uniform(1, 1.2)
            await asyncio.sleep(delay)

    async def _sleep_until_woken(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _open_slot(self) -> None:
        conn = await connect(self._dsn, "realtime_rls")
        try:
            await conn.execute(
                "select pg_catalog.pg_create_logical_replication_slot(%s, 'wal2json', true)",
                (self.slot_name,),
            )
            cur = await conn.execute("select current_setting('synchronous_commit')")
            row = await cur.fetchone()
            self._flush_before_poll = bool(row and row[0] == "off")
            if self._flush_before_poll:
                # A hosted project commits synchronously, so wal2json sees a change as soon as
                # it commits. With `synchronous_commit=off` the WAL reaches disk (and decoding)
                # only when the WAL writer gets to it, up to ~0.5 s later; flushing before each
                # poll keeps local latencies representative of hosted ones.
                await conn.execute("set synchronous_commit = on")
            self.set_publication(await fetch_publication(conn))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._ready.set()
        self._failed_at = None
        log.info(
            "Realtime replication slot %s created",
            self.slot_name,
            extra={"action": "realtime.slot_created", "slot": self.slot_name},
        )
        if self._slot_lost:
            self._slot_lost = False
            log.warning(
                "Realtime replication slot recreated after a lost connection; changes committed "
                "in between were not delivered (hosted Realtime loses them too)",
                extra={"action": "realtime.slot_recreated", "slot": self.slot_name},
            )
            self._on_slot_recreated()

    async def _disconnect(self) -> None:
        self._ready.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _poll_once(self, wanted: bool) -> float:
        """Read and deliver one batch; returns how long to wait before the next poll."""
        conn = self._conn
        assert conn is not None
        if time.monotonic() - self._published_at > PUBLICATION_REFRESH_S:
            self.set_publication(await fetch_publication(conn))
        publication = self._publication
        if self._flush_before_poll:
            await self._flush_wal(conn)
        tables, actions = self._decode_targets(wanted, publication)
        if not tables:
            # Nothing to decode, or nobody to tell (the slot is only kept for a subscriber
            # who comes back soon): move the slot on, so that a bulk write in the meantime
            # is not a backlog that delays the next subscriber's first change by seconds.
            await conn.execute(
                "select pg_catalog.pg_replication_slot_advance("
                "%s, pg_catalog.pg_current_wal_lsn())",
                (self.slot_name,),
            )
            return self._interval * self._idle_multiplier
        cur = await conn.execute(self._changes_query(), self._changes_params(tables, actions))
        rows = await cur.fetchall()
        changes = [c for c in (parse_change(str(row[0])) for row in rows) if c is not None]
        processed = await self._deliver(changes, publication) if changes else 0
        if processed > 0:
            return 0.0
        if rows:
            return self._interval + random.uniform(0.05, 0.1)
        return self._interval * self._idle_multiplier

    def _changes_query(self) -> str:
        # realtime.list_changes' options; plus, when we flush WAL ourselves, a filter that hides
        # our flush messages.
        extra = ", 'filter-msg-prefixes', %s" if self._flush_before_poll else ""
        return (
            "select data from pg_catalog.pg_logical_slot_get_changes(%s, null, %s,"
            " 'include-pk', 'true', 'include-transaction', 'false',"
            " 'include-timestamp', 'true', 'include-type-oids', 'true',"
            f" 'format-version', '2', 'actions', %s, 'add-tables', %s{extra})"
        )

    def _decode_targets(self, wanted: bool, publication: Publication) -> tuple[str, str]:
        """wal2json's `add-tables` and `actions`: the publication's tables (for postgres_changes),
        `realtime.messages` inserts (for Broadcast from the database), or nothing."""
        if not wanted:
            return "", ""
        tables: list[str] = []
        actions = set(filter(None, publication.actions.split(",")))
        if actions and (published := publication.add_tables()):
            tables.append(published)
        if self._wants_messages():
            tables.append(MESSAGES_TABLE)
            actions.add("insert")
        order = ("insert", "update", "delete")
        return ",".join(tables), ",".join(a for a in order if a in actions)

    def _changes_params(self, tables: str, actions: str) -> tuple[object, ...]:
        params: tuple[object, ...] = (self.slot_name, MAX_CHANGES, actions, tables)
        return (*params, FLUSH_MESSAGE_PREFIX) if self._flush_before_poll else params

    async def _deliver(self, changes: list[WalChange], publication: Publication) -> int:
        # The batch is already consumed from the slot; a failure here (say the RLS-check
        # connection died) loses it but must not take the slot down with it.
        try:
            return await self._process(changes, publication)
        except Exception as exc:
            log.error(
                "Realtime could not deliver %d changes: %s",
                len(changes),
                _describe(exc),
                extra={"action": "realtime.batch_failed", "slot": self.slot_name},
            )
            return 0

    @staticmethod
    async def _flush_wal(conn: Conn) -> None:
        cur = await conn.execute(
            "select pg_catalog.pg_current_wal_insert_lsn() > pg_catalog.pg_current_wal_flush_lsn()"
        )
        row = await cur.fetchone()
        if row and row[0]:
            # A synchronous commit flushes the WAL up to its own commit record, i.e. everything
            # committed before it; it only flushes if the transaction has an xid and wrote WAL,
            # which a transactional logical message does (and wal2json is told to skip it).
            await conn.execute(
                "select pg_catalog.pg_logical_emit_message(true, %s, '')", (FLUSH_MESSAGE_PREFIX,)
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        return f"{exc.diag.message_primary}{hint}"
    return str(exc).strip() or type(exc).__name__
