"""Subscribing through supabase-py's Realtime client to Broadcast messages sent from the
database (private topics, issue 20), live once joined: the join of a private topic is where
its RLS policies on realtime.messages are checked. supaworker publishes no table, so it has
no postgres_changes subscription (docs/architecture.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from realtime import AsyncRealtimeClient
from realtime.types import BroadcastPayload, RealtimeChannelOptions, RealtimeSubscribeStates

__all__ = ["BroadcastBinding", "close_quietly", "subscribe"]


@dataclass(frozen=True)
class BroadcastBinding:
    """A Broadcast event (e.g. sent by realtime.send in the database) and its callback, which
    receives the message's payload."""

    event: str
    on_message: Callable[[dict[str, Any]], None]


def realtime_url(supabase_url: str) -> str:
    return supabase_url.rstrip("/") + "/realtime/v1"


async def subscribe(
    supabase_url: str,
    key: str,
    channel_name: str,
    bindings: Sequence[BroadcastBinding],
    *,
    timeout: float = 10,
    access_token: str | None = None,
    private: bool = False,
) -> AsyncRealtimeClient:
    """Connect, join, and return once joined; raise ConnectionError otherwise.

    `private` joins the private topic (`config.private`), authorised by the RLS policies on
    realtime.messages (the service role bypasses them). Reconnection is left to the caller
    (realtime-py's own gives up after a few tries)."""
    client = AsyncRealtimeClient(
        realtime_url(supabase_url), token=key, auto_reconnect=False, hb_interval=15
    )
    live = asyncio.Event()
    errors: list[str] = []

    def on_state(state: Any, error: Exception | None) -> None:
        if error is not None:
            errors.append(str(error))
            live.set()
        elif state == RealtimeSubscribeStates.SUBSCRIBED:
            live.set()
        elif state in (RealtimeSubscribeStates.CHANNEL_ERROR, RealtimeSubscribeStates.TIMED_OUT):
            errors.append(str(state))
            live.set()

    try:
        await asyncio.wait_for(client.connect(), timeout)
        if access_token:
            await client.set_auth(access_token)
        params: RealtimeChannelOptions = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"key": "", "enabled": False},
                "private": private,
            }
        }
        channel = client.channel(channel_name, params)
        for b in bindings:
            channel.on_broadcast(b.event, _payload_to(b.on_message))
        await channel.subscribe(on_state)
        await asyncio.wait_for(live.wait(), timeout)
        if errors:
            raise ConnectionError(f"Realtime refused the subscription: {errors[0]}")
    except BaseException:
        await close_quietly(client)
        raise
    return client


def _payload_to(on_message: Callable[[dict[str, Any]], None]) -> Callable[[BroadcastPayload], None]:
    def deliver(message: BroadcastPayload) -> None:
        payload = message.get("payload") if isinstance(message, dict) else None
        on_message(payload if isinstance(payload, dict) else {})

    return deliver


async def close_quietly(client: AsyncRealtimeClient) -> None:
    try:
        await asyncio.wait_for(client.close(), 2)
    except Exception:
        return
