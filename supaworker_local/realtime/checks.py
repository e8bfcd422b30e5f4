"""The SQL side of `realtime.apply_rls`, run from Python: value rendering, filter checks, RLS
visibility and subscription validation.

* Values are rendered by Postgres as `realtime.cast` does (`to_jsonb(value::type)`), and
  filters are compared with the column's own type (`realtime.check_equality_op`), in one
  statement per change.
* Visibility: one multi-statement query per change, in which each distinct (role, claims)
  runs `set_config('role', ...)`, `set_config('request.jwt.claims', ...)` and then selects the
  row by primary key. The statements of a simple query share one implicit transaction, so the
  local settings reach the following `select` and vanish at its end.
* Validation mirrors `realtime.subscription_check_filters` and the subscription insert.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from supaworker_local.realtime.bindings import IS_KEYWORDS, Binding, Filter
from supaworker_local.realtime.database import Conn
from supaworker_local.realtime.wal import CastValues, WalChange, WalColumn

_BINARY_OPS = {
    "eq": "=",
    "neq": "!=",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "match": "~",
    "imatch": "~*",
}
_COMMIT_TIMESTAMP = sql.SQL(
    "to_char((%s::text::timestamptz) at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
)
MAX_IN_VALUES = 100


@dataclass(frozen=True, slots=True)
class FilterCheck:
    filter: Filter
    # The change's column the filter reads; None when the change does not carry it (false).
    column: WalColumn | None


@dataclass(frozen=True, slots=True)
class Rendered:
    values: CastValues
    filter_results: tuple[bool, ...]


def _type_sql(type_name: str) -> sql.SQL:
    # Names come from `oid::regtype::text`, so they are already quoted SQL; `%` is doubled
    # because the statement carries placeholders.
    return sql.SQL(type_name.replace("%", "%%"))


def _value_sql(column: WalColumn, types: dict[int, str]) -> sql.Composable:
    type_name = types.get(column.type_oid)
    if type_name is None or type_name == "bytea":
        # realtime.cast passes bytea (and anything it cannot name) through as text.
        return sql.SQL("to_jsonb(%s::text)::text")
    return sql.SQL("to_jsonb(%s::text::{})::text").format(_type_sql(type_name))


def _filter_sql(check: FilterCheck, types: dict[int, str]) -> tuple[sql.Composable, list[Any]]:
    """`realtime.check_equality_op`: both sides cast to the column's type; NULL counts as false."""
    column, flt = check.column, check.filter
    if column is None or column.type_oid not in types:
        return sql.SQL("false"), []
    type_sql = _type_sql(types[column.type_oid])
    lhs = sql.SQL("(%s::text::{})").format(type_sql)
    rhs = sql.SQL("(%s::text::{})").format(type_sql)
    negation = sql.SQL("NOT " if flt.negate else "")
    expr: sql.Composable
    if flt.op == "is":
        if flt.value not in IS_KEYWORDS:
            return sql.SQL("false"), []
        # IS takes a keyword (NULL, TRUE, ...), not a typed literal.
        expr = sql.SQL("{} IS {}{}").format(lhs, negation, sql.SQL(flt.value.upper()))
        return sql.SQL("coalesce(({}), false)").format(expr), [column.value]
    if flt.op == "isdistinct":
        expr = sql.SQL("{} IS {}DISTINCT FROM {}").format(lhs, negation, rhs)
    else:
        if flt.op == "in":
            expr = sql.SQL("{} = any(%s::text::{}[])").format(lhs, type_sql)
        else:
            expr = sql.SQL("{} {} {}").format(lhs, sql.SQL(_BINARY_OPS[flt.op]), rhs)
        if flt.negate:
            expr = sql.SQL("not ({})").format(expr)
    return sql.SQL("coalesce(({}), false)").format(expr), [column.value, flt.value]


def render_statement(
    change: WalChange, types: dict[int, str], checks: Sequence[FilterCheck]
) -> tuple[sql.Composed, list[Any]]:
    params: list[Any] = [change.timestamp or None]
    new = [_value_sql(c, types) for c in change.columns]
    params += [c.value for c in change.columns]
    old = [_value_sql(c, types) for c in change.identity]
    params += [c.value for c in change.identity]
    filters: list[sql.Composable] = []
    for check in checks:
        expr, expr_params = _filter_sql(check, types)
        filters.append(expr)
        params += expr_params
    query = sql.SQL("select {}, array[{}]::text[], array[{}]::text[], array[{}]::bool[]").format(
        _COMMIT_TIMESTAMP,
        sql.SQL(", ").join(new),
        sql.SQL(", ").join(old),
        sql.SQL(", ").join(filters),
    )
    return query, params


async def render(
    conn: Conn, change: WalChange, types: dict[int, str], checks: Sequence[FilterCheck]
) -> Rendered:
    query, params = render_statement(change, types, checks)
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    timestamp, new_values, old_values, results = row
    values = CastValues(
        commit_timestamp=timestamp,
        new=_json_texts(change.columns, new_values),
        old=_json_texts(change.identity, old_values),
    )
    return Rendered(values, tuple(bool(r) for r in results))


def _json_texts(columns: Sequence[WalColumn], values: Sequence[str | None]) -> dict[str, str]:
    # to_jsonb(NULL) is SQL NULL; in the payload it is JSON null.
    return {c.name: "null" if v is None else v for c, v in zip(columns, values, strict=True)}


# -- RLS ---------------------------------------------------------------------------------------
def visibility_statement(
    schema: str, table: str, key: Sequence[WalColumn], subjects: Sequence[tuple[str, str]]
) -> sql.Composed:
    """`subjects` are (role, claims JSON); one `exists` result per subject."""
    if not key or any(c.value is None for c in key):
        condition: sql.Composable = sql.SQL("false")  # `pk = NULL` never matches, as in Realtime
    else:
        condition = sql.SQL(" and ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c.name), sql.Literal(c.value)) for c in key
        )
    check = sql.SQL("select exists(select 1 from {} where {})").format(
        sql.Identifier(schema, table), condition
    )
    parts: list[sql.Composable] = []
    for role, claims in subjects:
        parts.append(
            sql.SQL(
                "select pg_catalog.set_config('role', {}, true), "
                "pg_catalog.set_config('request.jwt.claims', {}, true)"
            ).format(sql.Literal(role), sql.Literal(claims))
        )
        parts.append(check)
    return sql.SQL("; ").join(parts)


async def visible(conn: Conn, change: WalChange, subjects: Sequence[tuple[str, str]]) -> list[bool]:
    """May each (role, claims) SELECT the changed row under RLS? A failing check is a no."""
    key = [c for c in change.columns if c.name in change.pk]
    try:
        return await _run_visibility(conn, change, key, subjects)
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        if len(subjects) == 1:
            return [False]
    # One subject's policy failed and took the shared transaction with it: isolate each.
    results: list[bool] = []
    for subject in subjects:
        try:
            results += await _run_visibility(conn, change, key, [subject])
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            results.append(False)
    return results


async def _run_visibility(
    conn: Conn, change: WalChange, key: Sequence[WalColumn], subjects: Sequence[tuple[str, str]]
) -> list[bool]:
    cur = conn.cursor()
    # No parameters: psycopg sends a simple query, so the statements share one transaction.
    await cur.execute(visibility_statement(change.schema, change.table, key, subjects))
    results: list[bool] = []
    while True:
        rows = await cur.fetchall()
        if rows and len(rows[0]) == 1:
            results.append(bool(rows[0][0]))
        if not cur.nextset():
            break
    return results


# -- subscription validation -------------------------------------------------------------------
class SubscriptionError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _CheckFailed(Exception):
    """A subscription check failed; `text` is worded like Postgrex's error message."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @classmethod
    def raised(cls, message: str) -> _CheckFailed:
        return cls(f"ERROR P0001 (raise_exception) {message}")

    @classmethod
    def from_pg(cls, exc: psycopg.Error) -> _CheckFailed:
        state = exc.sqlstate or "XX000"
        condition = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
        primary = exc.diag.message_primary or str(exc)
        return cls(f"ERROR {state} ({condition}) {primary}")


@dataclass(frozen=True, slots=True)
class _Column:
    type_oid: int
    type_name: str
    selectable: bool


async def validate(conn: Conn, binding: Binding, role: str, publication: str) -> list[int]:
    """The publication tables a binding covers, or SubscriptionError as Realtime words it."""
    try:
        await _check_role(conn, role)
        tables = await _matching_tables(conn, binding, publication)
        if not tables:
            raise SubscriptionError(
                "Unable to subscribe to changes with given parameters. Please check Realtime is "
                f"enabled for the given connect parameters: [{binding.describe()}]"
            )
        for oid in tables:
            columns = await _columns(conn, oid, role)
            for flt in binding.filters:
                await _check_filter(conn, flt, columns)
            for name in binding.select or ():
                if not (name in columns and columns[name].selectable):
                    raise _CheckFailed.raised(f"invalid column for select {name}")
    except _CheckFailed as exc:
        raise SubscriptionError(
            "Unable to subscribe to changes with given parameters. An exception happened so "
            f"please check your connect parameters: [{binding.describe()}]. "
            f"Exception: {exc.text}"
        ) from exc
    return tables


async def _check_role(conn: Conn, role: str) -> None:
    cur = await conn.execute("select pg_catalog.to_regrole(%s) is not null", (role,))
    row = await cur.fetchone()
    if not row or not row[0]:
        raise _CheckFailed(f'ERROR 42704 (undefined_object) role "{role}" does not exist')


async def _matching_tables(conn: Conn, binding: Binding, publication: str) -> list[int]:
    cur = await conn.execute(
        """
        select c.oid
        from pg_catalog.pg_publication_tables pt
        join pg_catalog.pg_namespace n on n.nspname = pt.schemaname
        join pg_catalog.pg_class c on c.relnamespace = n.oid and c.relname = pt.tablename
        where pt.pubname = %(pub)s
          and (%(schema)s = '*' or pt.schemaname = %(schema)s)
          and (%(table)s = '*' or pt.tablename = %(table)s)
        order by c.oid
        """,
        {"pub": publication, "schema": binding.schema, "table": binding.table},
    )
    return [int(row[0]) for row in await cur.fetchall()]


async def _columns(conn: Conn, oid: int, role: str) -> dict[str, _Column]:
    cur = await conn.execute(
        """
        select a.attname, a.atttypid, a.atttypid::regtype::text,
               pg_catalog.has_column_privilege(%s, a.attrelid, a.attnum, 'SELECT')
        from pg_catalog.pg_attribute a
        where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
        """,
        (role, oid),
    )
    return {
        str(name): _Column(int(type_oid), str(type_name), bool(selectable))
        for name, type_oid, type_name, selectable in await cur.fetchall()
    }


async def _check_filter(conn: Conn, flt: Filter, columns: dict[str, _Column]) -> None:
    column = columns.get(flt.column)
    if column is None or not column.selectable:
        raise _CheckFailed.raised(f"invalid column for filter {flt.column}")
    type_sql = _type_sql(column.type_name)
    if flt.op == "in":
        count = await _scalar(
            conn,
            sql.SQL("select coalesce(array_length(%s::text::{}[], 1), 0)").format(type_sql),
            flt.value,
        )
        if int(count or 0) > MAX_IN_VALUES:
            raise _CheckFailed.raised("too many values for `in` filter. Maximum 100")
    elif flt.op == "is":
        _check_is(flt, column)
    elif flt.op in ("like", "ilike", "match", "imatch"):
        await _check_pattern_operator(conn, flt, column)
    else:
        await _scalar(conn, sql.SQL("select %s::text::{}").format(type_sql), flt.value)


def _check_is(flt: Filter, column: _Column) -> None:
    if flt.value not in IS_KEYWORDS:
        raise _CheckFailed.raised(
            "invalid value for is filter: must be null, true, false, or unknown"
        )
    if flt.value != "null" and column.type_name != "boolean":
        raise _CheckFailed.raised(
            f"is {flt.value} filter requires a boolean column, got {column.type_name}"
        )


async def _check_pattern_operator(conn: Conn, flt: Filter, column: _Column) -> None:
    operator = {"like": "~~", "ilike": "~~*", "match": "~", "imatch": "~*"}[flt.op]
    exists = await _scalar(
        conn,
        sql.SQL(
            "select exists(select 1 from pg_catalog.pg_operator where oprname = %s "
            "and oprleft = %s::oid)"
        ),
        operator,
        column.type_oid,
    )
    if not exists:
        raise _CheckFailed.raised(
            f"operator {flt.op} requires a text-compatible column type, got {column.type_name}"
        )
    if flt.op in ("match", "imatch"):
        try:
            await conn.execute("select '' ~ %s", (flt.value,))
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            primary = exc.diag.message_primary or str(exc)
            raise _CheckFailed.raised(
                f"invalid regular expression for {flt.op} filter: {primary}"
            ) from exc


async def _scalar(conn: Conn, query: sql.SQL | sql.Composed, *params: Any) -> Any:
    try:
        cur = await conn.execute(query, params)
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        raise _CheckFailed.from_pg(exc) from exc
    row = await cur.fetchone()
    return row[0] if row else None


def claims_json(claims: dict[str, Any]) -> str:
    return json.dumps(claims, separators=(",", ":"), sort_keys=True)
