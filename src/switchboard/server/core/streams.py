"""The one stream contract's request checks, shared by every Stream* RPC (README "Streams: one
contract"): event-type patterns, states, id lists, heartbeat periods."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from switchboard.server.core.validation import Checks

MAX_STREAM_IDS = 1000


def type_patterns(
    patterns: Sequence[str], domain_prefixes: Sequence[str], checks: Checks, field: str = "types"
) -> tuple[list[str], tuple[str, ...]]:
    """Event types a client asked for, as (exact types, type prefixes) for EventFeed.follow.

    A pattern is an exact type (`message.delivered`), a prefix pattern (`message.*`) or `*`;
    each must be about this stream's domain (`domain_prefixes`, like `message.`). None given is
    every event of the domain."""
    exact: list[str] = []
    prefixes: list[str] = []
    for i, pattern in enumerate(patterns):
        if pattern == "*":
            prefixes.extend(domain_prefixes)
        elif pattern.endswith(".*"):
            prefix = pattern[:-1]
            if not prefix.startswith(tuple(domain_prefixes)):
                checks.fail(f"{field}[{i}]", f"{pattern!r} matches no event of this stream")
            prefixes.append(prefix)
        elif pattern.startswith(tuple(domain_prefixes)) and "*" not in pattern:
            exact.append(pattern)
        else:
            checks.fail(f"{field}[{i}]", f"{pattern!r} is not an event type of this stream")
    if not patterns:
        prefixes = list(domain_prefixes)
    return exact, tuple(dict.fromkeys(prefixes))


def heartbeat(seconds: int, checks: Checks, field: str = "heartbeat_seconds") -> int:
    """A stream's heartbeat period: 1 to 300 seconds, 15 when not given."""
    value = seconds or 15
    if not 1 <= value <= 300:
        checks.fail(field, "must be between 1 and 300", "Range")
    return value


def id_list(ids: Sequence[str], checks: Checks, field: str) -> list[str]:
    if len(ids) > MAX_STREAM_IDS:
        checks.fail(field, f"at most {MAX_STREAM_IDS} ids", "Range")
    return list(ids)


def states(
    values: Sequence[str], allowed: type[StrEnum], checks: Checks, field: str = "states"
) -> frozenset[str]:
    """The states a client asked for, as `allowed`'s values (matched case-insensitively); each
    unknown one is a violation naming its index (`states[1]`). Empty means every state."""
    wanted: set[str] = set()
    for i, value in enumerate(values):
        member = checks.choice(f"{field}[{i}]", value, allowed)
        if member is not None:
            wanted.add(member.value)
    return frozenset(wanted)
