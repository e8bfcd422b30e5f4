"""Private channels: RLS policies on `realtime.messages`, checked as hosted Realtime checks them
(`Realtime.Tenants.Authorization`, lib/realtime/tenants/authorization.ex).

* Read (at join): in one transaction, insert a probe row per extension (`broadcast`, plus
  `presence` when presence is enabled) with the channel's topic, switch to the joining user's
  role and claims (`role`, `realtime.topic`, `request.jwt.claims`, `request.jwt.claim.sub`,
  `request.jwt.claim.role`, `request.headers`, all transaction-local), select the probes back
  and roll back. A probe the SELECT policies let through grants that extension's read. A join
  with neither read is refused: "Unauthorized: You do not have permissions to read from this
  Channel topic: <topic>".
* Write (at the first broadcast or presence track of the channel): the same settings, then an
  INSERT of a row per extension under a savepoint; `insufficient_privilege` (an INSERT policy
  saying no) means no write. A broadcast without write is dropped silently, as on hosted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from supaworker_local.realtime.database import Conn

EXTENSIONS = ("broadcast", "presence")


@dataclass(slots=True)
class Policies:
    """None = not evaluated yet (hosted's `nil`), as opposed to denied (False)."""

    broadcast_read: bool | None = None
    presence_read: bool | None = None
    broadcast_write: bool | None = None
    presence_write: bool | None = None


class AuthorizationError(Exception):
    """The check itself failed (database unreachable, a policy raising an error)."""


def _context(topic: str, claims: dict[str, Any]) -> tuple[str, ...]:
    role = str(claims.get("role", ""))
    sub = claims.get("sub")
    return (
        role,
        topic,
        json.dumps(claims, separators=(",", ":")),
        "" if sub is None else str(sub),
        role,
        "{}",
    )


_SET_CONFIG = """
select set_config('role', %s, true),
       set_config('realtime.topic', %s, true),
       set_config('request.jwt.claims', %s, true),
       set_config('request.jwt.claim.sub', %s, true),
       set_config('request.jwt.claim.role', %s, true),
       set_config('request.headers', %s, true)
"""


async def read(
    conn: Conn, policies: Policies, topic: str, claims: dict[str, Any], *, presence: bool
) -> Policies:
    extensions = EXTENSIONS if presence else ("broadcast",)
    probes = {ext: uuid.uuid4() for ext in extensions}
    try:
        async with conn.transaction(force_rollback=True):
            for ext, probe in probes.items():
                await conn.execute(
                    "insert into realtime.messages (id, topic, extension) values (%s, %s, %s)",
                    (probe, topic, ext),
                )
            await conn.execute(_SET_CONFIG, _context(topic, claims))
            cur = await conn.execute(
                "select id from realtime.messages where id = any(%s)", (list(probes.values()),)
            )
            visible = {row[0] for row in await cur.fetchall()}
    except psycopg.OperationalError as exc:
        raise AuthorizationError(str(exc).strip()) from exc
    except psycopg.Error as exc:
        # A policy that errors (or an unknown role) denies, as hosted's RlsPolicyError does.
        raise PolicyError(exc.diag.message_primary or str(exc)) from exc
    policies.broadcast_read = probes["broadcast"] in visible
    if presence:
        policies.presence_read = probes["presence"] in visible
    return policies


async def write(conn: Conn, policies: Policies, topic: str, claims: dict[str, Any]) -> Policies:
    results: dict[str, bool] = {}
    try:
        async with conn.transaction(force_rollback=True):
            await conn.execute(_SET_CONFIG, _context(topic, claims))
            for ext in EXTENSIONS:
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "insert into realtime.messages (topic, extension) values (%s, %s)",
                            (topic, ext),
                        )
                    results[ext] = True
                except psycopg.errors.InsufficientPrivilege:
                    results[ext] = False
    except psycopg.OperationalError as exc:
        raise AuthorizationError(str(exc).strip()) from exc
    except psycopg.Error as exc:
        raise PolicyError(exc.diag.message_primary or str(exc)) from exc
    policies.broadcast_write = results["broadcast"]
    policies.presence_write = results["presence"]
    return policies


class PolicyError(Exception):
    """A policy raised an error: hosted logs `RlsPolicyError` and treats it as a denial."""
