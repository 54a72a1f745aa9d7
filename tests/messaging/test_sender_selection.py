"""Channels with several senders: `sender_id_sort_criteria` picks each recipient's sender
(DELIVERY_ADDRESS: one in the recipient's country; PRICE: the cheapest route there), the others
are failovers the engine uses when the chosen route is down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from switchboard.server.app.server import Application, build_application
from switchboard.server.contacts.models import AddressType
from switchboard.server.messaging.requests.fanout import Plan, Recipient
from switchboard.server.messaging.requests.messages import messages_table
from switchboard.server.messaging.senders.rates import Rates
from switchboard.server.messaging.senders.service import Sender
from tests.support.messaging import us_number
from tests.support.server import free_port, make_settings

_m = messages_table.c
SPAIN = "+34612345678"


@pytest.fixture
async def app(tmp_path: Path, fresh_database_url: str) -> AsyncIterator[Application]:
    application = build_application(make_settings(tmp_path, database_url=fresh_database_url))
    await application.start()
    yield application
    await application.stop()


async def _channel(app: Application, org: str) -> tuple[str, str, str]:
    """A channel with a US long code first and a Spanish one second."""
    us = await app.messaging.senders.create(
        org, "t", {"type_id": "sms-long-code", "class_id": "alerts-na", "address": us_number()}
    )
    es = await app.messaging.senders.create(
        org, "t", {"type_id": "sms-long-code", "class_id": "alerts-eu", "address": "+34600111222"}
    )
    channel = await app.messaging.channels.create(org, "t", {"name": f"c-{uuid.uuid4().hex[:6]}"})
    await app.messaging.channels.add_senders(org, channel, [us, es])
    return channel, us, es


async def _senders_used(app: Application, request_id: str, count: int) -> dict[str, str]:
    query = select(_m.to_address, _m.customer_sender_id, _m.state).where(
        _m.message_request_id == request_id
    )
    async with asyncio.timeout(15):
        while True:
            async with app.db.read() as session:
                rows = (await session.execute(query)).all()
            if len(rows) == count and all(state == "DELIVERED" for *_, state in rows):
                return {to: sender for to, sender, _ in rows}
            await asyncio.sleep(0.05)


async def test_delivery_address_picks_the_local_sender(app: Application) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    channel, us, es = await _channel(app, org)
    american = us_number()
    requests = app.messaging.message_requests
    plain = await requests.create(
        org, "t", {"from": f"channel-{channel}", "to": [american, SPAIN], "body": "hi"}
    )
    assert await _senders_used(app, plain, 2) == {american: us, SPAIN: us}  # channel order
    local = await requests.create(
        org,
        "t",
        {
            "from": f"channel-{channel}",
            "to": [american, SPAIN],
            "body": "hola",
            "sender_id_sort_criteria": ["DELIVERY_ADDRESS"],
        },
    )
    assert await _senders_used(app, local, 2) == {american: us, SPAIN: es}


def _sender(sender_id: str, country: str, type_id: str) -> Sender:
    return Sender(
        id=sender_id,
        org_id="o",
        parent_id=None,
        address=f"+{sender_id}",
        type_id=type_id,
        class_id="",
        country=country,
        capabilities=("SMS",),
        message_templates=(),
        credentials="",
        consent_managed_by="USER",
        check_white_list=False,
    )


@pytest.mark.unit
def test_price_prefers_the_cheapest_route() -> None:
    rates = Rates({"sms": {"ES": 0.06, "OTHER": 0.06}, "sms-cheap": {"ES": 0.01, "OTHER": 0.09}})
    pricey = _sender("1", "ES", "sms-long-code")
    cheap = _sender("2", "US", "sms-cheap-type")
    request: dict[str, Any] = {"sender_id_sort_criteria": "PRICE"}
    plan = Plan(
        request,
        [],
        [pricey, cheap],
        [],
        {"sms-long-code": "sms-default", "sms-cheap-type": "sms-cheap"},
        rates,
    )
    spain = Recipient(SPAIN, AddressType.MDN)
    assert [s.id for s in plan.senders_for(spain)] == ["2", "1"]
    america = Recipient("+14155550100", AddressType.MDN)
    assert [s.id for s in plan.senders_for(america)] == ["1", "2"]  # 0.06 < 0.09 elsewhere
    request["sender_id_sort_criteria"] = "DELIVERY_ADDRESS,PRICE"
    assert [s.id for s in plan.senders_for(spain)] == ["1", "2"]  # local first, then price


@pytest.fixture
async def failing_over(tmp_path: Path, fresh_database_url: str) -> AsyncIterator[Application]:
    """`sms-default` is an SMPP route whose SMSC never answers (unhealthy); `sms-backup` is a
    sandbox."""
    routes = {
        "sms-default": {
            "type": "smpp",
            "host": "127.0.0.1",
            "port": free_port(),  # nothing listens: it never binds
            "system_id": "x",
            "password": "y",
        },
        "sms-backup": {"type": "sandbox"},
    }
    settings = make_settings(tmp_path, database_url=fresh_database_url, routes=routes)
    application = build_application(settings)
    await application.start()
    yield application
    await application.stop()


async def test_a_down_route_fails_over_to_the_next_sender(failing_over: Application) -> None:
    app = failing_over
    await app.messaging.reference.put_type(
        "sms-backup-type",
        {
            "name": "SMS long code (backup route)",
            "capabilities": "SMS",
            "gateway_id": "sms-backup",
            "address_format": "E164",
        },
        None,
    )
    org = f"org-{uuid.uuid4().hex[:8]}"
    first = await app.messaging.senders.create(
        org, "t", {"type_id": "sms-long-code", "class_id": "alerts-na", "address": us_number()}
    )
    backup_address = us_number()
    backup = await app.messaging.senders.create(
        org, "t", {"type_id": "sms-backup-type", "class_id": "alerts-na", "address": backup_address}
    )
    channel = await app.messaging.channels.create(org, "t", {"name": "with a backup"})
    await app.messaging.channels.add_senders(org, channel, [first, backup])
    request_id = await app.messaging.message_requests.create(
        org, "t", {"from": f"channel-{channel}", "to": [us_number()], "body": "still here"}
    )
    query = select(_m.state, _m.from_address).where(_m.message_request_id == request_id)
    async with asyncio.timeout(15):
        while True:
            async with app.db.read() as session:
                row = (await session.execute(query)).one_or_none()
            if row is not None and row.state == "DELIVERED":
                break
            await asyncio.sleep(0.05)
    assert row.from_address == backup_address  # sent from the backup sender's own number
