"""An injectable clock: services take one so tests can move time.

Code reads the time only from a `Clock`. `OffsetClock` is the wall clock moved by a fixed
offset: it runs at real speed, so timers, leases and delays behave as always, while every
date the platform sees (delivery windows, holidays, expiry, token lifetimes) is the moved one.
Every process of one deployment must use the same offset; `SWITCHBOARD_CLOCK_OFFSET_SECONDS`
sets it, and `make test AT=…` uses it to run the suite at a chosen instant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The wall clock moved by `offset` (ahead when positive)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    @classmethod
    def reading(cls, instant: datetime) -> OffsetClock:
        """A clock that reads `instant` now, and runs on from there."""
        return cls(instant - datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def clock_with_offset(seconds: float) -> Clock:
    """The system clock, or a moved one when `seconds` is not 0."""
    return OffsetClock(timedelta(seconds=seconds)) if seconds else SystemClock()
