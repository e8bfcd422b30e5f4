"""Subscribing to `postgres_changes` through supabase-py's Realtime client, and knowing when
the subscription is really live (after "Subscribed to PostgreSQL", not merely joined)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from realtime import AsyncRealtimeClient
from realtime.types import PostgresChangesPayload
from realtime.types import RealtimePostgresChangesListenEvent as Event

__all__ = ["Binding", "Change", "Event", "close_quietly", "record_of", "subscribe"]

Change = PostgresChangesPayload


@dataclass(frozen=True)
class Binding:
    event: Event
    table: str
    on_change: Callable[[Change], None]
    filter: str | None = None


def realtime_url(supabase_url: str) -> str:
    return supabase_url.rstrip("/") + "/realtime/v1"


def record_of(payload: Any) -> dict[str, Any]:
    """The new row of a postgres_changes payload ({} when there is none)."""
    data = payload.get("data", {}) if isinstance(payload, dict) else {}
    record = data.get("record") if isinstance(data, dict) else None
    return record if isinstance(record, dict) else {}


async def subscribe(
    supabase_url: str,
    key: str,
    channel_name: str,
    bindings: Sequence[Binding],
    *,
    timeout: float = 10,
    access_token: str | None = None,
) -> AsyncRealtimeClient:
    """Connect, join, and return once changes flow; raise ConnectionError otherwise.

    Reconnection is left to the caller (realtime-py's own gives up after a few tries)."""
    client = AsyncRealtimeClient(
        realtime_url(supabase_url), token=key, auto_reconnect=False, hb_interval=15
    )
    live = asyncio.Event()
    errors: list[str] = []

    def on_system(payload: Any) -> None:
        # realtime-py passes a pydantic model for successful system messages.
        if (
            getattr(payload, "extension", None) == "postgres_changes"
            and getattr(payload, "status", None) == "ok"
        ):
            live.set()

    def on_state(state: Any, error: Exception | None) -> None:
        if error is not None:
            errors.append(str(error))
            live.set()

    try:
        await asyncio.wait_for(client.connect(), timeout)
        if access_token:
            await client.set_auth(access_token)
        channel = client.channel(channel_name)
        for b in bindings:
            channel.on_postgres_changes(b.event, b.on_change, table=b.table, filter=b.filter)
        channel.on_system(on_system)
        await channel.subscribe(on_state)
        await asyncio.wait_for(live.wait(), timeout)
        if errors:
            raise ConnectionError(f"Realtime refused the subscription: {errors[0]}")
    except BaseException:
        await close_quietly(client)
        raise
    return client


async def close_quietly(client: AsyncRealtimeClient) -> None:
    try:
        await asyncio.wait_for(client.close(), 2)
    except Exception:
        return
