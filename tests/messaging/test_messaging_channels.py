"""Channels and their sender IDs through the REST edge (family B): CRUD with the form-encoded
PUT, priorities, locking, unique names, adding (body `sender_ids` / `sender_id`) and removing
(query `sender_id`) sender IDs, cross-org isolation and resolve_sendable over a channel."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from switchboard.server.app.server import Application
from switchboard.server.core.auth import Role
from switchboard.server.core.errors import NotFound
from tests.support.auth import TokenFactory
from tests.support.errors import assert_error
from tests.support.messaging import create_sender

pytestmark = pytest.mark.envoy

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def other(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:12]}')}"}


async def create_channel(http: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    response = await http.post("/messaging/channels", json=fields, headers=headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    channel_id: str = response.json()["id"]
    return channel_id


async def get_channel(
    http: httpx.AsyncClient, headers: dict[str, str], channel_id: str
) -> dict[str, Any]:
    response = await http.get(f"/messaging/channels/{channel_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_channel_crud_with_form_put(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    channel_id = await create_channel(
        http, bearer, name="Alerts", priority="HIGH", description="urgent", ownership="shared"
    )
    channel = await get_channel(http, bearer, channel_id)
    assert channel["name"] == "Alerts" and channel["priority"] == "high"
    assert channel["ownership"] == "SHARED" and channel["description"] == "urgent"
    assert channel["version_number"] == 1 and channel["application_id"] == "test-app"
    low = await create_channel(http, bearer, name="Bulk", priority="low")
    assert (await get_channel(http, bearer, low))["ownership"] == "PRIVATE"

    listed = await http.get("/messaging/channels", headers=bearer)
    assert listed.status_code == 200 and isinstance(listed.json(), list)
    assert [c["id"] for c in listed.json()] == [channel_id, low]
    high = await http.get("/messaging/channels?priority=high&name=Alerts", headers=bearer)
    assert [c["id"] for c in high.json()] == [channel_id]
    item = await http.get(f"/messaging/channels/{channel_id}?priority=low", headers=bearer)
    assert item.json()["id"] == channel_id  # item GETs ignore the filters

    update = await http.post(
        f"/messaging/channels/{channel_id}",
        json={"description": "very urgent", "version_number": 1},
        headers=bearer,
    )
    assert update.status_code == 200 and update.json() == {"id": channel_id}
    updated = await get_channel(http, bearer, channel_id)
    assert updated["description"] == "very urgent" and updated["name"] == "Alerts"
    assert updated["version_number"] == 2

    put = await http.put(
        f"/messaging/channels/{channel_id}",
        content="name=Alerts+EU&priority=normal&version_number=2",
        headers={**bearer, "content-type": FORM},
    )
    assert put.status_code == 200, put.text
    replaced = await get_channel(http, bearer, channel_id)
    assert replaced["name"] == "Alerts EU" and replaced["priority"] == "normal"
    assert replaced["description"] == "" and replaced["ownership"] == "PRIVATE"  # cleared
    assert replaced["version_number"] == 3
    no_name = await http.put(
        f"/messaging/channels/{channel_id}",
        content="priority=low",
        headers={**bearer, "content-type": FORM},
    )
    assert "name" in assert_error(no_name, 400, "400")

    deleted = await http.delete(f"/messaging/channels/{channel_id}", headers=bearer)
    assert deleted.status_code == 200, deleted.text
    assert_error(await http.get(f"/messaging/channels/{channel_id}", headers=bearer), 404, "404")
    assert_error(await http.delete(f"/messaging/channels/{channel_id}", headers=bearer), 404, "404")


async def test_channel_validation_locking_and_unique_names(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    missing = await http.post("/messaging/channels", json={"priority": "high"}, headers=bearer)
    assert "name" in assert_error(missing, 400, "400")
    bad = await http.post(
        "/messaging/channels", json={"name": "x", "priority": "urgent"}, headers=bearer
    )
    assert "priority" in assert_error(bad, 400, "400")
    too_long = await http.post("/messaging/channels", json={"name": "n" * 257}, headers=bearer)
    assert "name" in assert_error(too_long, 400, "1023")
    channel_id = await create_channel(http, bearer, name="Main")
    duplicate = await http.post("/messaging/channels", json={"name": "Main"}, headers=bearer)
    assert_error(duplicate, 409, "1011")
    other_id = await create_channel(http, bearer, name="Second")
    rename = await http.post(
        f"/messaging/channels/{other_id}", json={"name": "Main"}, headers=bearer
    )
    assert_error(rename, 409, "1011")
    stale = await http.post(
        f"/messaging/channels/{channel_id}",
        json={"description": "x", "version_number": 4},
        headers=bearer,
    )
    assert_error(stale, 409, "1001")
    stale_put = await http.put(
        f"/messaging/channels/{channel_id}",
        json={"name": "Main"},
        headers={**bearer, "If-Match": '"9"'},
    )
    assert_error(stale_put, 409, "1001")
    bad_filter = await http.get("/messaging/channels?created_date=yesterday", headers=bearer)
    assert "created_date" in assert_error(bad_filter, 400, "400")


async def test_channel_sender_ids(
    app: Application,
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    other: dict[str, str],
    org: str,
    make_token: TokenFactory,
) -> None:
    channel_id = await create_channel(http, bearer, name="Fan", priority="high")
    first = await create_sender(http, bearer)
    second = await create_sender(http, bearer)
    third = await create_sender(http, bearer)
    path = f"/messaging/channels/{channel_id}/sender_ids"
    assert (await http.get(path, headers=bearer)).json() == []

    added = await http.post(path, json={"sender_ids": [first, second]}, headers=bearer)
    assert added.status_code == 200 and added.json() == {"id": channel_id}
    single = await http.post(path, json={"sender_id": third}, headers=bearer)
    assert single.status_code == 200, single.text
    again = await http.post(path, json={"sender_id": first}, headers=bearer)  # no-op
    assert again.status_code == 200, again.text
    form = await http.post(
        path, content=f"sender_ids={first},{second}", headers={**bearer, "content-type": FORM}
    )
    assert form.status_code == 200, form.text
    listed = await http.get(path, headers=bearer)
    assert [s["id"] for s in listed.json()] == [first, second, third]
    assert listed.json()[0]["type_id"] == "sms-long-code"  # full Sender ID objects
    filtered = await http.get(f"{path}?id={second}&state=ACTIVE", headers=bearer)
    assert [s["id"] for s in filtered.json()] == [second]

    # resolve_sendable over the channel: its ACTIVE senders, in order, with its priority
    senders = app.messaging.senders
    resolved = await senders.resolve_sendable(org, f"channel-{channel_id}")
    assert [s.id for s in resolved] == [first, second, third]
    assert {s.priority for s in resolved} == {"high"} and resolved[0].channel_id == channel_id
    admin = {"Authorization": f"Bearer {make_token('operator', roles=(Role.ADMIN,))}"}
    inactive = await http.post(
        f"/messaging/admin/sender_ids/{second}/provision", json={"state": "BROKEN"}, headers=admin
    )
    assert inactive.status_code == 200, inactive.text
    resolved = await senders.resolve_sendable(org, f"channel-{channel_id}")
    assert [s.id for s in resolved] == [first, third]
    with pytest.raises(NotFound):
        await senders.resolve_sendable("another-org", f"channel-{channel_id}")

    # only the org's own senders join; foreign, unknown and operator senders are 404
    foreign = await create_sender(http, other)
    assert_error(await http.post(path, json={"sender_id": foreign}, headers=bearer), 404, "404")
    assert_error(
        await http.post(path, json={"sender_id": "sid_shared_us_alerts"}, headers=bearer),
        404,
        "404",
    )
    assert "sender_ids" in assert_error(await http.post(path, json={}, headers=bearer), 400, "400")

    removed = await http.delete(f"{path}?sender_id={first}", headers=bearer)
    assert removed.status_code == 200, removed.text
    assert [s["id"] for s in (await http.get(path, headers=bearer)).json()] == [second, third]
    assert_error(await http.delete(f"{path}?sender_id={first}", headers=bearer), 404, "404")
    assert "sender_id" in assert_error(await http.delete(path, headers=bearer), 400, "400")
    both = await http.delete(f"{path}?sender_id={second}&sender_id={third}", headers=bearer)
    assert both.status_code == 200, both.text
    assert (await http.get(path, headers=bearer)).json() == []

    # deleting a sender takes it out of its channels
    await http.post(path, json={"sender_id": first}, headers=bearer)
    await http.delete(f"/messaging/sender_ids/{first}", headers=bearer)
    assert (await http.get(path, headers=bearer)).json() == []


async def test_channels_are_isolated_per_org(
    http: httpx.AsyncClient, bearer: dict[str, str], other: dict[str, str]
) -> None:
    channel_id = await create_channel(http, bearer, name="Private")
    item = f"/messaging/channels/{channel_id}"
    assert_error(await http.get(item, headers=other), 404, "404")
    assert_error(await http.post(item, json={"name": "x"}, headers=other), 404, "404")
    assert_error(await http.put(item, json={"name": "x"}, headers=other), 404, "404")
    assert_error(await http.delete(item, headers=other), 404, "404")
    assert_error(await http.get(f"{item}/sender_ids", headers=other), 404, "404")
    mine = await create_sender(http, other)
    assert_error(
        await http.post(f"{item}/sender_ids", json={"sender_id": mine}, headers=other), 404, "404"
    )
    assert_error(
        await http.delete(f"{item}/sender_ids?sender_id={mine}", headers=other), 404, "404"
    )
    assert (await http.get("/messaging/channels", headers=other)).json() == []
    # the same name is free in another org
    await create_channel(http, other, name="Private")
    assert (await get_channel(http, bearer, channel_id))["name"] == "Private"
