"""QR codes: communications carry an encrypted, expiring qrToken; the public image endpoint
returns the PNG and refuses invalid, tampered, foreign and expired tokens with 400."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
import httpx
import pytest
from switchboard.communications.v1 import communications_service_pb2 as pb
from switchboard.communications.v1 import communications_service_pb2_grpc

from switchboard.server.app.server import Application
from switchboard.server.communications import qr
from switchboard.server.communications.sealing import QrPayload, Sealer
from tests.support.auth import TokenFactory
from tests.support.communications import (
    SEED_ARGUMENTS,
    admin,
    envelope,
    errors,
    put_template,
    put_type,
    titles,
    unique_type,
)

pytestmark = pytest.mark.envoy

PNG = b"\x89PNG\r\n\x1a\n"
QR_URL = "/v2/communications/qr"


async def qr_communication(
    http: httpx.AsyncClient, make_token: TokenFactory, bearer: dict[str, str], org: str
) -> dict[str, Any]:
    code = unique_type()
    await put_type(http, admin(make_token, org), code)
    await put_template(http, bearer, org, code, "sms", "Scan [(${qrArgument})] please")
    body = {
        "type": code,
        "language": "en",
        "smsInput": {"phoneNumber": "+34666123123"},
        "arguments": {"qrArgument": SEED_ARGUMENTS["qrArgument"]},
    }
    response = await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer)
    return envelope(response, 202)


async def test_qr_image_is_public_and_renders_the_argument(
    http: httpx.AsyncClient, make_token: TokenFactory, bearer: dict[str, str], org: str
) -> None:
    data = await qr_communication(http, make_token, bearer, org)
    token = str(data["qrToken"])
    assert token and "Text to convert" not in token  # encrypted, not merely encoded
    response = await http.get(QR_URL, params={"qrToken": token})  # no bearer token
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG)
    assert response.content == qr.png("Text to convert into QR Code")
    # In SMS the QR argument is the public image link, token included.
    [sms] = data["channels"]
    link = sms["content"].split(" ")[1]
    assert link.startswith("http://localhost:8080/v2/communications/qr?qrToken=")
    assert parse_qs(urlparse(link).query)["qrToken"] == [token]


async def test_invalid_tampered_foreign_and_expired_tokens_are_400(
    http: httpx.AsyncClient,
    make_token: TokenFactory,
    bearer: dict[str, str],
    org: str,
    app: Application,
) -> None:
    data = await qr_communication(http, make_token, bearer, org)
    token = str(data["qrToken"])
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    now = app.clock.now()
    ttl = app.settings.qr_token_ttl_seconds
    payload = QrPayload(str(data["id"]), org, "hello")
    expired = app.communications.sealer.qr_token(payload, now - timedelta(seconds=ttl + 60))
    foreign = Sealer("another deployment's secret", ttl).qr_token(payload, now)
    cases = {
        "garbage": "is not a valid QR token",
        flipped: "is not a valid QR token",
        foreign: "is not a valid QR token",
        expired: "has expired",
        "": "is missing",
    }
    for value, reason in cases.items():
        response = await http.get(QR_URL, params={"qrToken": value})
        problems = errors(response, 400)
        assert problems[0]["code"] == "400"
        assert reason in problems[0]["details"], (value, problems)
        assert titles(response, 400) == {"qrToken"}
    # A fresh token for the same payload works.
    fresh = app.communications.sealer.qr_token(payload, now)
    response = await http.get(QR_URL, params={"qrToken": fresh})
    assert response.status_code == 200 and response.content == qr.png("hello")
    # Unknown query parameters are refused by the edge.
    response = await http.get(QR_URL, params={"qrToken": fresh, "size": "9"})
    assert response.status_code == 400


async def test_grpc_qr_image_needs_no_token(channel: grpc.aio.Channel, app: Application) -> None:
    stub = communications_service_pb2_grpc.CommunicationsServiceStub(channel)
    token = app.communications.sealer.qr_token(QrPayload("com_x", "org", "hi"), app.clock.now())
    image = await stub.GetQrCodeImage(pb.GetQrCodeImageRequest(qr_token=token))
    assert image.content_type == "image/png" and image.data.startswith(PNG)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetQrCodeImage(pb.GetQrCodeImageRequest(qr_token="nope"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
