"""Which events an event handler receives: its type patterns and its channel/application scopes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

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
    channel_id: str, application_id: str, event_type: str, resource_id: str, data: Mapping[str, Any]
) -> bool:
    """An empty scope matches everything; a set one only events whose payload names that channel
    (`channel_id`, or a channel event's own id) or application (`application_id`)."""
    if channel_id:
        own = resource_id if event_type.startswith("channel.") else None
        if data.get("channel_id") != channel_id and own != channel_id:
            return False
    return not (application_id and data.get("application_id") != application_id)


def split(stored: str) -> list[str]:
    return [p for p in stored.split(",") if p]


def join(patterns: Iterable[str]) -> str:
    return "," + ",".join(patterns) + ","
