"""The whole platform delivering through a real SMPP peer: the SMS API and message requests go
out over SMPP to the development SMSC (a subprocess), receipts come back and finish them, a long
Unicode message is split and reassembled exactly, and an MO STOP opts the end user out (with
the auto-reply on the wire) so the next send is refused."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role
from switchboard.server.messaging.requests.inbound import DEFAULT_REPLIES
from switchboard.server.messaging.requests.messages import messages_table
from tests.support.messaging import us_number
from tests.support.server import make_settings
from tests.support.smsc import Smsc

_m = messages_table.c


@pytest.fixture
def smsc() -> Iterator[Smsc]:
    peer = Smsc("--dlr-delay", "0.05")
    peer.start()
    yield peer
    peer.kill()


@pytest.fixture
async def app(tmp_path: Path, fresh_database_url: str, smsc: Smsc) -> AsyncIterator[Application]:
    routes = {
        "smpp": {
            "type": "smpp",
            "host": "127.0.0.1",
            "port": smsc.port,
            "system_id": "switchboard",
            "password": "secret",
            "default_source": "Switchboard",
        },
        "sms": {"same_as": "smpp"},
        "sms-default": {"same_as": "smpp"},
    }
    settings = make_settings(
        tmp_path,
        database_url=fresh_database_url,
        routes=json.loads(json.dumps(routes)),
        dispatcher_poll_seconds=0.05,
    )
    application = build_application(settings)
    await application.start()
    yield application
    await application.stop()


async def _sms_status(app: Application, stub: Any, auth: Any, api_id: str, wanted: str) -> Any:
    request = pb.GetSmsMessageRequest(api_message_id=api_id)
    async with asyncio.timeout(10):
        while (found := await stub.GetSmsMessage(request, metadata=auth)).status != wanted:
            assert found.status not in {"DELIVERED", "FAILED"} - {wanted}, found
            await asyncio.sleep(0.05)
    return found


async def test_sms_api_over_smpp_with_receipts(app: Application, smsc: Smsc) -> None:
    token = app.tokens.issue(org=f"org-{uuid.uuid4().hex[:8]}", roles=[Role.CLIENT], subject="t")
    auth = [("authorization", f"Bearer {token}")]
    long_text = "Привет 👋 " * 25  # 250 UTF-16 units with surrogate pairs: 4 UCS-2 parts
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = sms_service_pb2_grpc.SmsServiceStub(channel)
        sent = await stub.SendSms(
            pb.SendSmsRequest(
                messages=[
                    pb.SmsMessage(channel="smpp", to="+27821234567", content="Your code is 4711"),
                    pb.SmsMessage(channel="smpp", to="+27821230013", content="will fail"),
                    pb.SmsMessage(channel="smpp", to="+27821234568", content=long_text),
                ]
            ),
            metadata=auth,
        )
        ids = [m.api_message_id for m in sent.smpp_msg_response.messages]
        assert all(ids)
        await _sms_status(app, stub, auth, ids[0], "DELIVERED")
        failed = await _sms_status(app, stub, auth, ids[1], "FAILED")
        assert "UNDELIV" in failed.error
        await _sms_status(app, stub, auth, ids[2], "DELIVERED")
    received = {m["destination"].lstrip("+"): m for m in smsc.messages()}
    assert received["27821234567"]["text"] == "Your code is 4711"
    long = received["27821234568"]
    assert long["text"] == long_text  # split with UDH, reassembled byte for byte
    assert long["parts"] == 4 and long["data_coding"] == 8
    assert smsc.stats()["duplicates"] == 0


async def _sender(app: Application, org: str) -> tuple[str, str]:
    address = us_number()
    sender_id = await app.messaging.senders.create(
        org, "t", {"type_id": "sms-long-code", "class_id": "alerts-na", "address": address}
    )
    return sender_id, address


async def _message_states(app: Application, request_id: str) -> list[tuple[str, str]]:
    query = select(_m.to_address, _m.state).where(_m.message_request_id == request_id)
    async with app.db.read() as session:
        return [(str(a), str(b)) for a, b in (await session.execute(query)).all()]


async def _until_states(app: Application, request_id: str, wanted: set[str]) -> None:
    async with asyncio.timeout(15):
        while {s for _, s in await _message_states(app, request_id)} != wanted:
            await asyncio.sleep(0.05)


async def test_message_request_over_smpp_and_mo_stop(app: Application, smsc: Smsc) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    sender_id, address = await _sender(app, org)
    user = us_number()
    requests = app.messaging.message_requests
    first = await requests.create(org, "t", {"from": sender_id, "to": [user], "body": "Sale!"})
    await _until_states(app, first, {"DELIVERED"})
    [mt] = [m for m in smsc.messages() if m["text"] == "Sale!"]
    assert mt["source"].lstrip("+") == address.lstrip("+")
    async with app.db.read() as session:
        price = (
            await session.execute(select(_m.price).where(_m.message_request_id == first))
        ).scalar_one()
    assert price == 0.0079  # one GSM-7 segment to the US, from the reference rate table
    counters = await requests.get(org, first)
    assert counters["state"] == "COMPLETED"
    assert (counters["sent_count"], counters["delivered_count"]) == (1, 1)

    # The end user answers STOP from their phone.
    smsc.post("/mo", {"from": user.lstrip("+"), "to": address.lstrip("+"), "text": "STOP"})
    query = select(_m.id, _m.state, _m.body).where(_m.org_id == org, _m.direction == "MO")
    async with asyncio.timeout(10):
        while True:
            async with app.db.read() as session:
                mo = (await session.execute(query)).all()
            if mo:
                break
            await asyncio.sleep(0.05)
    assert [(state, body) for _, state, body in mo] == [("RECEIVED", "STOP")]
    statuses, _ = await app.contacts.consent.list_statuses(
        org, {"address": user}, limit=10, offset=0, page_token=""
    )
    assert [(s["consent_status"], s["sender_id"]) for s in statuses] == [("OPTOUT", sender_id)]
    # The STOP confirmation went back to the phone, from the same number.
    reply = (user.lstrip("+"), DEFAULT_REPLIES["STOP"])
    async with asyncio.timeout(10):
        while reply not in [(m["destination"].lstrip("+"), m["text"]) for m in smsc.messages()]:
            await asyncio.sleep(0.05)

    # The next send to that end user is refused for consent.
    second = await requests.create(org, "t", {"from": sender_id, "to": [user], "body": "More!"})
    await _until_states(app, second, {"FAILED"})
    async with app.db.read() as session:
        code = (
            await session.execute(select(_m.failure_code).where(_m.message_request_id == second))
        ).scalar_one()
    assert code == "NO_CONSENT"
    assert not [m for m in smsc.messages() if m["text"] == "More!"]
