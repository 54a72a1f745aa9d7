"""The fan-out worker across interruptions: a request resumes after its last committed batch,
progress is readable while PREPARING, no recipient is messaged twice or skipped, and a cancel
during preparation stops it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, update

from switchboard.server.app.server import Application, build_application
from switchboard.server.contacts.repository import contacts
from switchboard.server.core.listing import Page
from switchboard.server.core.validation import Checks
from switchboard.server.delivery import queue
from switchboard.server.messaging.requests.fanout import Fanout
from switchboard.server.messaging.requests.fanout_worker import MessageRequestWorker
from switchboard.server.messaging.requests.message_requests import requests_table
from switchboard.server.messaging.requests.messages import messages_table
from tests.support.messaging import ALWAYS_OPEN, us_number
from tests.support.server import make_settings

CRITERIA = '{"all":[{"field":"country","op":"eq","value":"ES"}]}'


class Crash(Exception):
    pass


@pytest.fixture
async def app(tmp_path: Path, fresh_database_url: str) -> AsyncIterator[Application]:
    application = build_application(make_settings(tmp_path, database_url=fresh_database_url))
    await application.start()
    await application.messaging.message_worker.stop()  # the test drives fan-outs itself
    yield application
    await application.stop()


def _worker(app: Application, batch: int) -> MessageRequestWorker:
    domain = app.messaging
    fanout = Fanout(
        db=app.db,
        events=app.events,
        clock=domain.clock,
        senders=domain.senders,
        consent=app.contacts.consent,
        contacts=app.contacts.directory,
        requests=domain.message_requests,
        batch=batch,
    )
    return MessageRequestWorker(
        db=app.db,
        clock=domain.clock,
        fanout=fanout,
        requests=domain.message_requests,
        messages=domain.messages,
    )


async def _seed(app: Application, org: str, count: int) -> None:
    now = app.messaging.clock.now()
    rows = [
        {
            "id": f"ct_{i:05d}{uuid.uuid4().hex[:8]}",
            "org_id": org,
            "primary_mdn": us_number(),
            "primary_addr_country": "ES",
            "fast_access": {},
            "extended_attributes": {},
            "application_id": "seed",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]

    def work(session: Any) -> None:
        session.execute(insert(contacts), rows)

    await app.db.run_write(work)


async def _request(app: Application, request_id: str) -> Any:
    async with app.db.read() as session:
        query = select(requests_table).where(requests_table.c.id == request_id)
        return (await session.execute(query)).mappings().one()


async def _messages(app: Application, request_id: str) -> tuple[int, int]:
    query = select(func.count(), func.count(func.distinct(messages_table.c.to_address))).where(
        messages_table.c.message_request_id == request_id
    )
    async with app.db.read() as session:
        total, distinct = (await session.execute(query)).one()
    return int(total), int(distinct)


async def _submit(app: Application, org: str) -> str:
    sender = await app.messaging.senders.create(
        org,
        "t",
        {"type_id": "sms-long-code", "class_id": ALWAYS_OPEN, "address": us_number()},
    )
    return await app.messaging.message_requests.create(
        org, "t", {"from": sender, "criteria": CRITERIA, "body": "hi", "test_message_flag": True}
    )


async def test_fan_out_resumes_after_its_last_batch(app: Application) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    await _seed(app, org, 25)
    request_id = await _submit(app, org)

    crashing = _worker(app, batch=10)
    real_read = crashing._fanout.read_batch
    calls = 0

    async def read_then_crash(plan: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # stage 0 (no direct targets), then one batch of 10 criteria contacts
            raise Crash
        return await real_read(plan)

    crashing._fanout.read_batch = read_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await crashing.fan_out_one()
    preparing = await _request(app, request_id)
    assert preparing["state"] == "PREPARING" and preparing["recipient_count"] == 10
    assert preparing["fanout_after"] != "" and await _messages(app, request_id) == (10, 10)

    # the lease still holds: nobody else takes it
    resumer = _worker(app, batch=10)
    assert await resumer.fan_out_one() is False
    # the crashed worker's lease runs out: the next worker resumes after the last batch
    past = app.messaging.clock.now() - timedelta(seconds=1)

    def expire(session: Any) -> None:
        session.execute(
            update(requests_table).where(requests_table.c.id == request_id).values(lease_until=past)
        )

    await app.db.run_write(expire)
    assert await resumer.fan_out_one() is True
    finished = await _request(app, request_id)
    assert finished["state"] == "COMPLETED" and finished["recipient_count"] == 25
    assert await _messages(app, request_id) == (25, 25)


async def test_cancel_during_preparation_stops_the_fan_out(app: Application) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    await _seed(app, org, 30)
    request_id = await _submit(app, org)
    worker = _worker(app, batch=10)
    real_read = worker._fanout.read_batch
    calls = 0

    async def read_and_cancel(plan: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            await app.messaging.message_requests.set_state(
                org, request_id, {"state": "CANCELED"}, None
            )
        return await real_read(plan)

    worker._fanout.read_batch = read_and_cancel  # type: ignore[method-assign]
    assert await worker.fan_out_one() is True
    canceled = await _request(app, request_id)
    assert canceled["state"] == "CANCELED"
    assert canceled["recipient_count"] == 10 and canceled["canceled_count"] == 0
    assert await _messages(app, request_id) == (10, 10)


async def _sender(app: Application, org: str) -> str:
    return await app.messaging.senders.create(
        org,
        "t",
        {"type_id": "sms-long-code", "class_id": ALWAYS_OPEN, "address": us_number()},
    )


async def test_paused_requests_expire(app: Application) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    sender = await _sender(app, org)
    request_id = await app.messaging.message_requests.create(
        org,
        "t",
        {
            "from": sender,
            "to": [us_number(), us_number()],
            "body": "p",
            "pause_before_transmit": True,
        },
    )
    worker = _worker(app, batch=10)
    assert await worker.fan_out_one() is True
    assert (await _request(app, request_id))["state"] == "PAUSED"
    assert await worker.expire_paused() is False  # not yet
    past = app.messaging.clock.now() - timedelta(seconds=1)

    def expire(session: Any) -> None:
        session.execute(
            update(requests_table)
            .where(requests_table.c.id == request_id)
            .values(pause_expires_at=past)
        )

    await app.db.run_write(expire)
    assert await worker.expire_paused() is True
    row = await _request(app, request_id)
    assert row["state"] == "COMPLETED" and row["failed_count"] == 2 and row["sent_count"] == 0
    states = await app.messaging.messages.list_page(
        org, {"message_request_id": request_id}, Page(), Checks()
    )
    assert {m["state"] for m in states[0]} == {"EXPIRED"}


async def test_scheduled_messages_wait_for_their_time(app: Application) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    sender = await _sender(app, org)
    later = (app.messaging.clock.now() + timedelta(hours=1)).isoformat()
    request_id = await app.messaging.message_requests.create(
        org,
        "t",
        {"from": sender, "to": [us_number()], "body": "s", "scheduled_delivery_time": later},
    )
    worker = _worker(app, batch=10)
    assert await worker.fan_out_one() is True
    row = await _request(app, request_id)
    assert row["state"] == "TRANSMITTING" and row["recipient_count"] == 1
    assert await app.delivery.dispatch_once() == 0  # SCHEDULED and not yet due
    past = app.messaging.clock.now() - timedelta(seconds=1)

    def due(session: Any) -> None:
        ids = select(messages_table.c.id).where(messages_table.c.message_request_id == request_id)
        session.execute(
            update(queue.queue_table).where(queue.queue_table.c.id.in_(ids)).values(due_at=past)
        )

    await app.db.run_write(due)
    app.bus.notify()
    async with asyncio.timeout(10):
        while (row := await _request(app, request_id))["state"] != "COMPLETED":
            await asyncio.sleep(0.05)
    assert row["sent_count"] == 1


async def test_local_zone_schedules_each_recipient_at_its_own_wall_clock(
    app: Application,
) -> None:
    """scheduled_delivery_time_zone=LOCAL: 09:00 means 09:00 where each recipient is — the
    contact's time_zone, else the number's zone."""
    org = f"org-{uuid.uuid4().hex[:8]}"
    sender = await _sender(app, org)
    tokyo = await app.contacts.contacts.create(
        org, "t", {"primary_mdn": us_number(), "time_zone": "Asia/Tokyo"}
    )
    california = us_number()  # +1 415: America/Los_Angeles
    wall = (app.messaging.clock.now() + timedelta(days=2)).replace(
        hour=9, minute=0, second=0, microsecond=0, tzinfo=None
    )
    request_id = await app.messaging.message_requests.create(
        org,
        "t",
        {
            "from": sender,
            "to": [tokyo, california],
            "body": "good morning",
            "scheduled_delivery_time": wall.isoformat() + "Z",
            "scheduled_delivery_time_zone": "LOCAL",
        },
    )
    assert await _worker(app, batch=10).fan_out_one() is True
    async with app.db.read() as session:
        rows = (
            await session.execute(
                select(messages_table.c.to_address, messages_table.c.scheduled_at).where(
                    messages_table.c.message_request_id == request_id
                )
            )
        ).all()
    due = {row[0]: row[1] for row in rows}
    assert len(due) == 2
    for address, instant in due.items():
        zone = "America/Los_Angeles" if address == california else "Asia/Tokyo"
        local = instant.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute) == (9, 0), (address, local)
