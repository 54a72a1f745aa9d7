"""Which events an event handler receives: its type patterns and its channel/application scopes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from sqlalchemy.orm import Session

#: Whether an event (type, resource id, payload) is about one channel.
ChannelPredicate = Callable[[str, str, Mapping[str, Any]], bool]


class ChannelScope(Protocol):
    """What a channel scope means, answered by the domain that owns channels (messaging): the
    predicate for one org's channel as it is now, read inside the matcher's transaction."""

    def __call__(self, session: Session, org_id: str, channel_id: str) -> ChannelPredicate: ...


def own_events_only(channel_id: str) -> ChannelPredicate:
    """Without a ChannelScope: the channel's own events and payloads that name it."""

    def about(event_type: str, resource_id: str, data: Mapping[str, Any]) -> bool:
        if event_type.startswith("channel."):
            return resource_id == channel_id
        return data.get("channel_id") == channel_id

    return about


_PATTERN = re.compile(r"\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?")


def valid_pattern(pattern: str) -> bool:
    """`*`, an exact type (`message.delivered`) or a prefix (`message.*`)."""
    return len(pattern) <= 64 and _PATTERN.fullmatch(pattern) is not None


def type_matches(patterns: Iterable[str], event_type: str) -> bool:
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def scope_matches(
    about_channel: ChannelPredicate | None,
    application_id: str,
    event_type: str,
    resource_id: str,
    data: Mapping[str, Any],
) -> bool:
    """An empty scope matches everything; a channel scope only events about that channel (its
    ChannelPredicate), an application scope only payloads naming that `application_id`."""
    if about_channel is not None and not about_channel(event_type, resource_id, data):
        return False
    return not (application_id and data.get("application_id") != application_id)


def split(stored: str) -> list[str]:
    return [p for p in stored.split(",") if p]


def join(patterns: Iterable[str]) -> str:
    return "," + ",".join(patterns) + ","
