"""Provider webhooks through Envoy: a message request goes out through WhatsApp Cloud (a local
server that answers like Graph), its signed status webhooks make it DELIVERED then READ, an
inbound webhook becomes an MO message, the subscription check echoes the challenge; unsigned,
badly signed or unconfigured calls are refused."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from switchboard.server.app.platform import descriptor_set_path
from switchboard.server.app.server import Application, build_application
from switchboard.server.edge.envoy import EnvoyProcess, EnvoySettings
from switchboard.server.messaging.requests.messages import messages_table
from tests.fakes.whatsapp import FakeWhatsApp
from tests.support.messaging import us_number
from tests.support.server import free_port, make_settings

pytestmark = pytest.mark.envoy
_m = messages_table.c


@pytest.fixture
async def whatsapp() -> AsyncIterator[FakeWhatsApp]:
    fake = FakeWhatsApp(display_number=us_number().lstrip("+"))  # a valid E.164 sender address
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def app(
    tmp_path: Path, fresh_database_url: str, whatsapp: FakeWhatsApp
) -> AsyncIterator[Application]:
    routes = {
        "whatsapp-cloud": {
            "type": "whatsapp",
            "phone_number_id": whatsapp.phone_number_id,
            "access_token": whatsapp.token,
            "base_url": whatsapp.base_url,
            "webhook_secret": whatsapp.app_secret,
            "webhook_verify_token": "verify-me",
        }
    }
    settings = make_settings(tmp_path, database_url=fresh_database_url, routes=routes)
    application = build_application(settings)
    await application.start()
    yield application
    await application.stop()


@pytest.fixture
async def edge(app: Application, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = EnvoySettings(
        listen_port=free_port(),
        admin_port=free_port(),
        upstreams=[("127.0.0.1", app.port)],
        descriptor_path=descriptor_set_path(),
        listen_host="127.0.0.1",
        access_log_path=str(tmp_path / "access.log"),
    )
    async with (
        EnvoyProcess(settings, tmp_path / "envoy") as envoy,
        httpx.AsyncClient(base_url=envoy.base_url, timeout=10) as client,
    ):
        yield client


async def _message(app: Application, request_id: str) -> Any:
    query = select(messages_table).where(_m.message_request_id == request_id)
    async with app.db.read() as session:
        return (await session.execute(query)).mappings().one_or_none()


async def _until(app: Application, request_id: str, state: str) -> Any:
    async with asyncio.timeout(10):
        while (row := await _message(app, request_id)) is None or row["state"] != state:
            await asyncio.sleep(0.05)
    return row


async def test_status_inbound_and_verification(
    app: Application, edge: httpx.AsyncClient, whatsapp: FakeWhatsApp
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    address = f"+{whatsapp.display_number}"
    sender = await app.messaging.senders.create(
        org, "t", {"type_id": "whatsapp", "class_id": "alerts-na", "address": address}
    )
    user = us_number()
    requests = app.messaging.message_requests
    request_id = await requests.create(org, "t", {"from": sender, "to": [user], "body": "Hola"})
    sent = await _until(app, request_id, "SENT")
    [wamid] = list(whatsapp.sent)
    assert whatsapp.sent[wamid]["to"] == user.lstrip("+")
    assert wamid in sent["external_transaction_ids"]

    async def post(payload: dict[str, Any], signature: str | None = None) -> httpx.Response:
        raw, signed = whatsapp.sign(payload)
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature or signed}
        return await edge.post("/webhooks/whatsapp-cloud", content=raw, headers=headers)

    delivered = whatsapp.status_webhook((wamid, "delivered"))
    forged = await post(delivered, signature="sha256=" + "0" * 64)
    assert forged.status_code == 401
    assert (await _message(app, request_id))["state"] == "SENT"
    answer = await post(delivered)
    assert answer.status_code == 200, answer.text
    await _until(app, request_id, "DELIVERED")
    assert (await post(whatsapp.status_webhook((wamid, "read")))).status_code == 200
    await _until(app, request_id, "READ")
    counters = await requests.get(org, request_id)
    assert (counters["delivered_count"], counters["read_count"]) == (1, 1)

    # The end user answers: an MO message of the org.
    assert (await post(whatsapp.inbound_webhook(user.lstrip("+"), "Gracias"))).status_code == 200
    query = select(_m.body, _m.from_address, _m.state).where(_m.org_id == org, _m.direction == "MO")
    async with asyncio.timeout(10):
        while True:
            async with app.db.read() as session:
                mo = (await session.execute(query)).all()
            if mo:
                break
            await asyncio.sleep(0.05)
    assert [tuple(r) for r in mo] == [("Gracias", user, "RECEIVED")]

    # Meta's subscription check, and what is refused.
    check = "/webhooks/whatsapp-cloud?hub.mode=subscribe&hub.verify_token={}&hub.challenge=42"
    ok = await edge.get(check.format("verify-me"))
    assert ok.status_code == 200 and ok.text == "42"
    assert (await edge.get(check.format("guess"))).status_code == 401
    unknown = await edge.post("/webhooks/smpp", content=json.dumps({}).encode())
    assert unknown.status_code == 404
