"""Conferences through Envoy: three members (an ACTIVE call, a dial-out, a muted one with a join
tone), plays to the room and to one member, members leaving (a dialled call is hung up), the
conference completing with its last member; DELETE, and the refusals."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.support.calling import CALLS, call, until, voice_sender
from tests.support.errors import assert_error
from tests.support.messaging import us_number

pytestmark = pytest.mark.envoy
CONFERENCES = "/calling/conferences"


async def wait_for(
    http: httpx.AsyncClient, bearer: dict[str, str], path: str, state: str
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            body: dict[str, Any] = (await http.get(path, headers=bearer)).json()
            if body.get("state") == state:
                return body
            await asyncio.sleep(0.05)


async def post_id(
    http: httpx.AsyncClient, bearer: dict[str, str], path: str, body: dict[str, Any]
) -> str:
    response = await http.post(path, json=body, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    item_id: str = response.json()["id"]
    return item_id


async def test_three_members_mute_leave_and_complete(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sender = await voice_sender(http, bearer)
    conference_id = await post_id(
        http, bearer, CONFERENCES, {"from": sender, "external_id": "weekly", "state": "created"}
    )
    room = f"{CONFERENCES}/{conference_id}"
    created = (await http.get(room, headers=bearer)).json()
    assert (created["state"], created["active_members"], created["from"]) == (
        "created",
        0,
        sender,
    )
    members = f"{room}/members"

    host = await call(http, bearer, **{"from": sender, "to": us_number()})
    await until(http, bearer, host, "ACTIVE")
    first = await post_id(http, bearer, members, {"call_id": host, "external_id": "host"})
    dialled = await post_id(http, bearer, members, {"to": us_number(), "leaving_tone": True})
    quiet = await post_id(
        http, bearer, members, {"to": us_number(), "mute": True, "join_tone": True}
    )
    for member_id in (first, dialled, quiet):
        await wait_for(http, bearer, f"{members}/{member_id}", "active")
    room_now = (await http.get(room, headers=bearer)).json()
    assert (room_now["state"], room_now["active_members"]) == ("active", 3)
    listed = (await http.get(members, headers=bearer)).json()
    assert {m["id"] for m in listed} == {first, dialled, quiet}
    muted = (await http.get(f"{members}/{quiet}", headers=bearer)).json()
    assert muted["mute"] is True and muted["conference_external_id"] == "weekly"
    assert muted["added_time"] and muted["call_id"]

    # Plays to the room and to one member.
    assert (
        await http.post(f"{room}/play_tts", json={"text": "Welcome all"}, headers=bearer)
    ).status_code == 200
    assert (
        await http.post(f"{members}/{first}/play_tts", json={"text": "You host"}, headers=bearer)
    ).status_code == 200

    # The dialled member is removed: it leaves and its call (placed by the conference) ends.
    dialled_call = (await http.get(f"{members}/{dialled}", headers=bearer)).json()["call_id"]
    assert (await http.delete(f"{members}/{dialled}", headers=bearer)).status_code == 200
    gone = await wait_for(http, bearer, f"{members}/{dialled}", "completed")
    assert gone["removed_time"]
    await until(http, bearer, dialled_call, "COMPLETED")
    # The host hangs up their own call: they leave; the call was theirs, nothing else ends.
    assert (await http.delete(f"{CALLS}/{host}", headers=bearer)).status_code == 200
    await wait_for(http, bearer, f"{members}/{first}", "completed")
    assert (await http.get(room, headers=bearer)).json()["active_members"] == 1
    # The last member leaves: the conference completes.
    assert (await http.delete(f"{members}/{quiet}", headers=bearer)).status_code == 200
    done = await wait_for(http, bearer, room, "completed")
    assert done["completed_time"] and done["active_members"] == 0
    late = await http.post(members, json={"to": us_number()}, headers=bearer)
    assert_error(late, 409, "1001")


async def test_delete_and_refusals(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    sender = await voice_sender(http, bearer)
    no_from = await post_id(http, bearer, CONFERENCES, {"hold": True})
    members = f"{CONFERENCES}/{no_from}/members"
    assert "to" in assert_error(
        await http.post(members, json={"to": us_number()}, headers=bearer), 400, "400"
    )
    both = {"to": us_number(), "call_id": "call_x"}
    assert "call_id" in assert_error(
        await http.post(members, json=both, headers=bearer), 400, "400"
    )
    assert_error(
        await http.post(members, json={"call_id": "call_nope"}, headers=bearer), 404, "404"
    )
    ringing = await call(http, bearer, **{"from": sender, "to": "+14152340404"})
    assert "ACTIVE" in assert_error(
        await http.post(members, json={"call_id": ringing}, headers=bearer), 409, "1001"
    )
    wrong_state = {"state": "completed"}
    assert "state" in assert_error(
        await http.post(CONFERENCES, json=wrong_state, headers=bearer), 400, "400"
    )

    conference_id = await post_id(http, bearer, CONFERENCES, {"from": sender})
    room = f"{CONFERENCES}/{conference_id}"
    member = await post_id(http, bearer, f"{room}/members", {"to": us_number()})
    await wait_for(http, bearer, f"{room}/members/{member}", "active")
    member_call = (await http.get(f"{room}/members/{member}", headers=bearer)).json()["call_id"]
    assert (await http.delete(room, headers=bearer)).status_code == 200
    await wait_for(http, bearer, room, "completed")
    await wait_for(http, bearer, f"{room}/members/{member}", "completed")
    await until(http, bearer, member_call, "COMPLETED")
    assert_error(await http.delete(room, headers=bearer), 409, "1001")


async def test_events_as_sse_and_isolation(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: Any
) -> None:
    """GET /calling/events is Server-Sent Events (resumable with Last-Event-ID); another org
    sees none of these calls, bridges or conferences."""
    sender = await voice_sender(http, bearer)
    call_id = await call(http, bearer, **{"from": sender, "to": "+14152340486"})  # busy
    conference_id = await post_id(http, bearer, CONFERENCES, {"from": sender})
    seen: list[dict[str, Any]] = []
    async with http.stream(
        "GET",
        "/calling/events",
        params={"after": "0", "call_ids": [call_id, conference_id]},
        headers={**bearer, "Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(10):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if {"call.rejected", "conference.created"} <= {
                        e["envelope"]["type"] for e in seen
                    }:
                        break
    rejected = next(e for e in seen if e["envelope"]["type"] == "call.rejected")
    assert rejected["call"]["failure_code"] == "BUSY"
    created = next(e for e in seen if e["envelope"]["type"] == "conference.created")
    assert created["conference"]["id"] == conference_id
    # Resuming after the first event skips it.
    first = seen[0]["envelope"]["cursor"]
    async with http.stream(
        "GET",
        "/calling/events",
        params={"call_ids": [call_id, conference_id]},
        headers={**bearer, "Accept": "text/event-stream", "Last-Event-ID": first},
    ) as response:
        async with asyncio.timeout(10):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    resumed = json.loads(line[5:])["envelope"]["cursor"]
                    assert resumed == seen[1]["envelope"]["cursor"]
                    break
    stranger = {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:8]}')}"}
    for path in (f"{CALLS}/{call_id}", f"{CONFERENCES}/{conference_id}"):
        assert_error(await http.get(path, headers=stranger), 404, "404")
    assert (await http.get(CONFERENCES, headers=stranger)).json() == []
    assert (await http.get("/calling/bridges", headers=stranger)).json() == []
