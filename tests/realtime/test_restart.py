"""A real Postgres restart under a live subscription: the poller reconnects, makes a new slot,
re-announces "Subscribed to PostgreSQL", and changes flow again; the socket stays up."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from supaworker_local import postgres
from supaworker_local.config import StackConfig
from tests.realtime.conftest import Admin, connect, insert
from tests.realtime.wire import WireClient

pytestmark = [pytest.mark.stack, pytest.mark.chaos]


def _wait_for_postgrest(stack: StackConfig, timeout: float = 30) -> None:
    """Other tests share the stack: do not hand it back before PostgREST has reconnected."""
    deadline = time.monotonic() + timeout
    url = f"http://{stack.host}:{stack.postgrest_admin_port}/ready"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError("PostgREST did not come back after the restart")


async def test_database_restart_is_survived(
    realtime_stack: StackConfig, wire: list[WireClient], rt_table: str, admin_db: Admin
) -> None:
    client = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    topic = "realtime:restart"
    join_ref, _ = await client.join(
        topic, {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": rt_table}]}
    )
    await client.subscribed(topic)
    insert(admin_db, rt_table, None, "before")
    await client.expect(lambda m: m.event == "postgres_changes")

    try:
        postgres.stop(realtime_stack, mode="fast")
        postgres.start(realtime_stack)
    finally:
        _wait_for_postgrest(realtime_stack)
    assert (await client.subscribed(topic, timeout=30)).status == "ok"

    with postgres.admin_connect(realtime_stack) as db:
        insert(db, rt_table, None, "after")
    got = await client.expect(lambda m: m.event == "postgres_changes")
    assert got.payload["data"]["record"]["body"] == "after"
    # Same socket, same channel: nothing had to reconnect on the client side.
    ref = await client.send(topic, "phx_leave", {}, join_ref=join_ref)
    assert (await client.expect(lambda m: m.ref == ref)).status == "ok"
