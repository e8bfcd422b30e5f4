"""From a batch of WAL changes to `postgres_changes` pushes, per `realtime.apply_rls`.

For each change: the subscriptions whose table and event match; per subscriber role, the
401/400 early exits; filters (in Postgres, with the column's type); for INSERT/UPDATE on an
RLS table, a visibility check per distinct (role, claims); then one payload per (role,
column selection), pushed to every channel with the ids of its visible bindings.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import psycopg

from supaworker_local.realtime import checks
from supaworker_local.realtime.checks import FilterCheck
from supaworker_local.realtime.database import Conn, Pool, Publication, TypeNames, fetch_table_views
from supaworker_local.realtime.limits import PLANS, Quotas
from supaworker_local.realtime.metrics import Metrics
from supaworker_local.realtime.protocol import RawJson
from supaworker_local.realtime.registry import Registry, Subscription
from supaworker_local.realtime.wal import (
    ERROR_UNAUTHORIZED,
    TableView,
    WalChange,
    build_data,
    error_for,
)

if TYPE_CHECKING:
    from supaworker_local.realtime.channel import Channel

log = logging.getLogger("supaworker_local.realtime")
K = TypeVar("K")
MESSAGES = ("realtime", "messages")


@dataclass(frozen=True, slots=True)
class _Subscriber:
    """A subscription with its channel's role and claims as of the start of the batch (an
    `access_token` update may change them while the batch awaits the database)."""

    sub: Subscription
    role: str
    claims: str

    @property
    def select(self) -> tuple[str, ...] | None:
        return self.sub.binding.select


@dataclass(frozen=True, slots=True)
class _Work:
    change: WalChange
    oid: int
    subscribers: list[_Subscriber]


class ChangeProcessor:
    def __init__(
        self,
        registry: Registry,
        pool: Pool,
        *,
        quotas: Quotas | None = None,
        metrics: Metrics | None = None,
        on_message: Callable[[WalChange], bool] = lambda change: False,
    ) -> None:
        self._registry = registry
        self._pool = pool
        self._types = TypeNames()
        self._quotas = quotas or Quotas(PLANS["off"])
        self._metrics = metrics or Metrics()
        # Inserts into realtime.messages go to Broadcast, not to postgres_changes.
        self._on_message = on_message

    async def process(self, changes: Sequence[WalChange], publication: Publication) -> int:
        """Deliver a batch; returns how many changes reached at least one subscriber."""
        delivered = 0
        table_changes: list[WalChange] = []
        for change in changes:
            if (change.schema, change.table) == MESSAGES:
                delivered += self._on_message(change)
            elif change.action.lower() in publication.actions.split(","):
                table_changes.append(change)
        work = list(self._collect(table_changes, publication))
        if not work:
            return delivered
        if self._quotas.db_events.triggered:
            # Hosted's poller skips the whole batch while its db_events counter is over the
            # messages-per-second limit (replication_poller.ex, reason :rate_limited).
            self._metrics.changes_skipped += len(work)
            log.warning(
                "Realtime skipped %d changes: MessagePerSecondRateLimitReached",
                len(work),
                extra={"action": "realtime.changes_rate_limited"},
            )
            return delivered
        async with self._pool.connection() as conn:
            views = await fetch_table_views(
                conn, {(w.oid, s.role) for w in work for s in w.subscribers}
            )
            types = await self._types.resolve(
                conn, (oid for w in work for oid in w.change.type_oids())
            )
            for item in work:
                try:
                    delivered += await self._process_one(conn, item, views, types)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    # One bad change must not stall the stream (Realtime would retry the whole
                    # batch forever); it is logged and skipped.
                    log.error(
                        "Realtime could not process a change of %s.%s: %s",
                        item.change.schema,
                        item.change.table,
                        exc,
                        extra={"action": "realtime.change_failed", "table": item.change.table},
                    )
        return delivered

    def _collect(self, changes: Iterable[WalChange], publication: Publication) -> Iterable[_Work]:
        for change in changes:
            oid = publication.oid(change.schema, change.table)
            if oid is None:
                continue
            subscribers = [
                _Subscriber(s, s.channel.role, checks.claims_json(s.channel.claims))
                for s in self._registry.candidates(change.schema, change.table, change.action)
                if not s.channel.closed
            ]
            if subscribers:
                yield _Work(change, oid, subscribers)

    async def _process_one(
        self,
        conn: Conn,
        item: _Work,
        views: dict[tuple[int, str], TableView],
        types: dict[int, str],
    ) -> int:
        change = item.change
        pushed = False
        readable: list[_Subscriber] = []
        for role, subs in _group(item.subscribers, lambda s: s.role).items():
            view = views.get((item.oid, role))
            error = ERROR_UNAUTHORIZED if view is None else error_for(change, view)
            if error is not None:
                # apply_rls reports these to every subscriber of the role, filters aside.
                pushed |= _push_error(change, view or TableView(False), subs, error)
            else:
                readable.extend(subs)
        if not readable:
            return int(pushed)
        filter_checks, positions = _filter_checks(change, readable)
        rendered = await checks.render(conn, change, types, filter_checks)
        passing = [s for s in readable if all(rendered.filter_results[i] for i in positions[id(s)])]
        # The RLS flag belongs to the table: any readable role's view of it tells.
        rls_enabled = views[(item.oid, readable[0].role)].rls_enabled
        visible = await self._visible(conn, change, passing, rls_enabled)
        for role, subs in _group(visible, lambda s: s.role).items():
            view = views[(item.oid, role)]
            for select, group in _group(subs, lambda s: s.select).items():
                pushed |= _deliver(group, build_data(change, view, select, rendered.values))
        # One per subscriber of the change, as hosted's poller adds `subscription_ids`.
        self._quotas.db_events.add(len(item.subscribers))
        return int(pushed)

    async def _visible(
        self, conn: Conn, change: WalChange, subs: list[_Subscriber], rls_enabled: bool
    ) -> list[_Subscriber]:
        if not subs or not rls_enabled or change.action == "DELETE":
            return subs  # DELETE skips RLS, as in Realtime
        subjects = sorted({(s.role, s.claims) for s in subs})
        answers = dict(zip(subjects, await checks.visible(conn, change, subjects), strict=True))
        return [s for s in subs if answers[(s.role, s.claims)]]


def _filter_checks(
    change: WalChange, subs: Sequence[_Subscriber]
) -> tuple[list[FilterCheck], dict[int, list[int]]]:
    """Distinct filters of the subscriptions, each against the row it reads.

    UPDATE filters read the new row, DELETE filters the old (identity) one; a filter on a column
    the change does not carry is false (`is_visible_through_filters`).
    """
    side = change.identity if change.action == "DELETE" else change.columns
    by_name = {c.name: c for c in side}
    index: dict[object, int] = {}
    found: list[FilterCheck] = []
    positions: dict[int, list[int]] = {}
    for sub in subs:
        mine: list[int] = []
        for flt in sub.sub.binding.filters:
            if flt not in index:
                index[flt] = len(found)
                found.append(FilterCheck(flt, by_name.get(flt.column)))
            mine.append(index[flt])
        positions[id(sub)] = mine
    return found, positions


def _group(
    subs: Iterable[_Subscriber], key: Callable[[_Subscriber], K]
) -> dict[K, list[_Subscriber]]:
    groups: dict[K, list[_Subscriber]] = defaultdict(list)
    for sub in subs:
        groups[key(sub)].append(sub)
    return groups


def _push_error(change: WalChange, view: TableView, subs: list[_Subscriber], error: str) -> bool:
    pushed = False
    # One message per column selection, as apply_rls fans its errors out.
    for select, group in _group(subs, lambda s: s.select).items():
        pushed |= _deliver(group, build_data(change, view, select, None, error))
    return pushed


def _deliver(subs: Sequence[_Subscriber], data: RawJson) -> bool:
    ids_by_channel: dict[Channel, list[int]] = {}
    for subscriber in subs:
        ids = ids_by_channel.setdefault(subscriber.sub.channel, [])
        if subscriber.sub.binding.id not in ids:
            ids.append(subscriber.sub.binding.id)
    for channel, ids in ids_by_channel.items():
        channel.push_change(ids, data)
    return bool(ids_by_channel)
