"""Delivery of communications with an injected clock, on a server of their own: delivery windows
(the message waits SCHEDULED and is dispatched when due, also across a restart), real-time
priority, provider failures, and the window arithmetic itself."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session
from switchboard.communications.v1 import communications_service_pb2 as pb
from switchboard.communications.v1 import communications_service_pb2_grpc
from switchboard.templates.v1 import templates_service_pb2 as tpb
from switchboard.templates.v1 import templates_service_pb2_grpc

from switchboard.server.app.server import Application, build_application
from switchboard.server.communications import windows
from switchboard.server.communications.models import DeliveryRecord
from switchboard.server.communications.service import Languages
from switchboard.server.core.auth import Role
from switchboard.server.core.db import table_of
from switchboard.server.core.models import EventRecord
from switchboard.server.delivery import queue
from switchboard.server.providers.base import (
    ChannelProvider,
    InboundSink,
    Outbound,
    ReceiptSink,
    SubmitResult,
)
from switchboard.server.providers.channels import SandboxChannel
from tests.support.communications import SMS_TEXT, unique_type
from tests.support.server import make_settings, reset_postgres

ORG = "org-delivery"
NUMBER = "+34666123123"


@dataclass
class FakeClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


class FailingEmail(ChannelProvider):
    """Refuses every email: permanently, or transiently (then the dispatcher retries)."""

    name = "failing-email"

    def __init__(self, permanent: bool) -> None:
        self.permanent = permanent
        self.calls = 0

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]:
        self.calls += 1
        return [SubmitResult(error="mailbox full", permanent=self.permanent) for _ in messages]

    def resume(self, pending: Sequence[Outbound]) -> None:
        pass

    def healthy(self) -> bool:
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2030, 1, 15, 19, 30, tzinfo=UTC))


async def _start(tmp: Path, clock: FakeClock, **kw: Any) -> Application:
    settings = make_settings(tmp, dispatcher_retry_base_seconds=60.0)
    application = build_application(settings, clock=clock, **kw)
    await application.start()
    return application


@pytest.fixture
async def server(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Application]:
    settings = make_settings(tmp_path)
    if settings.database_url.startswith("postgresql"):
        await reset_postgres(settings.database_url)
    application = await _start(tmp_path, clock)
    yield application
    await application.stop()


def metadata(app: Application, roles: Sequence[Role] = (Role.CLIENT,)) -> list[tuple[str, str]]:
    # Issued at the fake clock's time, and valid however far the tests move it.
    token = app.tokens.issue(org=ORG, roles=roles, subject="t", ttl=timedelta(days=3650))
    return [("authorization", f"Bearer {token}")]


async def seed(app: Application, *, window: str, real_time: bool = False) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = templates_service_pb2_grpc.TemplatesServiceStub(channel)
        code = unique_type()
        kind = tpb.PutCommunicationTypeRequest(type_code=code)
        json_format.ParseDict(
            {
                "description": "reset",
                "delivery_window": window,
                "real_time_required": real_time,
                "arguments": [
                    {"name": "name", "type": "String"},
                    {"name": "resetLink", "type": "Link", "sensitive": True},
                ],
            },
            kind.body,
        )
        await stub.PutCommunicationType(kind, metadata=metadata(app, (Role.ADMIN,)))
        for channel_name, content, subject in (
            ("sms", SMS_TEXT, None),
            ("email", "<p>Hi [[${name}]]</p>", "Hello"),
        ):
            template = tpb.CreateTemplateRequest(org=ORG)
            body: dict[str, Any] = {
                "type": code,
                "language": "en",
                "channel": channel_name,
                "data": {
                    "sender_info": "YOIGO",
                    "content": base64.b64encode(content.encode()).decode(),
                },
            }
            if subject:
                body["data"]["subject"] = subject
            json_format.ParseDict(body, template.body)
            await stub.CreateTemplate(template, metadata=metadata(app))
    return code


async def send(app: Application, code: str, **extra: Any) -> pb.CommunicationResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = communications_service_pb2_grpc.CommunicationsServiceStub(channel)
        request = pb.SendCommunicationRequest(org=ORG)
        json_format.ParseDict(
            {
                "type": code,
                "language": "en",
                "channels": extra.pop("channels", ["sms"]),
                "sms_input": {"phone_number": NUMBER},
                "email_input": {"to": "juan@example.com"},
                "arguments": {"name": "Juan", "resetLink": "https://password.com/reset/1"},
                **extra,
            },
            request.body,
        )
        response: pb.CommunicationResponse = await stub.SendCommunication(
            request, metadata=metadata(app)
        )
        return response


async def statuses(app: Application, communication_id: str) -> dict[str, str]:
    snapshot = await app.communications.communications.get(ORG, communication_id)
    return {c["channel"]: c["status"] for c in snapshot["channels"]}


async def until(app: Application, communication_id: str, wanted: dict[str, str]) -> None:
    async with asyncio.timeout(10):
        while await statuses(app, communication_id) != wanted:
            await asyncio.sleep(0.05)


async def event_types(app: Application, communication_id: str) -> list[str]:
    columns = table_of(EventRecord).c
    query = (
        select(columns.type).where(columns.resource_id == communication_id).order_by(columns.seq)
    )
    async with app.db.read() as session:
        return list((await session.execute(query)).scalars())


async def test_outside_the_window_waits_scheduled_then_goes_when_due(
    server: Application, clock: FakeClock
) -> None:
    code = await seed(server, window="ANYDAY_8AM8PM")
    # 19:30 UTC is 20:30 in Madrid: outside 08:00-20:00 there, so it waits for 08:00 UTC
    # (09:00 Madrid, 08:00 in the Canaries).
    sent = await send(server, code)
    [channel] = sent.data.channels
    assert channel.status == "SCHEDULED"
    assert channel.due_time.ToDatetime(UTC) == datetime(2030, 1, 16, 8, 0, tzinfo=UTC)
    assert await server.delivery.dispatch_once() == 0
    clock.at = datetime(2030, 1, 16, 7, 59, tzinfo=UTC)
    assert await server.delivery.dispatch_once() == 0
    assert await statuses(server, sent.id) == {"sms": "SCHEDULED"}
    clock.at = datetime(2030, 1, 16, 8, 0, 1, tzinfo=UTC)
    await until(server, sent.id, {"sms": "DELIVERED"})
    assert await event_types(server, sent.id) == [
        "communication.scheduled",
        "communication.sent",
        "communication.delivered",
    ]
    snapshot = await server.communications.communications.get(ORG, sent.id)
    assert snapshot["channels"][0]["sent_time"] == "2030-01-16T08:00:01Z"


async def test_a_scheduled_communication_survives_a_restart(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path)
    if settings.database_url.startswith("postgresql"):
        await reset_postgres(settings.database_url)
    first = await _start(tmp_path, clock)
    try:
        code = await seed(first, window="ANYDAY_ANYTIME")
        sent = await send(first, code, scheduled_time="2030-01-20T10:00:00Z")
        assert sent.data.status == "SCHEDULED"
    finally:
        await first.stop()
    clock.at = datetime(2030, 1, 20, 10, 0, tzinfo=UTC)
    second = await _start(tmp_path, clock)
    try:
        await until(second, sent.id, {"sms": "DELIVERED"})
        provider = second.delivery.routes["sms"]
        [handed] = [m for m in provider.outbox if m.delivery_id]  # type: ignore[attr-defined]
        assert handed.content == "Hi Juan, enter https://password.com/reset/1 to reset password"
    finally:
        await second.stop()


async def test_provider_failures_fail_the_channel_or_retry(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path)
    if settings.database_url.startswith("postgresql"):
        await reset_postgres(settings.database_url)
    permanent = FailingEmail(permanent=True)
    providers = {"email": permanent}
    app = await _start(tmp_path, clock, communication_providers=providers)
    try:
        code = await seed(app, window="ANYDAY_ANYTIME")
        sent = await send(app, code, channels=["sms", "email"])
        await until(app, sent.id, {"sms": "DELIVERED", "email": "FAILED"})
        snapshot = await app.communications.communications.get(ORG, sent.id)
        email = snapshot["channels"][1]
        assert email["error"] == "mailbox full" and snapshot["status"] == "DELIVERED"
        types = await event_types(app, sent.id)
        assert types.count("communication.failed") == 1
        # Transient failures stay queued (the lease is the backoff) until max attempts.
        permanent.permanent = False
        again = await send(app, code, channels=["email"])
        async with asyncio.timeout(5):
            while permanent.calls < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # not due again before its backoff: no further attempt
        assert permanent.calls == 2
        assert await statuses(app, again.id) == {"email": "ACCEPTED"}
        # calls counts the first communication's email too: attempt n is call n + 1.
        for attempt in range(3, app.settings.dispatcher_max_attempts + 2):
            clock.at += timedelta(minutes=10)
            app.bus.notify()
            async with asyncio.timeout(5):
                while permanent.calls < attempt:
                    await asyncio.sleep(0.05)
        await until(app, again.id, {"email": "FAILED"})
        assert permanent.calls == app.settings.dispatcher_max_attempts + 1
    finally:
        await app.stop()


async def test_real_time_types_are_claimed_first(server: Application, clock: FakeClock) -> None:
    slow = await seed(server, window="ANYDAY_ANYTIME")
    fast = await seed(server, window="ANYDAY_ANYTIME", real_time=True)
    later = await send(server, slow, scheduled_time="2030-01-15T19:40:00Z")
    urgent = await send(server, fast, scheduled_time="2030-01-15T19:45:00Z")

    def claim_one(session: Session) -> list[dict[str, Any]]:
        now = clock.now()
        rows = queue.claim(session, now=now, lease_until=now + timedelta(seconds=30), limit=1)
        deliveries = table_of(DeliveryRecord).c
        return [
            dict(r)
            for r in session.execute(
                select(deliveries.communication_id).where(
                    deliveries.id.in_([r["id"] for r in rows])
                )
            ).mappings()
        ]

    # The engine pauses, so the claims made by hand see the queue alone (its poll could
    # otherwise take both rows the moment the clock moves).
    await server.delivery.stop()
    assert await server.db.run_write(claim_one) == []
    clock.at = datetime(2030, 1, 15, 19, 50, tzinfo=UTC)
    [first] = await server.db.run_write(claim_one)
    assert first["communication_id"] == urgent.id
    clock.at += timedelta(minutes=1)  # past the lease of the claim made by hand
    await server.delivery.start()
    await until(server, later.id, {"sms": "DELIVERED"})
    await until(server, urgent.id, {"sms": "DELIVERED"})


# ---- the window arithmetic -------------------------------------------------------------------


def _utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("due", "hours", "number", "expected"),
    [
        (_utc(2030, 1, 15, 12), (8, 20), "+34666123123", _utc(2030, 1, 15, 12)),  # inside
        (_utc(2030, 1, 15, 5), (8, 20), "+34666123123", _utc(2030, 1, 15, 8)),  # before: 9 Madrid
        (_utc(2030, 7, 15, 5), (8, 20), "+34666123123", _utc(2030, 7, 15, 7)),  # summer time
        (_utc(2030, 1, 15, 21), (8, 20), "", _utc(2030, 1, 16, 8)),  # no number: UTC
        (_utc(2030, 1, 15, 21), None, "+34666123123", _utc(2030, 1, 15, 21)),  # ANYTIME
        (_utc(2030, 1, 15, 14), (8, 12), "+81312345678", _utc(2030, 1, 15, 23)),  # Tokyo
        (_utc(2030, 1, 15, 3), (12, 16), "+12125551234", _utc(2030, 1, 15, 17)),  # New York
        (_utc(2030, 1, 15, 23), (16, 24), "+442071234567", _utc(2030, 1, 15, 23)),  # to midnight
    ],
)
def test_window_fit(
    due: datetime, hours: tuple[int, int] | None, number: str, expected: datetime
) -> None:
    zones = windows.zones_for_number(number) if number else ()
    assert windows.fit(due, hours, zones) == expected


@pytest.mark.unit
def test_zones_too_far_apart_fall_back_to_the_first() -> None:
    zones = windows.zones_for_number("+79161234567")  # Moscow mobile: many zones in Russia
    result = windows.fit(_utc(2030, 1, 15, 2), (8, 9), zones)
    assert result > _utc(2030, 1, 15, 2) and result - _utc(2030, 1, 15, 2) < timedelta(days=2)


@pytest.mark.unit
def test_sandbox_channels_refuse_what_they_cannot_deliver() -> None:
    email = SandboxChannel.email(0.1)
    problem = email._problem(
        Outbound("d", "o", "email", "x@nowhere.invalid", "", "s", "", "c", ("x@nowhere.invalid",))
    )
    assert problem is not None and "does not exist" in problem
    whatsapp = SandboxChannel.whatsapp(0.1)
    assert (
        whatsapp._problem(Outbound("d", "o", "whatsapp", "+34912345678", "FIXED_LINE", "", "", ""))
        is not None
    )


@pytest.mark.unit
def test_language_chain() -> None:
    languages = Languages("en", {"yoigo": "es"})
    assert languages.chain("yoigo", "pt-BR") == ["pt-BR", "pt", "es", "en"]
    assert languages.chain("other", "fr") == ["fr", "en"]
    assert languages.chain("yoigo", "es") == ["es", "en"]
    assert Languages("de").chain("other", "fr") == ["fr", "de", "en"]
