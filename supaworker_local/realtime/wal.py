"""wal2json (format-version 2) records and the change payload Realtime builds from them.

The payload rules are `realtime.apply_rls` (20260709120000_fix_apply_rls_filter_role_leak):
`record` for INSERT/UPDATE (unchanged TOAST values taken from the old row), `old_record` for
UPDATE/DELETE, only the columns the subscriber's role may SELECT, a DELETE on an RLS table
reduced to its primary key, values over 64 bytes dropped when the WAL record exceeds
1 MiB (`Error 413`). Values arrive already rendered by Postgres (`to_jsonb(value::type)`), so
this module only chooses keys and assembles JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from supaworker_local.realtime.protocol import RawJson, dumps

ACTION_NAMES = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}
# realtime.list_changes' `max_record_bytes` default and apply_rls' per-value cut-off.
MAX_RECORD_BYTES = 1024 * 1024
OVERSIZE_VALUE_BYTES = 64

ERROR_NO_PRIMARY_KEY = "Error 400: Bad Request, no primary key"
ERROR_UNAUTHORIZED = "Error 401: Unauthorized"
ERROR_TOO_LARGE = "Error 413: Payload Too Large"


@dataclass(frozen=True, slots=True)
class WalColumn:
    name: str
    type_oid: int
    # The text form, as `(x->'value') #>> '{}'` reads it in apply_rls; None for SQL NULL.
    value: str | None


@dataclass(frozen=True, slots=True)
class WalChange:
    action: str
    schema: str
    table: str
    timestamp: str
    columns: tuple[WalColumn, ...]
    identity: tuple[WalColumn, ...]
    pk: frozenset[str]
    size: int

    @property
    def oversize(self) -> bool:
        return self.size > MAX_RECORD_BYTES

    def type_oids(self) -> set[int]:
        return {c.type_oid for c in (*self.columns, *self.identity)}


@dataclass(frozen=True, slots=True)
class TableColumn:
    name: str
    type_name: str  # pg_type.typname, as Realtime's `columns` lists it
    selectable: bool
    is_pk: bool


@dataclass(slots=True)
class TableView:
    """A table as one role sees it: its columns in attnum order with SELECT privilege."""

    rls_enabled: bool
    columns: list[TableColumn] = field(default_factory=list)

    def selectable(self) -> set[str]:
        return {c.name for c in self.columns if c.selectable}


@dataclass(frozen=True, slots=True)
class CastValues:
    """What Postgres rendered for one change: JSON text per column name."""

    commit_timestamp: str | None
    new: Mapping[str, str]
    old: Mapping[str, str]


def parse_change(data: str) -> WalChange | None:
    """A wal2json v2 record; None for anything but a row change (messages, truncates)."""
    # Numbers are kept as their exact text: `1.10` must not become `1.1`.
    record = json.loads(data, parse_int=str, parse_float=str)
    action = ACTION_NAMES.get(record.get("action", ""))
    if action is None:
        return None
    return WalChange(
        action=action,
        schema=record["schema"],
        table=record["table"],
        timestamp=record.get("timestamp", ""),
        columns=_columns(record.get("columns")),
        identity=_columns(record.get("identity")),
        pk=frozenset(pk["name"] for pk in record.get("pk") or ()),
        size=len(data.encode()),
    )


def _columns(raw: Iterable[dict[str, Any]] | None) -> tuple[WalColumn, ...]:
    return tuple(
        WalColumn(name=c["name"], type_oid=int(c.get("typeoid") or 0), value=_text(c.get("value")))
        for c in raw or ()
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return dumps(value)


def jsonb_key_order(key: str) -> tuple[int, bytes]:
    """jsonb stores object keys shortest first, then bytewise; Realtime's output has that order."""
    raw = key.encode()
    return (len(raw), raw)


def error_for(change: WalChange, view: TableView) -> str | None:
    """apply_rls' early exits: no primary key (400) or a role that cannot read it (401)."""
    if change.action == "DELETE":
        return None
    if not change.pk:
        return ERROR_NO_PRIMARY_KEY
    if not change.pk <= view.selectable():
        return ERROR_UNAUTHORIZED
    return None


def build_data(
    change: WalChange,
    view: TableView,
    select: tuple[str, ...] | None,
    values: CastValues | None,
    error: str | None = None,
) -> RawJson:
    """The `data` object of a `postgres_changes` push, for one role and column selection."""
    fields: dict[str, Any] = {}
    if error is not None or values is None:
        fields["columns"] = RawJson("[]")
        fields["commit_timestamp"] = None
        fields["errors"] = [error or ERROR_UNAUTHORIZED]
        if change.action in ("INSERT", "UPDATE"):
            fields["record"] = RawJson("{}")
        if change.action in ("UPDATE", "DELETE"):
            fields["old_record"] = RawJson("{}")
    else:
        fields["columns"] = RawJson(dumps(_columns_field(view, select)))
        fields["commit_timestamp"] = values.commit_timestamp
        fields["errors"] = [ERROR_TOO_LARGE] if change.oversize else None
        if change.action in ("INSERT", "UPDATE"):
            fields["record"] = _record(change, view, select, values)
        if change.action in ("UPDATE", "DELETE"):
            fields["old_record"] = _old_record(change, view, select, values)
    fields["schema"] = change.schema
    fields["table"] = change.table
    fields["type"] = change.action
    # Realtime encodes the change struct, whose keys come out in alphabetical order.
    ordered = {key: fields[key] for key in sorted(fields)}
    parts = (
        f"{dumps(k)}:{v.text if isinstance(v, RawJson) else dumps(v)}" for k, v in ordered.items()
    )
    return RawJson("{" + ",".join(parts) + "}")


def _columns_field(view: TableView, select: tuple[str, ...] | None) -> list[dict[str, str]]:
    return [
        {"name": c.name, "type": c.type_name}
        for c in view.columns
        if c.selectable and (select is None or c.name in select or c.is_pk)
    ]


def _keep(
    name: str,
    value: str | None,
    change: WalChange,
    selectable: set[str],
    select: tuple[str, ...] | None,
) -> bool:
    if name not in selectable:
        return False
    if select is not None and name not in select and name not in change.pk:
        return False
    # apply_rls drops every value over 64 bytes once the whole record is over the limit.
    return not change.oversize or (
        value is not None and len(value.encode()) <= OVERSIZE_VALUE_BYTES
    )


def _object(items: dict[str, str]) -> RawJson:
    parts = (f"{dumps(k)}:{items[k]}" for k in sorted(items, key=jsonb_key_order))
    return RawJson("{" + ",".join(parts) + "}")


def _record(
    change: WalChange, view: TableView, select: tuple[str, ...] | None, values: CastValues
) -> RawJson:
    selectable = view.selectable()
    items: dict[str, str] = {}
    for name, value in values.new.items():
        if _keep(name, value, change, selectable, select):
            items[name] = value
    # Unchanged TOAST values are missing from the new row: apply_rls takes them from the old one.
    for name, value in values.old.items():
        if name not in values.new and _keep(
            name, None if change.oversize else value, change, selectable, select
        ):
            items[name] = value
    return _object(items)


def _old_record(
    change: WalChange, view: TableView, select: tuple[str, ...] | None, values: CastValues
) -> RawJson:
    selectable = view.selectable()
    items: dict[str, str] = {}
    for name, value in values.old.items():
        if not _keep(name, value, change, selectable, select):
            continue
        # Deletes are not RLS-checked, so on an RLS table only the key is revealed.
        if change.action == "DELETE" and view.rls_enabled and name not in change.pk:
            continue
        items[name] = value
    return _object(items)
