"""The dev outbox through Envoy: what sandbox routes "sent" is listed for the caller's org only,
newest first, filterable by channel, with communications masked; bad parameters are 400."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.support.auth import TokenFactory
from tests.support.communications import admin, seed_type, wait_status
from tests.support.messaging import us_number
from tests.support.sms import SEND

pytestmark = pytest.mark.envoy
OUTBOX = "/diagnostics/outbox"
INBOUND = "/diagnostics/inbound"


async def _entries(http: httpx.AsyncClient, bearer: dict[str, str], query: str = "") -> Any:
    response = await http.get(OUTBOX + query, headers=bearer)
    assert response.status_code == 200, response.text
    return response.json().get("entries", [])


async def test_sms_shows_up_for_its_org_only(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    text = f"outbox {uuid.uuid4().hex[:8]}"
    sent = await http.post(
        SEND,
        json={"Messages": [{"channel": "smpp", "to": "+27821234567", "content": text}]},
        headers=bearer,
    )
    api_id = sent.json()["SMPPMsgResponse"]["messages"][0]["apiMessageId"]
    async with asyncio.timeout(10):
        while not (found := [e for e in await _entries(http, bearer) if e["content"] == text]):
            await asyncio.sleep(0.05)
    [entry] = found
    assert entry["message_id"] == api_id
    assert (entry["kind"], entry["channel"], entry["route"]) == ("sms", "sms", "smpp")
    assert entry["to"] == "+27821234567" and entry["handed_time"]
    assert not [e for e in await _entries(http, bearer, "?channel=email") if e["content"] == text]
    stranger = {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:8]}')}"}
    assert await _entries(http, stranger) == []
    for query in ("?limit=5000", "?channel=pigeon"):
        assert (await http.get(OUTBOX + query, headers=bearer)).status_code == 400


async def test_communications_show_their_masked_rendering(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory, org: str
) -> None:
    code = await seed_type(http, admin(make_token, org), bearer, org)
    body = {
        "type": code,
        "language": "en",
        "channels": ["sms"],
        "smsInput": {"countryCode": "34", "terminatingNumber": "666123123"},
        "arguments": {"name": "Ana", "resetLink": "https://password.com/reset/secret-42"},
    }
    response = await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer)
    assert response.status_code == 202, response.text
    communication_id = response.json()["id"]
    await wait_status(http, bearer, org, communication_id, "sms", "DELIVERED")
    entries = await _entries(http, bearer, "?channel=sms")
    [entry] = [e for e in entries if e["kind"] == "communication"]
    assert entry["content"] == "Hi Ana, enter **** to reset password"
    assert "secret-42" not in str(entries)


async def test_injected_stop_opts_out_and_answers(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str
) -> None:
    """The sandbox's inbound side: an MO STOP to one of the org's numbers, through REST."""
    address = us_number()
    created = await http.post(
        "/messaging/sender_ids",
        json={"type_id": "sms-long-code", "class_id": "alerts-na", "address": address},
        headers=bearer,
    )
    assert created.status_code == 200, created.text
    user = us_number()
    injected = await http.post(
        INBOUND, json={"from": user, "to": address, "text": "STOP"}, headers=bearer
    )
    assert injected.status_code == 200, injected.text
    mo = (await http.get(f"/messaging/messages/{injected.json()['id']}", headers=bearer)).json()
    assert (mo["direction"], mo["state"], mo["body"]) == ("MO", "RECEIVED", "STOP")
    query = {"address": user}
    statuses = (
        await http.get("/consent/contact_address_statuses", params=query, headers=bearer)
    ).json()
    assert [s["consent_status"] for s in statuses] == ["OPTOUT"]
    # The confirmation went out through the sandbox, from the same number.
    async with asyncio.timeout(10):
        while not (replies := [e for e in await _entries(http, bearer) if e["to"] == user]):
            await asyncio.sleep(0.05)
    assert replies[0]["sender"] == address and "unsubscribed" in replies[0]["content"]
    # Only the org's own addresses take injections; fields are checked.
    elsewhere = {"from": user, "to": us_number(), "text": "HI"}
    assert (
        await http.post("/diagnostics/inbound", json=elsewhere, headers=bearer)
    ).status_code == 404
    empty = {"from": user, "to": address, "text": ""}
    assert (await http.post("/diagnostics/inbound", json=empty, headers=bearer)).status_code == 400
