"""Delivery windows of communication types, on the delivery engine's window engine.

A type's `deliveryWindow` is `ANYDAY_ANYTIME` or `ANYDAY_<h><AM|PM><h><AM|PM>` (`ANYDAY_8AM8PM`:
08:00 to 20:00 every day; `12AM` as an end is midnight), parsed by the types domain into hours.
A due time outside the window moves to the window's next opening; inside it stays. Nothing is
dropped.

The recipient's time zones come from the phone number's region and prefix (libphonenumber's
time zone data: one zone for most numbers, several for countries such as Spain, the US or
Russia). With several zones the window must hold in all of them (Spain's 08:00-20:00 becomes
09:00-20:00 Madrid time, which is 08:00-19:00 in the Canaries); when the zones are too far apart
for any common time, the first zone decides. Without a number (email only), UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from switchboard.server.delivery.windows import DeliveryWindow, next_opening
from switchboard.server.telephony.phone import zones_for_number

__all__ = ["fit", "zones_for_number"]


def fit(due: datetime, hours: tuple[int, int] | None, zones: Sequence[ZoneInfo]) -> datetime:
    """`due` (UTC) moved to the first instant inside the window (local hours [start, end), as
    the types domain's `delivery_hours` gives them; None: any time) in every one of `zones` (UTC
    when none), as a UTC time."""
    if hours is None:
        return due
    opening = next_opening(DeliveryWindow.every_day(*hours), due, zones=zones)
    assert opening is not None  # an every-day window with hours always opens
    return opening
