"""`postgres_changes` bindings of a channel join: parsing and ids, as Realtime does them.

Mirrors `Extensions.PostgresCdcRls.Subscriptions.parse_subscription_params/1`: `event`
(`*`/INSERT/UPDATE/DELETE), `schema` (default `public`), `table` (`*` = every table of the
publication), `filter` (`col=op.value`, comma-separated = AND, optional `not.` negation) and
`select` (a column list). Filters are evaluated later in Postgres with the column's own type,
as `realtime.check_equality_op` does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# The operators Realtime accepts (`@filter_types`); `eq, neq, lt, lte, gt, gte, in` are the
# portable ones, the rest arrived with the 2026 migrations.
FILTER_OPS = frozenset(
    {
        "eq",
        "neq",
        "lt",
        "lte",
        "gt",
        "gte",
        "in",
        "like",
        "ilike",
        "is",
        "match",
        "imatch",
        "isdistinct",
    }
)
ACTIONS = ("INSERT", "UPDATE", "DELETE")
IS_KEYWORDS = frozenset({"null", "true", "false", "unknown"})
# phash2's range: ids stay small positive ints as the clients expect.
_ID_RANGE = 2**27


class BindingError(ValueError):
    """Parameters Realtime would refuse; the message is what the system error carries."""


@dataclass(frozen=True, slots=True)
class Filter:
    column: str
    op: str
    # `in` values are already in array-literal form: `in.(a,b)` -> `{a,b}`.
    value: str
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Binding:
    params: dict[str, Any]
    id: int
    action: str
    schema: str
    table: str
    filters: tuple[Filter, ...]
    select: tuple[str, ...] | None

    def matches_entity(self, schema: str, table: str) -> bool:
        return self.schema in ("*", schema) and self.table in ("*", table)

    def matches_action(self, action: str) -> bool:
        return self.action in ("*", action)

    def reply(self) -> dict[str, Any]:
        """The binding echoed in the join reply, with its id (clients match by position)."""
        return {**self.params, "id": self.id}

    def describe(self) -> str:
        """The parameter summary Realtime puts in its subscription error messages."""
        filters = ", ".join(
            f'{{"{f.column}", "{f.op}", "{f.value}", {str(f.negate).lower()}}}'
            for f in self.filters
        )
        select = json.dumps(list(self.select)) if self.select is not None else "nil"
        return (
            f"event: {self.action}, schema: {self.schema}, table: {self.table}, "
            f"filters: [{filters}], select: {select}"
        )


def binding_id(params: dict[str, Any]) -> int:
    """A stable small int per parameter set (Realtime uses `:erlang.phash2(params)`).

    Never 0: realtime-py treats a falsy id as "not subscribed".
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.blake2b(canonical.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (_ID_RANGE - 1) + 1


def parse_binding(params: Any) -> Binding:
    if not isinstance(params, dict):
        raise BindingError(
            "No subscription params provided. Please provide at least a `schema` or `table` "
            f"to subscribe to: {params!r}"
        )
    select = _parse_select(params)
    schema, table, raw_filter = params.get("schema"), params.get("table"), params.get("filter")
    if isinstance(schema, str) and isinstance(table, str) and isinstance(raw_filter, str):
        filters = _parse_filters(raw_filter)
    elif isinstance(schema, str) and isinstance(table, str) and "filter" not in params:
        filters = ()
    elif isinstance(schema, str) and "table" not in params and "filter" not in params:
        table, filters = "*", ()
    elif isinstance(table, str) and "schema" not in params and "filter" not in params:
        schema, filters = "public", ()
    else:
        raise BindingError(
            "No subscription params provided. Please provide at least a `schema` or `table` "
            f"to subscribe to: {_redacted(params)!r}"
        )
    assert isinstance(schema, str) and isinstance(table, str)
    if select is not None and "*" in (schema, table):
        raise BindingError(
            "Column selection is not supported for wildcard subscriptions. Provide an explicit "
            "schema and table name."
        )
    return Binding(
        params=params,
        id=binding_id(params),
        action=_action(params.get("event")),
        schema=schema,
        table=table,
        filters=filters,
        select=select,
    )


def _redacted(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ("<redacted>" if k in ("user_token", "auth_token") else v) for k, v in params.items()
    }


def _action(event: Any) -> str:
    if isinstance(event, str) and event.upper() in ACTIONS:
        return event.upper()
    return "*"


def _parse_select(params: dict[str, Any]) -> tuple[str, ...] | None:
    if "select" not in params:
        return None
    cols = params["select"]
    if isinstance(cols, list):
        names = tuple(c for c in cols if isinstance(c, str))
        return names or None
    if isinstance(cols, str):
        raise BindingError(
            "Error parsing `select` params: expected a list of column name strings, e.g. "
            'select: ["col1", "col2"]'
        )
    return None


def _parse_filters(text: str) -> tuple[Filter, ...]:
    trimmed = text.strip()
    if not trimmed:
        return ()
    try:
        return tuple(_parse_segment(segment) for segment in _split_top_level(trimmed))
    except BindingError as exc:
        raise BindingError(f"Error parsing `filter` params: {exc}") from exc


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes (`a=in.(1,2),b=eq.3`)."""
    segments: list[str] = []
    current: list[str] = []
    depth, quoted, prev, i = 0, False, "", 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\" and i + 1 < len(text):
                current.append(text[i : i + 2])
                i += 2
                continue
            quoted = char != '"'
        elif char == '"' and prev in (".", "(", ","):
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            segments.append("".join(current))
            current, prev, i = [], "", i + 1
            continue
        current.append(char)
        prev = char
        i += 1
    segments.append("".join(current))
    return segments


def _parse_segment(segment: str) -> Filter:
    trimmed = segment.strip()
    if not trimmed:
        raise BindingError("filter must not contain empty segments (check for extra commas)")
    column, sep, rest = trimmed.partition("=")
    if not sep:
        raise BindingError(json.dumps([trimmed]))
    negate = rest.startswith("not.")
    op_value = rest[4:] if negate else rest
    op, dot, value = op_value.partition(".")
    if not dot:
        raise BindingError(json.dumps([op_value]))
    if op not in FILTER_OPS:
        raise BindingError(json.dumps([op, value]))
    return Filter(column, op, _format_value(op, value), negate)


def _format_value(op: str, value: str) -> str:
    if op == "in":
        if len(value) >= 2 and value[0] == "(" and value[-1] == ")":
            return "{" + value[1:-1] + "}"
        raise BindingError("`in` filter value must be wrapped by parentheses")
    return _unquote(value)


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    out: list[str] = []
    i = 1
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out) if i == len(value) - 1 else value
        out.append(char)
        i += 1
    return value
