"""Message requests through the REST edge (family B): create → {"id"}, every attribute and
filter, validation (400, 1012, 1017), fan-out to addresses, contacts, STATIC and DYNAMIC groups
and criteria, consent refusals, test requests, pause/resume/cancel with true counters, soft
delete and cross-org isolation."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.auth import TokenFactory
from tests.support.errors import assert_error
from tests.support.messaging import (
    MR,
    create_sender,
    done,
    messages_of,
    read,
    submit,
    us_number,
    wait_request,
)

pytestmark = pytest.mark.envoy

SPAIN = json.dumps({"all": [{"field": "country", "op": "eq", "value": "ES"}]})


@pytest.fixture
def other(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:12]}')}"}


async def contact(http: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    response = await http.post("/contacts", json=fields, headers=headers)
    assert response.status_code == 200, response.text
    contact_id: str = response.json()["id"]
    return contact_id


async def group(http: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    response = await http.post("/contact_groups", json=fields, headers=headers)
    assert response.status_code == 200, response.text
    group_id: str = response.json()["id"]
    return group_id


async def test_addresses_fan_out_send_and_deliver(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sender = await create_sender(http, bearer)
    one, two = us_number(), us_number()
    request_id = await submit(
        http,
        bearer,
        **{
            "from": f"sender_id:{sender}",
            "to": f"{one};{two},nobody@example.com",
            "body": "Hello",
            "external_id": "ext-1",
            "campaign_id": "camp",
            "conversation_id": "conv",
            "subject": "greeting",
            "recipient_ count": 99,
            "sent_count": 5,
        },
    )
    body = await wait_request(
        http, bearer, request_id, lambda b: b["state"] == "COMPLETED" and b["delivered_count"] == 2
    )
    assert body["from"] == f"sender_id:{sender}" and body["to"] == [one, two, "nobody@example.com"]
    assert body["recipient_count"] == 3 and body["sent_count"] == 2
    assert body["failed_count"] == 1 and body["canceled_count"] == 0
    assert body["consent_requirement"] == "OPT_OUT" and body["application_id"] == "test-app"
    assert body["test_message_flag"] is False and body["scheduled_delivery_time_zone"] == "UTC"

    messages = await messages_of(http, bearer, request_id)
    by_to = {m["to_address"]: m for m in messages}
    assert by_to[one]["state"] == "DELIVERED" and by_to[one]["sent_date"]
    assert by_to[one]["customer_sender_id"] == sender and by_to[one]["direction"] == "MT"
    assert by_to[one]["external_message_request_id"] == "ext-1"
    assert by_to[one]["campaign_id"] == "camp" and by_to[one]["body"] == "Hello"
    assert by_to["nobody@example.com"]["state"] == "FAILED"
    assert by_to["nobody@example.com"]["failure_code"] == "INVALID_RECIPIENT"

    # lists: bare arrays, exact filters, limit/offset
    listed = await http.get(f"{MR}?external_id=ext-1", headers=bearer)
    assert [r["id"] for r in listed.json()] == [request_id]
    for query in (
        f"to={one}",
        "state=COMPLETED&campaign_id=camp",
        f"from=sender_id:{sender}",
        "test_message_flag=false",
        "subject=greeting&conversation_id=conv",
    ):
        response = await http.get(f"{MR}?{query}", headers=bearer)
        assert response.status_code == 200, (query, response.text)
        assert [r["id"] for r in response.json()] == [request_id], query
    assert (await http.get(f"{MR}?test_message_flag=true", headers=bearer)).json() == []
    assert (await http.get(f"{MR}?state=PAUSED", headers=bearer)).json() == []
    item = await http.get(f"{MR}/{request_id}?state=PAUSED", headers=bearer)
    assert item.json()["id"] == request_id  # item GETs ignore filters
    assert len(await messages_of(http, bearer, request_id, "?limit=1&offset=1")) == 1
    assert [
        m["to_address"] for m in await messages_of(http, bearer, request_id, "?state=FAILED")
    ] == ["nobody@example.com"]


async def test_validation(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    sender = await create_sender(http, bearer)
    base = {"from": sender, "to": [us_number()], "body": "hi"}

    async def bad(code: str = "400", **fields: Any) -> str:
        response = await http.post(MR, json={**base, **fields}, headers=bearer)
        return assert_error(response, 400, code)

    assert "1600" in await bad("1012", body="x" * 1601)
    assert "from" in await bad(**{"from": "sender_id:nope"})
    assert "to" in await bad(to=["not-an-address"])
    assert "to" in await bad(to=[])
    assert "body" in await bad(body="")
    assert "consent_requirement" in await bad(consent_requirement="MAYBE")
    assert "scheduled_delivery_time_zone" in await bad(scheduled_delivery_time_zone="MARS")
    assert "expiry_time" in await bad(expiry_time="2001-01-01T00:00:00Z")
    assert "pause_expiry_time" in await bad(
        pause_before_transmit=True, pause_expiry_time="2999-01-01T00:00:00Z"
    )
    assert "pause_expiry_time" in await bad(pause_expiry_time="2999-01-01T00:00:00Z")
    assert "attachments" in await bad(attachments="att_missing")
    await bad(test_message_flag="perhaps")
    assert "translat" in await bad(translate=True)  # no engine: refused, never sent untranslated
    await bad("1017", criteria="{not json")
    assert "template" in await bad(body="", template_id="no-such-template")
    assert_error(
        await http.post(MR, json={**base, "subject": "s" * 300}, headers=bearer), 400, "1023"
    )


async def test_template_body_and_form_encoding(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sender = await create_sender(http, bearer)
    name = f"greet-{uuid.uuid4().hex[:6]}"
    created = await http.post(
        "/messaging/message_templates",
        json={"designation": "TEMPLATE", "name": name, "pattern": "Hi {{ name }}!"},
        headers=bearer,
    )
    assert created.status_code == 200, created.text
    request_id = await submit(
        http,
        bearer,
        **{
            "from": sender,
            "to": [us_number()],
            "template_id": name,
            "template_values": {"name": "Ana"},
        },
    )
    body = await read(http, bearer, request_id)
    assert body["body"] == "Hi Ana!" and body["template_id"] == created.json()["id"]
    missing = await http.post(
        MR, json={"from": sender, "to": [us_number()], "template_id": name}, headers=bearer
    )
    assert "name" in assert_error(missing, 400, "400")

    form = await http.post(
        MR,
        content=urlencode(
            {
                "from": f"sender_id-{sender}",
                "to": f"{us_number()};{us_number()}",
                "body": "form body",
                "test_message_flag": "true",
            }
        ),
        headers={**bearer, "content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 200, form.text
    body = await wait_request(http, bearer, form.json()["id"], done)
    assert body["test_message_flag"] is True and body["state"] == "COMPLETED"
    assert body["recipient_count"] == 2 and body["sent_count"] == 0 and body["body"] == "form body"
    states = {m["state"] for m in await messages_of(http, bearer, form.json()["id"])}
    assert states == {"TEST"}


async def test_pause_resume_and_cancel_keep_counters_true(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sender = await create_sender(http, bearer)
    to = [us_number(), us_number(), us_number()]
    paused_id = await submit(
        http, bearer, **{"from": sender, "to": to, "body": "wait", "pause_before_transmit": True}
    )
    paused = await wait_request(http, bearer, paused_id, done)
    assert paused["state"] == "PAUSED" and paused["recipient_count"] == 3
    assert paused["sent_count"] == 0 and paused["pause_expiry_time"]
    assert {m["state"] for m in await messages_of(http, bearer, paused_id)} == {"PAUSED"}
    filtered = await http.get(f"{MR}?pause_before_transmit=true&state=PAUSED", headers=bearer)
    assert paused_id in [r["id"] for r in filtered.json()]

    bad = await http.post(f"{MR}/{paused_id}", json={"state": "COMPLETED"}, headers=bearer)
    assert "state" in assert_error(bad, 400, "400")
    stale = await http.post(
        f"{MR}/{paused_id}", json={"state": "TRANSMITTING", "version_number": 1}, headers=bearer
    )
    assert_error(stale, 409, "1001")
    resumed = await http.post(f"{MR}/{paused_id}", json={"state": "TRANSMITTING"}, headers=bearer)
    assert resumed.status_code == 200 and resumed.json() == {"id": paused_id}
    body = await wait_request(
        http, bearer, paused_id, lambda b: b["state"] == "COMPLETED" and b["delivered_count"] == 3
    )
    assert body["sent_count"] == 3 and body["canceled_count"] == 0

    # cancel a paused request: its messages are canceled and counted
    cancel_id = await submit(
        http, bearer, **{"from": sender, "to": to[:2], "body": "no", "pause_before_transmit": True}
    )
    await wait_request(http, bearer, cancel_id, done)
    canceled = await http.post(f"{MR}/{cancel_id}", json={"state": "CANCELED"}, headers=bearer)
    assert canceled.status_code == 200, canceled.text
    body = await read(http, bearer, cancel_id)
    assert body["state"] == "CANCELED" and body["canceled_count"] == 2 and body["sent_count"] == 0
    assert {m["state"] for m in await messages_of(http, bearer, cancel_id)} == {"CANCELED"}
    again = await http.post(f"{MR}/{cancel_id}", json={"state": "TRANSMITTING"}, headers=bearer)
    assert_error(again, 400, "400")

    # delete: soft, canceling a live request first; a completed one just becomes DELETED
    deleted = await http.delete(f"{MR}/{paused_id}", headers=bearer)
    assert deleted.status_code == 200
    assert (await read(http, bearer, paused_id))["state"] == "DELETED"
    live_id = await submit(
        http, bearer, **{"from": sender, "to": to[:1], "body": "x", "pause_before_transmit": True}
    )
    await wait_request(http, bearer, live_id, done)
    assert (await http.delete(f"{MR}/{live_id}", headers=bearer)).status_code == 200
    body = await read(http, bearer, live_id)
    assert body["state"] == "DELETED" and body["canceled_count"] == 1


async def test_consent_refusals_fail_with_no_consent(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sender = await create_sender(http, bearer)
    opted_in, opted_out, unknown = us_number(), us_number(), us_number()
    for address, status in ((opted_in, "OPTIN"), (opted_out, "OPTOUT")):
        response = await http.post(
            "/consent/contact_address_statuses",
            json={"address_type": "MDN", "address": address, "consent_status": status},
            headers=bearer,
        )
        assert response.status_code == 200, response.text
    to = [opted_in, opted_out, unknown]
    expected = {
        "OPT_IN": {opted_in},
        "OPT_OUT": {opted_in, unknown},
        "NONE": {opted_in, opted_out, unknown},
    }
    for requirement, allowed in expected.items():
        request_id = await submit(
            http,
            bearer,
            **{"from": sender, "to": to, "body": "c", "consent_requirement": requirement},
        )
        body = await wait_request(http, bearer, request_id, done)
        assert body["recipient_count"] == 3
        assert body["failed_count"] == 3 - len(allowed), requirement
        messages = await messages_of(http, bearer, request_id)
        refused = {m["to_address"] for m in messages if m["failure_code"] == "NO_CONSENT"}
        assert refused == set(to) - allowed, requirement
        assert all(m["state"] == "FAILED" for m in messages if m["to_address"] in refused)


async def test_fan_out_to_contacts_groups_and_criteria(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sender = await create_sender(http, bearer)
    spanish = [
        await contact(http, bearer, primary_mdn=us_number(), primary_addr_country="ES")
        for _ in range(3)
    ]
    french = await contact(http, bearer, primary_mdn=us_number(), primary_addr_country="FR")
    no_address = await contact(http, bearer, first_name="Nobody", primary_addr_country="ES")
    static = await group(http, bearer, name=f"static-{uuid.uuid4().hex[:6]}", type="STATIC")
    for member in (spanish[0], french):
        added = await http.post(
            f"/contact_groups/{static}/contacts", json={"id": member}, headers=bearer
        )
        assert added.status_code == 200, added.text
    dynamic = await group(
        http, bearer, name=f"dyn-{uuid.uuid4().hex[:6]}", type="DYNAMIC", criteria=SPAIN
    )

    async def recipients(**fields: Any) -> set[str]:
        request_id = await submit(http, bearer, **{"from": sender, "body": "g", **fields})
        body = await wait_request(http, bearer, request_id, done)
        assert body["state"] == "COMPLETED", body
        messages = await messages_of(http, bearer, request_id)
        assert body["recipient_count"] == len(messages)
        return {m["contact_id"] for m in messages}

    assert await recipients(to=[spanish[1], french]) == {spanish[1], french}
    assert await recipients(to=[static]) == {spanish[0], french}
    assert await recipients(to=[dynamic]) == set(spanish)  # no_address has no MDN
    assert await recipients(criteria=SPAIN) == set(spanish)
    # a contact reached twice (group and contact id) gets one message
    assert await recipients(to=[static, french, spanish[0]]) == {spanish[0], french}
    assert no_address not in await recipients(to=[dynamic, static])
    # messages filter by contact, also under the documented name contact-id
    listed = await http.get(f"/messaging/messages?contact_id={french}", headers=bearer)
    assert listed.status_code == 200 and len(listed.json()) == 4
    hyphen = await http.get(f"/messaging/messages?contact-id={french}", headers=bearer)
    assert hyphen.status_code == 200, hyphen.text
    assert [m["id"] for m in hyphen.json()] == [m["id"] for m in listed.json()]


async def test_cross_org_isolation(
    http: httpx.AsyncClient, bearer: dict[str, str], other: dict[str, str]
) -> None:
    sender = await create_sender(http, bearer)
    request_id = await submit(http, bearer, **{"from": sender, "to": [us_number()], "body": "x"})
    await wait_request(http, bearer, request_id, done)
    message_id = (await messages_of(http, bearer, request_id))[0]["id"]
    for response in (
        await http.get(f"{MR}/{request_id}", headers=other),
        await http.post(f"{MR}/{request_id}", json={"state": "CANCELED"}, headers=other),
        await http.delete(f"{MR}/{request_id}", headers=other),
        await http.get(f"{MR}/{request_id}/messages", headers=other),
        await http.get(f"/messaging/messages/{message_id}", headers=other),
        await http.post(
            f"/messaging/messages/{message_id}", json={"state": "DELETED"}, headers=other
        ),
        await http.get(f"/messaging/messages/{message_id}/attachments", headers=other),
    ):
        assert response.status_code == 404, response.text
    assert (await http.get(MR, headers=other)).json() == []
    assert (await http.get("/messaging/messages", headers=other)).json() == []
    # another org cannot send from this org's sender, nor to its groups
    foreign = await http.post(
        MR, json={"from": sender, "to": [us_number()], "body": "x"}, headers=other
    )
    assert "from" in assert_error(foreign, 400, "400")


async def test_attachments_must_suit_the_senders_type(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    """An SMS long code takes images but not PDFs (its type's MIME lists)."""
    sender = await create_sender(http, bearer)

    async def attachment(content_type: str) -> str:
        response = await http.post(
            "/messaging/attachments", json={"type": content_type}, headers=bearer
        )
        assert response.status_code == 200, response.text
        attachment_id: str = response.json()["id"]
        return attachment_id

    image = await attachment("image/png")
    pdf = await attachment("application/pdf")
    base = {"from": sender, "to": [us_number()], "body": "see attached"}
    accepted = await http.post(MR, json={**base, "attachments": [image]}, headers=bearer)
    assert accepted.status_code == 200, accepted.text
    refused = await http.post(MR, json={**base, "attachments": [image, pdf]}, headers=bearer)
    assert "application/pdf" in assert_error(refused, 400, "400")
