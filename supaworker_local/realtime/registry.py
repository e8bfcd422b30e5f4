"""Who listens to what: `postgres_changes` subscriptions and topic membership (broadcast,
presence). Everything lives on the gateway's event loop, so plain dicts suffice."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from supaworker_local.realtime.bindings import Binding

if TYPE_CHECKING:
    from supaworker_local.realtime.channel import Channel

# A public and a private channel with the same name are different topics on Realtime.
TopicKey = tuple[str, bool]


@dataclass(frozen=True, eq=False, slots=True)
class Subscription:
    channel: Channel
    binding: Binding


class Registry:
    def __init__(self) -> None:
        self._subscriptions: dict[Channel, list[Subscription]] = {}
        # Index by exact (schema, table); bindings with a `*` live in `_wildcard`.
        self._by_entity: dict[tuple[str, str], list[Subscription]] = defaultdict(list)
        self._wildcard: list[Subscription] = []
        self._topics: dict[TopicKey, dict[Channel, None]] = defaultdict(dict)

    # -- postgres_changes -------------------------------------------------------------------
    def set_subscriptions(self, channel: Channel, bindings: Iterable[Binding]) -> None:
        self.remove_subscriptions(channel)
        subscriptions = [Subscription(channel, binding) for binding in bindings]
        if not subscriptions:
            return
        self._subscriptions[channel] = subscriptions
        for sub in subscriptions:
            if "*" in (sub.binding.schema, sub.binding.table):
                self._wildcard.append(sub)
            else:
                self._by_entity[(sub.binding.schema, sub.binding.table)].append(sub)

    def remove_subscriptions(self, channel: Channel) -> None:
        removed = self._subscriptions.pop(channel, None)
        if not removed:
            return
        gone = set(map(id, removed))
        self._wildcard = [s for s in self._wildcard if id(s) not in gone]
        for key in {(s.binding.schema, s.binding.table) for s in removed}:
            remaining = [s for s in self._by_entity.get(key, []) if id(s) not in gone]
            if remaining:
                self._by_entity[key] = remaining
            else:
                self._by_entity.pop(key, None)

    def candidates(self, schema: str, table: str, action: str) -> list[Subscription]:
        """Subscriptions whose entity and event match; filters and RLS come later."""
        exact = self._by_entity.get((schema, table), [])
        wild = [s for s in self._wildcard if s.binding.matches_entity(schema, table)]
        return [s for s in (*exact, *wild) if s.binding.matches_action(action)]

    def subscribed_channels(self) -> list[Channel]:
        return list(self._subscriptions)

    def has_subscriptions(self) -> bool:
        return bool(self._subscriptions)

    def subscription_count(self) -> int:
        return sum(len(subs) for subs in self._subscriptions.values())

    # -- topics -----------------------------------------------------------------------------
    def join_topic(self, key: TopicKey, channel: Channel) -> None:
        self._topics[key][channel] = None

    def leave_topic(self, key: TopicKey, channel: Channel) -> None:
        members = self._topics.get(key)
        if members is None:
            return
        members.pop(channel, None)
        if not members:
            del self._topics[key]

    def has_topics(self) -> bool:
        return bool(self._topics)

    def members(self, key: TopicKey) -> list[Channel]:
        return list(self._topics.get(key, ()))
