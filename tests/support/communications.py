"""Communications as tests drive them: types and stable templates made through the templates API,
send bodies, family A envelopes and errors, waiting for a channel's status."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import httpx

from switchboard.server.app.server import Application
from switchboard.server.core.auth import Role
from switchboard.server.core.version import server_version
from switchboard.server.providers.base import Outbound
from switchboard.server.providers.channels import SandboxChannel, SmsChannel
from tests.support.auth import TokenFactory

SMS_TEXT = "Hi [(${name})], enter [(${resetLink})] to reset password"
SEED_ARGUMENTS: dict[str, Any] = {
    "name": "Juan",
    "subscriptions": ["ftth", "mobile", "health"],
    "resetLink": "https://password.com/reset/123456",
    "birthDate": "2022-04-25 12:00:00",
    "vipClient": False,
    "balance": 45.7,
    "birthCountry": "US",
    "attached.txt": "SG9sYSBQYWJsbyA6KQo=",
    "embedded_image_png": (
        "iVBORw0KGgoAAAANSUhEUgAAAAUAAAAFCAYAAACNbyblAAAAHElEQVQI12P4//8/w38GIAXDIBKE0DHxgljNBAAO9TXL0Y4OHwAAAABJRU5ErkJggg=="
    ),
    "qrArgument": "Text to convert into QR Code",
}
SEED_TYPE_ARGUMENTS = [
    {"name": "name", "type": "String", "sensitive": False},
    {"name": "subscriptions", "type": "StringList", "sensitive": False},
    {"name": "resetLink", "type": "Link", "sensitive": True},
    {"name": "birthDate", "type": "Date", "sensitive": False},
    {"name": "vipClient", "type": "Boolean", "sensitive": False},
    {"name": "balance", "type": "Number", "sensitive": False},
    {"name": "birthCountry", "type": "LocaleRegion", "sensitive": False},
    {"name": "attached.txt", "type": "Attachment", "sensitive": False},
    {"name": "embedded_image_png", "type": "Image", "sensitive": False},
    {"name": "qrArgument", "type": "QrCode", "sensitive": False},
    {"name": "promoLink", "type": "Link", "sensitive": False},
    {"name": "pin", "type": "String", "sensitive": True},
]
EMAIL_SUBJECT = "Password reset for [(${name})]"
EMAIL_HTML = (
    '<html><body><p>Hi <span th:text="${name}">x</span>,</p>'
    '<p><a href="[(${resetLink})]">[[${resetLink}]]</a></p>'
    '<img src="[(${qrArgument})]" alt="qr"><img src="[(${embedded_image_png})]" alt="logo">'
    "</body></html>"
)


def send_body(type_code: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_code,
        "language": "en",
        "channels": ["sms", "email"],
        "smsInput": {"countryCode": "34", "terminatingNumber": "666123123"},
        "emailInput": {"to": "Juan@Example.com", "cc": ["boss@example.com"]},
        "externalId": "sale-12512321",
        "arguments": SEED_ARGUMENTS,
    }
    body.update(overrides)
    return body


def unique_type() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def admin(make_token: TokenFactory, org: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(org, roles=(Role.ADMIN,))}"}


def with_client(app: Application, org: str, client_id: str) -> dict[str, str]:
    token = app.tokens.issue(org=org, roles=(Role.CLIENT,), subject="test-app", client_id=client_id)
    return {"Authorization": f"Bearer {token}"}


async def put_type(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    code: str,
    *,
    arguments: list[dict[str, Any]] | None = None,
    window: str = "ANYDAY_ANYTIME",
    real_time: bool = False,
) -> None:
    body = {
        "code": code,
        "description": "Provides the user a link to reset his password",
        "realTimeRequired": real_time,
        "deliveryWindow": window,
        "sendingType": "INTERNAL",
        "arguments": SEED_TYPE_ARGUMENTS if arguments is None else arguments,
    }
    response = await http.put(f"/v2/types/{code}", json=body, headers=headers)
    assert response.status_code in (200, 201, 202), response.text


async def put_template(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    org: str,
    type_code: str,
    channel: str,
    content: str,
    *,
    language: str = "en",
    subject: str | None = None,
    sender: str = "YOIGO",
) -> None:
    data: dict[str, Any] = {
        "senderInfo": sender,
        "content": base64.b64encode(content.encode()).decode(),
    }
    if subject is not None:
        data["subject"] = subject
    body = {"type": type_code, "language": language, "channel": channel, "data": data}
    response = await http.post(f"/v2/orgs/{org}/templates", json=body, headers=headers)
    assert response.status_code in (200, 201, 202), response.text


async def seed_type(
    http: httpx.AsyncClient,
    admin_headers: dict[str, str],
    bearer: dict[str, str],
    org: str,
    *,
    channels: tuple[str, ...] = ("sms", "email"),
    window: str = "ANYDAY_ANYTIME",
    real_time: bool = False,
) -> str:
    """A type like the seed's password_reset with stable templates in `channels` (en)."""
    code = unique_type()
    await put_type(http, admin_headers, code, window=window, real_time=real_time)
    for channel in channels:
        if channel == "email":
            await put_template(
                http, bearer, org, code, "email", EMAIL_HTML, subject=EMAIL_SUBJECT, sender="Yoigo"
            )
        else:
            await put_template(http, bearer, org, code, channel, SMS_TEXT)
    return code


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    """A family A success body: exactly {commit, id, data}; returns data."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"commit", "id", "data"}, body
    assert body["commit"] == server_version()
    data: dict[str, Any] = (
        body["data"] if isinstance(body["data"], dict) else {"items": body["data"]}
    )
    return data


def errors(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    """A family A error body: {"errors": [{code, title, details, ref, httpStatusCode}]}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}, body
    for problem in body["errors"]:
        assert set(problem) == {"code", "title", "details", "ref", "httpStatusCode"}, problem
        assert problem["httpStatusCode"] == status
    found: list[dict[str, Any]] = body["errors"]
    return found


def titles(response: httpx.Response, status: int) -> set[str]:
    """The fields a family A 400 names (its per-violation titles)."""
    return {p["title"] for p in errors(response, status)[1:]}


async def wait_status(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    org: str,
    communication_id: str,
    channel: str,
    status: str,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll the communication until `channel` reaches `status`; returns the communication."""
    async with asyncio.timeout(timeout):
        while True:
            response = await http.get(
                f"/v2/orgs/{org}/communications/{communication_id}", headers=headers
            )
            data = envelope(response, 200)
            found = {c["channel"]: c["status"] for c in data["channels"]}
            if found.get(channel) == status:
                return data
            await asyncio.sleep(0.1)


def outbox(app: Application, channel: str) -> list[Outbound]:
    provider = app.delivery.routes[channel]
    assert isinstance(provider, SandboxChannel | SmsChannel)
    return list(provider.outbox)


def handed(app: Application, org: str, channel: str, delivery_to: str) -> list[Outbound]:
    """What the org's deliveries to `delivery_to` handed to the sandbox (other tests share it)."""
    return [m for m in outbox(app, channel) if m.org_id == org and m.to == delivery_to]
