"""Delivery windows: when a communication may reach its recipient, in the recipient's local time.

A type's `deliveryWindow` is `ANYDAY_ANYTIME` or `ANYDAY_<h><AM|PM><h><AM|PM>` (`ANYDAY_8AM8PM`:
08:00 to 20:00 every day; `12AM` as an end is midnight), parsed by the types domain. A due time
outside the window moves to the window's next opening; inside it stays. Nothing is dropped.

The recipient's time zones come from the phone number's region and prefix (libphonenumber's
time zone data: one zone for most numbers, several for countries such as Spain, the US or
Russia). With several zones the window must hold in all of them (Spain's 08:00-20:00 becomes
09:00-20:00 Madrid time, which is 08:00-19:00 in the Canaries); when the zones are too far apart
for any common time, the first zone decides. Without a number (email only), UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from switchboard.server.sms.phone import zones_for_number

__all__ = ["Window", "fit", "zones_for_number"]


@dataclass(frozen=True)
class Window:
    """Local opening and closing, as minutes after midnight; closing may be 1440 (midnight)."""

    opens: int
    closes: int

    @classmethod
    def from_hours(cls, hours: tuple[int, int]) -> Window:
        return cls(hours[0] * 60, hours[1] * 60)

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return self.opens <= minute < self.closes


def _next_opening(local: datetime, window: Window) -> datetime:
    """The first instant at or after `local` inside `window`, in local wall time."""
    if window.contains(local):
        return local
    minute = local.hour * 60 + local.minute
    day = local.date() if minute < window.opens else local.date() + timedelta(days=1)
    opening = datetime.combine(day, time(window.opens // 60, window.opens % 60), local.tzinfo)
    # A wall time skipped by a DST change resolves forward through UTC arithmetic.
    return opening.astimezone(UTC).astimezone(local.tzinfo)


def fit(due: datetime, hours: tuple[int, int] | None, zones: Sequence[ZoneInfo]) -> datetime:
    """`due` (UTC) moved to the first instant inside the window (local hours [start, end), as
    the types domain's `delivery_hours` gives them; None: any time) in every one of `zones` (UTC
    when none), as a UTC time."""
    if hours is None:
        return due
    window = Window.from_hours(hours)
    candidates = list(zones) or [ZoneInfo("UTC")]
    moment = due
    for _ in range(8):  # each round satisfies one more zone; a common time is found in a few
        moved = False
        for zone in candidates:
            local = moment.astimezone(zone)
            opening = _next_opening(local, window)
            if opening != local:
                moment = opening.astimezone(UTC)
                moved = True
        if not moved:
            return moment
        if moment - due > timedelta(days=2):
            break  # no common window: zones too far apart
    return _next_opening(due.astimezone(candidates[0]), window).astimezone(UTC)
