"""The delivery engine's policies through the whole platform: a message outside its sender
class's window waits SCHEDULED across a public holiday (injected clock) and goes when the window
opens; a class's peak throughput holds the measured send rate to one country."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from switchboard.server.app.server import Application, build_application
from switchboard.server.messaging.requests.messages import messages_table
from tests.support.messaging import us_number
from tests.support.server import make_settings

_m = messages_table.c


class FakeClock:
    """Real time running from a chosen instant; `jump` moves it (days in a test)."""

    def __init__(self, start: datetime) -> None:
        self.jump(start)

    def jump(self, to: datetime) -> None:
        self._base, self._started = to, time.monotonic()

    def now(self) -> datetime:
        return self._base + timedelta(seconds=time.monotonic() - self._started)


async def _rows(app: Application, request_id: str) -> list[Any]:
    query = select(messages_table).where(_m.message_request_id == request_id)
    async with app.db.read() as session:
        return list((await session.execute(query)).mappings())


async def _until(app: Application, request_id: str, state: str, count: int = 1) -> list[Any]:
    async with asyncio.timeout(20):
        while True:
            rows = await _rows(app, request_id)
            if sum(r["state"] == state for r in rows) == count:
                return rows
            await asyncio.sleep(0.05)


@pytest.fixture
def clock() -> FakeClock:
    # Wednesday 25 November 2026, 21:30 in San Francisco: commercial-na's window (08:00-21:00
    # on weekdays) has closed, and Thursday is Thanksgiving (HOL: closed all day).
    return FakeClock(datetime(2026, 11, 26, 5, 30, tzinfo=UTC))


@pytest.fixture
async def app_at(
    tmp_path: Path, fresh_database_url: str, clock: FakeClock
) -> AsyncIterator[Application]:
    settings = make_settings(tmp_path, database_url=fresh_database_url)
    application = build_application(settings, clock=clock)
    await application.start()
    yield application
    await application.stop()


async def test_window_defers_across_a_holiday(app_at: Application, clock: FakeClock) -> None:
    app = app_at
    org = f"org-{uuid.uuid4().hex[:8]}"
    sender = await app.messaging.senders.create(
        org, "t", {"type_id": "sms-long-code", "class_id": "commercial-na", "address": us_number()}
    )
    request_id = await app.messaging.message_requests.create(
        org, "t", {"from": sender, "to": [us_number()], "body": "Black Friday!"}
    )
    [row] = await _until(app, request_id, "SCHEDULED")
    # Friday 27 November 08:00 in San Francisco: never dropped, never sent on the holiday.
    assert row["scheduled_at"] == datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    clock.jump(datetime(2026, 11, 26, 20, 0, tzinfo=UTC))  # Thanksgiving noon: still closed
    app.bus.notify()
    await asyncio.sleep(0.5)
    assert [r["state"] for r in await _rows(app, request_id)] == ["SCHEDULED"]
    opening = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    clock.jump(opening)
    app.bus.notify()
    [row] = await _until(app, request_id, "DELIVERED")
    assert opening <= row["sent_at"] < opening + timedelta(seconds=5)


async def test_peak_throughput_caps_the_send_rate(app: Application) -> None:
    await app.messaging.reference.put_class(
        "throttled-test",
        {
            "name": "Throttled (test)",
            "applicable_countries": ["US"],
            "country_peak_throughput": 5,
            "country_peak_total_throughput": 100,
            "country_daily_throughput": 100000,
            "delivery_window": '{"DEFAULT": {"OTH": ["00:00-24:00"]}}',
        },
        None,
    )
    await app.delivery._policies.refresh(force=True)
    org = f"org-{uuid.uuid4().hex[:8]}"
    sender = await app.messaging.senders.create(
        org, "t", {"type_id": "sms-long-code", "class_id": "throttled-test", "address": us_number()}
    )
    count = 30
    request_id = await app.messaging.message_requests.create(
        org, "t", {"from": sender, "to": [us_number() for _ in range(count)], "body": "x"}
    )
    rows = await _until(app, request_id, "DELIVERED", count)
    sent = sorted(r["sent_at"] for r in rows)
    span = (sent[-1] - sent[0]).total_seconds()
    # 5/s with a one-second burst of 5: the other 25 need at least 5 s.
    assert span >= 4.5, span
    busiest = max(
        sum(1 for t in sent if start <= t < start + timedelta(seconds=1)) for start in sent
    )
    assert busiest <= 10, busiest  # never more than the burst plus one second's rate
    rate = (count - 5) / span
    print(
        f"\nthroughput cap 5/s: {count} sent in {span:.2f} s, {rate:.2f}/s after the burst, "
        f"at most {busiest} in any second"
    )
    assert rate <= 5.5, rate
