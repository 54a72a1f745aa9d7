"""The delivery window engine (docs/rest-families.md format): weekdays, OTH, HOL with real public
holidays, country blocks, midnight and weekend crossings, DST, several zones, windows that never
open."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from switchboard.server.delivery.windows import DeliveryWindow, next_opening

pytestmark = pytest.mark.unit

MADRID = ZoneInfo("Europe/Madrid")
NEW_YORK = ZoneInfo("America/New_York")

OFFICE = DeliveryWindow.parse(
    {
        "DEFAULT": {
            "MON": ["08:00-20:00"],
            "TUE": ["08:00-20:00"],
            "WED": ["08:00-20:00"],
            "THU": ["08:00-20:00"],
            "FRI": ["08:00-13:00", "15:00-20:00"],
            "SAT": ["10:00-14:00"],
            "SUN": [],
            "HOL": [],
        },
        "US": {"OTH": ["09:00-21:00"], "HOL": ["12:00-13:00"]},
    }
)


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # inside: unchanged
        (local(MADRID, 2026, 11, 24, 9, 30), local(MADRID, 2026, 11, 24, 9, 30)),
        # before opening: the same morning
        (local(MADRID, 2026, 11, 24, 6, 0), local(MADRID, 2026, 11, 24, 8, 0)),
        # after closing: crosses midnight to the next morning
        (local(MADRID, 2026, 11, 24, 22, 15), local(MADRID, 2026, 11, 25, 8, 0)),
        # Friday's lunch gap
        (local(MADRID, 2026, 11, 27, 13, 30), local(MADRID, 2026, 11, 27, 15, 0)),
        # Saturday evening: Sunday is closed, Monday morning opens
        (local(MADRID, 2026, 11, 28, 18, 0), local(MADRID, 2026, 11, 30, 8, 0)),
        # 8 December (Immaculate Conception, a Tuesday) is an ES holiday, closed (HOL: [])
        (local(MADRID, 2026, 12, 7, 21, 0), local(MADRID, 2026, 12, 9, 8, 0)),
    ],
)
def test_spanish_office_hours(moment: datetime, expected: datetime) -> None:
    assert next_opening(OFFICE, moment, country="ES", zones=[MADRID]) == expected


def test_country_block_and_holiday_hours() -> None:
    # Thanksgiving 2026 is Thursday 26 November: only the HOL hour; the next day is OTH.
    before = local(NEW_YORK, 2026, 11, 26, 8, 0)
    assert next_opening(OFFICE, before, country="US", zones=[NEW_YORK]) == local(
        NEW_YORK, 2026, 11, 26, 12, 0
    )
    after = local(NEW_YORK, 2026, 11, 26, 13, 0)
    assert next_opening(OFFICE, after, country="US", zones=[NEW_YORK]) == local(
        NEW_YORK, 2026, 11, 27, 9, 0
    )
    # A day that is a holiday elsewhere but not in the US takes its weekday/OTH hours.
    assert next_opening(
        OFFICE, local(NEW_YORK, 2026, 12, 8, 10, 0), country="US", zones=[NEW_YORK]
    ) == local(NEW_YORK, 2026, 12, 8, 10, 0)


def test_no_window_and_never_opening() -> None:
    moment = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert DeliveryWindow.parse(None) is None and DeliveryWindow.parse("") is None
    assert next_opening(None, moment) == moment
    closed = DeliveryWindow.parse('{"DEFAULT": {"OTH": []}}')
    assert next_opening(closed, moment) is None
    # A block for another country only: DEFAULT missing means no restriction here.
    only_es = DeliveryWindow.parse({"ES": {"OTH": []}})
    assert next_opening(only_es, moment, country="FR") == moment


def test_midnight_end_and_dst() -> None:
    late = DeliveryWindow.parse({"DEFAULT": {"OTH": ["22:00-24:00"]}})
    inside = local(MADRID, 2026, 11, 24, 23, 59)
    assert next_opening(late, inside, zones=[MADRID]) == inside
    # 29 March 2026: Madrid skips 02:00-03:00; a window opening at 02:30 opens at 03:30 local.
    skipped = DeliveryWindow.parse({"DEFAULT": {"OTH": ["02:30-05:00"]}})
    opening = next_opening(skipped, local(MADRID, 2026, 3, 29, 0, 0), zones=[MADRID])
    assert opening == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_several_zones_need_a_common_time() -> None:
    canary = ZoneInfo("Atlantic/Canary")
    window = DeliveryWindow.every_day(8, 20)
    # 07:30 Madrid is 06:30 in the Canaries: 08:00 must hold in both → 09:00 Madrid.
    result = next_opening(window, local(MADRID, 2026, 11, 24, 7, 30), zones=[MADRID, canary])
    assert result == local(MADRID, 2026, 11, 24, 9, 0)
