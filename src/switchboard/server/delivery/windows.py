"""Delivery windows: when a message may reach its recipient, in the recipient's local time.

One engine for sender classes' `delivery_window` (docs/rest-families.md) and communication types'
`ANYDAY_<h><AM|PM><h><AM|PM>`:

    {"DEFAULT": {"MON": ["08:00-20:00"], …, "HOL": [], "OTH": ["09:00-18:00"]}, "ES": {…}}

- The block is the destination country's, else `DEFAULT`; no block (or no window) is "any time".
- A local date takes `HOL` when it is a public holiday of that country (the `holidays` package)
  and the block has `HOL`; otherwise its weekday's list (`MON`…`SUN`); otherwise `OTH`; a day with
  none of these is closed. An empty list closes the day. `24:00` ends a window at midnight.
- Recipients with several possible zones (a number whose country spans zones, no contact zone):
  the window must hold in all of them; when no common time exists within two days, the first
  zone decides.

`next_opening` answers the first instant at or after a given UTC time inside the window, or None
when the window never opens (every day closed): the caller then expires or fails the message
instead of waiting forever.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays

WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_SEARCH_DAYS = 15  # a window closed for two weeks straight counts as never opening
_UTC = ZoneInfo("UTC")

Range = tuple[int, int]  # minutes after local midnight, [opens, closes); closes may be 1440


@dataclass(frozen=True)
class DeliveryWindow:
    """A parsed window: per-country blocks of day key → ranges (None: no restriction)."""

    blocks: Mapping[str, Mapping[str, tuple[Range, ...]]]

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | None) -> DeliveryWindow | None:
        """A window from its JSON text or object; None for "any time" (empty or absent)."""
        if not spec:
            return None
        raw = json.loads(spec) if isinstance(spec, str) else spec
        if not raw:
            return None
        blocks = {
            country.upper(): {
                day.upper(): tuple(_range(w) for w in ranges) for day, ranges in days.items()
            }
            for country, days in raw.items()
        }
        return cls(blocks)

    @classmethod
    def every_day(cls, opens_hour: int, closes_hour: int) -> DeliveryWindow:
        """The same hours every day, holidays included (communication types' ANYDAY_…)."""
        return cls({"DEFAULT": {"OTH": ((opens_hour * 60, closes_hour * 60),)}})

    def ranges_on(self, day: date, country: str) -> tuple[Range, ...]:
        block = self.blocks.get(country.upper()) or self.blocks.get("DEFAULT")
        if block is None:
            return ((0, 1440),)
        if "HOL" in block and country and day in _holidays(country.upper(), day.year):
            return block["HOL"]
        key = WEEKDAYS[day.weekday()]
        if key in block:
            return block[key]
        return block.get("OTH", ())


def _range(text: str) -> Range:
    start, _, end = text.partition("-")
    return _minutes(start), _minutes(end)


def _minutes(text: str) -> int:
    hours, _, minutes = text.strip().partition(":")
    return int(hours) * 60 + int(minutes or 0)


@functools.lru_cache(maxsize=512)
def _holidays(country: str, year: int) -> frozenset[date]:
    try:
        return frozenset(holidays.country_holidays(country, years=year))
    except NotImplementedError:  # a country the package does not know: no holidays
        return frozenset()


def _local(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """`minute` after local midnight of `day`, as an aware time; a wall time skipped by a DST
    change resolves forward through UTC arithmetic."""
    midnight = datetime.combine(day, time(0), zone)
    return (midnight.astimezone(UTC) + timedelta(minutes=minute)).astimezone(zone)


def _next_in_zone(
    window: DeliveryWindow, country: str, zone: ZoneInfo, moment: datetime
) -> datetime | None:
    local = moment.astimezone(zone)
    for offset in range(_SEARCH_DAYS):
        day = local.date() + timedelta(days=offset)
        for opens, closes in sorted(window.ranges_on(day, country)):
            start = _local(day, opens, zone)
            end = _local(day, closes, zone)
            if end <= local:
                continue
            return max(start, local).astimezone(UTC)
    return None


def next_opening(
    window: DeliveryWindow | None,
    moment: datetime,
    *,
    country: str = "",
    zones: Sequence[ZoneInfo] = (),
) -> datetime | None:
    """The first UTC instant at or after `moment` inside `window` in every one of `zones` (UTC
    when none); `moment` itself when it is inside; None when the window never opens."""
    if window is None:
        return moment
    candidates = list(zones) or [_UTC]
    current = moment
    for _ in range(8):  # each round satisfies one more zone; a common time is found in a few
        moved = False
        for zone in candidates:
            opening = _next_in_zone(window, country, zone, current)
            if opening is None:
                return None
            if opening != current:
                current = opening
                moved = True
        if not moved:
            return current
        if current - moment > timedelta(days=2):
            break  # no common window: zones too far apart
    return _next_in_zone(window, country, candidates[0], moment)


__all__ = ["WEEKDAYS", "DeliveryWindow", "next_opening"]
