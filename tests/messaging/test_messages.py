"""Messages through the REST edge: list/get with filters, the request's messages, customer state
changes (CONVERTED, PROCESSED for MO, DELETED) with the allowed transitions and true counters,
soft delete, attachments, "Not allowed" (403) operations and cross-org 404s."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from switchboard.server.app.server import Application
from switchboard.server.core.db import table_of
from switchboard.server.core.models import EventRecord
from switchboard.server.messaging.requests.messages import counter_deltas
from tests.support.clock import TEST_CLOCK
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
MESSAGES = "/messaging/messages"


async def _sent(
    http: httpx.AsyncClient, bearer: dict[str, str], count: int = 2, **fields: Any
) -> tuple[str, list[dict[str, Any]]]:
    sender = await create_sender(http, bearer)
    to = [us_number() for _ in range(count)]
    request_id = await submit(http, bearer, **{"from": sender, "to": to, "body": "m", **fields})
    await wait_request(http, bearer, request_id, done)
    return request_id, await messages_of(http, bearer, request_id)


async def test_list_get_filters_and_not_allowed(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    request_id, messages = await _sent(http, bearer, test_message_flag=True, campaign_id="c1")
    first = messages[0]
    got = await http.get(f"{MESSAGES}/{first['id']}?state=SENT", headers=bearer)
    assert got.status_code == 200 and got.json()["id"] == first["id"]
    body = got.json()
    assert body["state"] == "TEST" and body["version_number"] == 1
    assert "contact_id" in body and "failed_translation" in body
    listed = await http.get(MESSAGES, headers=bearer)
    assert isinstance(listed.json(), list) and len(listed.json()) == 2
    for query in (
        f"message_request_id={request_id}",
        "state=TEST&direction=MT&type=SMS",
        "campaign_id=c1&body=m",
        f"to_address={first['to_address'].replace('+', '%2B')}",
        f"customer_sender_id={first['customer_sender_id']}",
        "price=0",
        f"created_date={first['created_date'][:10]}",
    ):
        response = await http.get(f"{MESSAGES}?{query}", headers=bearer)
        assert response.status_code == 200, (query, response.text)
        assert {m["id"] for m in response.json()} >= {first["id"]}, query
    narrowed = await http.get(
        f"{MESSAGES}?to_address={first['to_address'].replace('+', '%2B')}", headers=bearer
    )
    assert [m["id"] for m in narrowed.json()] == [first["id"]]
    assert (await http.get(f"{MESSAGES}?state=DELIVERED", headers=bearer)).json() == []
    assert_error(await http.get(f"{MESSAGES}?price=cheap", headers=bearer), 400, "400")
    assert len((await http.get(f"{MESSAGES}?limit=1", headers=bearer)).json()) == 1

    for response, where in (
        (await http.post(MESSAGES, json={"state": "SENT"}, headers=bearer), "message_requests"),
        (
            await http.post(f"{MR}/{request_id}/messages", json={"state": "SENT"}, headers=bearer),
            "message_requests",
        ),
        (
            await http.post(
                f"{MESSAGES}/{first['id']}/attachments", json={"name": "x"}, headers=bearer
            ),
            "attachments",
        ),
    ):
        description = assert_error(response, 403, "403")
        assert "Not allowed" in description and where in description
    missing = await http.post(f"{MR}/mr_missing/messages", json={}, headers=bearer)
    assert missing.status_code == 404


async def _event_types(app: Application, resource_id: str) -> list[str]:
    table = table_of(EventRecord)
    query = select(table.c.type).where(table.c.resource_id == resource_id).order_by(table.c.seq)
    async with app.db.read() as session:
        return list((await session.execute(query)).scalars())


async def test_conversion_and_deletion_update_counters(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application
) -> None:
    request_id, messages = await _sent(http, bearer, count=3)
    await wait_request(http, bearer, request_id, lambda b: b["delivered_count"] == 3)
    one, two, three = (m["id"] for m in messages)
    converted = await http.post(
        f"{MESSAGES}/{one}",
        json={
            "state": "CONVERTED",
            "converted_date": "2026-01-02T03:04:05Z",
            "conversion_info_source": "crm",
        },
        headers=bearer,
    )
    assert converted.status_code == 200 and converted.json() == {"id": one}
    message = (await http.get(f"{MESSAGES}/{one}", headers=bearer)).json()
    assert message["state"] == "CONVERTED" and message["converted_date"] == "2026-01-02T03:04:05Z"
    assert message["conversion_info_source"] == "crm" and message["version_number"] > 1
    assert (await read(http, bearer, request_id))["converted_count"] == 1
    assert await _event_types(app, one) == [
        "message.sent",
        "message.delivered",
        "message.converted",
    ]
    request_events = await _event_types(app, request_id)
    assert request_events[:4] == [
        "message_request.accepted",
        "message_request.preparing",
        "message_request.progress",
        "message_request.transmitting",
    ]
    assert "message_request.completed" in request_events

    # DELETED from any state, soft: still readable; counters keep what happened
    assert (await http.delete(f"{MESSAGES}/{two}", headers=bearer)).status_code == 200
    deleted = (await http.get(f"{MESSAGES}/{two}", headers=bearer)).json()
    assert deleted["state"] == "DELETED" and deleted["delivered_date"]
    body = await read(http, bearer, request_id)
    assert body["delivered_count"] == 3 and body["converted_count"] == 1
    assert body["recipient_count"] == 3

    # illegal transitions: 400 naming the allowed ones; stale versions 409
    illegal = await http.post(f"{MESSAGES}/{two}", json={"state": "CONVERTED"}, headers=bearer)
    assert "allowed" in assert_error(illegal, 400, "400")
    processed = await http.post(f"{MESSAGES}/{three}", json={"state": "PROCESSED"}, headers=bearer)
    assert_error(processed, 400, "400")
    unknown = await http.post(f"{MESSAGES}/{three}", json={"state": "SENT"}, headers=bearer)
    assert "state" in assert_error(unknown, 400, "400")
    # An empty or missing state is a missing one (it crashed with a 500, found by fuzzing).
    for body in ({"state": ""}, {"state": " "}, {}, {"version_number": 0}):
        empty = await http.post(f"{MESSAGES}/{three}", json=body, headers=bearer)
        assert "state: is required" in assert_error(empty, 400, "400")
    stale = await http.post(
        f"{MESSAGES}/{three}", json={"state": "DELETED", "version_number": 1}, headers=bearer
    )
    assert_error(stale, 409, "1001")
    stray = await http.post(
        f"{MESSAGES}/{three}",
        json={"state": "DELETED", "conversion_info_source": "x"},
        headers=bearer,
    )
    assert_error(stray, 400, "400")


async def test_mo_messages_are_processed_or_deleted(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, app: Application
) -> None:
    mo = await app.messaging.messages.record_inbound(
        org, from_address=us_number(), to_address=us_number(), body="STOP"
    )
    received = (await http.get(f"{MESSAGES}/{mo}", headers=bearer)).json()
    assert received["direction"] == "MO" and received["state"] == "RECEIVED"
    converted = await http.post(f"{MESSAGES}/{mo}", json={"state": "CONVERTED"}, headers=bearer)
    assert_error(converted, 400, "400")
    ok = await http.post(f"{MESSAGES}/{mo}", json={"state": "PROCESSED"}, headers=bearer)
    assert ok.status_code == 200, ok.text
    again = await http.post(f"{MESSAGES}/{mo}", json={"state": "PROCESSED"}, headers=bearer)
    assert_error(again, 400, "400")
    listed = await http.get(f"{MESSAGES}?direction=MO&state=PROCESSED", headers=bearer)
    assert [m["id"] for m in listed.json()] == [mo]
    assert (await http.delete(f"{MESSAGES}/{mo}", headers=bearer)).status_code == 200
    assert (await http.get(f"{MESSAGES}/{mo}", headers=bearer)).json()["state"] == "DELETED"


async def test_message_attachments(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    created = await http.post(
        "/messaging/attachments",
        json={"name": f"pic-{uuid.uuid4().hex[:6]}", "type": "image/png", "filename": "a.png"},
        headers=bearer,
    )
    assert created.status_code == 200, created.text
    attachment_id = created.json()["id"]
    request_id, messages = await _sent(http, bearer, count=1, attachments=attachment_id)
    message = messages[0]
    assert message["attachments"] == [attachment_id] and message["type"] == "MMS"
    listed = await http.get(f"{MESSAGES}/{message['id']}/attachments", headers=bearer)
    assert listed.status_code == 200 and [a["id"] for a in listed.json()] == [attachment_id]
    filtered = await http.get(
        f"{MESSAGES}/{message['id']}/attachments?type=text/plain", headers=bearer
    )
    assert filtered.json() == []
    _, plain = await _sent(http, bearer, count=1)
    none = await http.get(f"{MESSAGES}/{plain[0]['id']}/attachments", headers=bearer)
    assert none.status_code == 200 and none.json() == []
    assert (await read(http, bearer, request_id))["attachments"] == [attachment_id]


@pytest.mark.unit
def test_counter_deltas_follow_each_messages_change() -> None:
    """Counters move by what changed; a message seen twice in one change counts once."""
    now = TEST_CLOCK.now()

    def message(id_: str, state: str, **times: Any) -> dict[str, Any]:
        base = {"sent_at": None, "delivered_at": None, "converted_at": None}
        return {"id": id_, "message_request_id": "mr_1", "state": state, **base, **times}

    before = [message("a", "CREATED"), message("b", "SENT", sent_at=now), message("c", "CREATED")]
    after = [
        message("a", "SENT", sent_at=now),
        message("b", "DELIVERED", sent_at=now, delivered_at=now),
        message("c", "FAILED"),
    ]
    assert counter_deltas(before, after) == {
        "mr_1": {"sent_count": 1, "delivered_count": 1, "failed_count": 1}
    }
    assert counter_deltas(after, after) == {"mr_1": {}}
    assert counter_deltas([], after) == {}
