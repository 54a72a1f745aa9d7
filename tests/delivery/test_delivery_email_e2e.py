"""A communication's email through the whole platform to a real SMTP server (aiosmtpd), routed by
SWITCHBOARD_ROUTES: HTML with its plain-text alternative, the inline image and QR code referenced
by cid:, and the attachment, byte for byte; the channel ends DELIVERED."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from switchboard.communications.v1 import communications_service_pb2 as pb
from switchboard.communications.v1 import communications_service_pb2_grpc
from switchboard.templates.v1 import templates_service_pb2 as tpb
from switchboard.templates.v1 import templates_service_pb2_grpc

from switchboard.server.app.server import Application, build_application
from switchboard.server.communications import qr
from switchboard.server.core.auth import Role
from tests.support.communications import (
    EMAIL_HTML,
    EMAIL_SUBJECT,
    SEED_ARGUMENTS,
    SEED_TYPE_ARGUMENTS,
)
from tests.support.server import make_settings
from tests.support.smtp import Recorder, Server, serve

ORG = "org-mail"


@pytest.fixture
async def smtp() -> AsyncIterator[Server]:
    server = await serve(Recorder())
    yield server
    server.server.close()
    await server.server.wait_closed()


@pytest.fixture
async def app(tmp_path: Path, fresh_database_url: str, smtp: Server) -> AsyncIterator[Application]:
    settings = make_settings(
        tmp_path,
        database_url=fresh_database_url,
        routes={"email": {"type": "smtp", "host": "127.0.0.1", "port": smtp.port}},
    )
    application = build_application(settings)
    await application.start()
    yield application
    await application.stop()


def _auth(app: Application, role: Role = Role.CLIENT) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {app.tokens.issue(org=ORG, roles=[role], subject='t')}")]


async def _seed(stub: Any, app: Application) -> str:
    code = f"mail_{uuid.uuid4().hex[:8]}"
    kind = tpb.PutCommunicationTypeRequest(type_code=code)
    json_format.ParseDict(
        {
            "description": "reset",
            "delivery_window": "ANYDAY_ANYTIME",
            "arguments": SEED_TYPE_ARGUMENTS,
        },
        kind.body,
    )
    await stub.PutCommunicationType(kind, metadata=_auth(app, Role.ADMIN))
    template = tpb.CreateTemplateRequest(org=ORG)
    json_format.ParseDict(
        {
            "type": code,
            "language": "en",
            "channel": "email",
            "data": {
                "sender_info": "Yoigo",
                "subject": EMAIL_SUBJECT,
                "content": base64.b64encode(EMAIL_HTML.encode()).decode(),
            },
        },
        template.body,
    )
    await stub.CreateTemplate(template, metadata=_auth(app))
    return code


async def test_email_reaches_the_smtp_server_intact(app: Application, smtp: Server) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        code = await _seed(templates_service_pb2_grpc.TemplatesServiceStub(channel), app)
        stub = communications_service_pb2_grpc.CommunicationsServiceStub(channel)
        request = pb.SendCommunicationRequest(org=ORG)
        json_format.ParseDict(
            {
                "type": code,
                "language": "en",
                "channels": ["email"],
                "email_input": {"to": "juan@example.com", "cc": ["boss@example.com"]},
                "arguments": SEED_ARGUMENTS,
            },
            request.body,
        )
        sent = await stub.SendCommunication(request, metadata=_auth(app))
    async with asyncio.timeout(10):
        while (await app.communications.communications.get(ORG, sent.id))["channels"][0][
            "status"
        ] != "DELIVERED":
            await asyncio.sleep(0.05)
    [(mail_from, recipients, raw, _)] = smtp.recorder.messages
    assert mail_from == "no-reply@switchboard.local"
    assert sorted(recipients) == ["boss@example.com", "juan@example.com"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "Password reset for Juan"
    assert message["From"] == "Yoigo <no-reply@switchboard.local>"
    html_part = message.get_body(preferencelist=("html",))
    text_part = message.get_body(preferencelist=("plain",))
    assert html_part is not None and text_part is not None
    html, text = html_part.get_content(), text_part.get_content()
    assert "https://password.com/reset/123456" in html  # the real link, only on the wire
    assert "Hi Juan" in text and "https://password.com/reset/123456" in text
    assert 'src="cid:qrArgument@switchboard"' in html
    inline = {p["Content-ID"]: p.get_content() for p in message.walk() if p["Content-ID"]}
    image = base64.b64decode(SEED_ARGUMENTS["embedded_image_png"])
    assert inline == {
        "<embedded_image_png@switchboard>": image,
        "<qrArgument@switchboard>": qr.png("Text to convert into QR Code"),
    }
    [attachment] = [p for p in message.walk() if p.get_filename() == "attached.txt"]
    assert attachment.get_content() == "Hola Pablo :)\n"
