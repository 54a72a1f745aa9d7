"""Bridges through Envoy: join ACTIVE calls, hold and unhold with bridge_audio, play into the
bridge, list its calls, COMPLETED when a leg ends or on DELETE; and the refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.calling import CALLS, call, until, voice_sender
from tests.support.errors import assert_error
from tests.support.messaging import us_number

pytestmark = pytest.mark.envoy
BRIDGES = "/calling/bridges"


async def active_calls(http: httpx.AsyncClient, bearer: dict[str, str], count: int) -> list[str]:
    sender = await voice_sender(http, bearer)
    ids = [await call(http, bearer, **{"from": sender, "to": us_number()}) for _ in range(count)]
    for call_id in ids:
        await until(http, bearer, call_id, "ACTIVE")
    return ids


async def bridge_state(
    http: httpx.AsyncClient, bearer: dict[str, str], bridge_id: str, state: str
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            body: dict[str, Any] = (await http.get(f"{BRIDGES}/{bridge_id}", headers=bearer)).json()
            if body["state"] == state:
                return body
            await asyncio.sleep(0.05)


async def test_bridge_hold_play_and_a_leg_ending(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    first, second = await active_calls(http, bearer, 2)
    created = await http.post(BRIDGES, json={"call_ids": [first, second]}, headers=bearer)
    assert created.status_code == 200, created.text
    bridge_id = created.json()["id"]
    bridge = await bridge_state(http, bearer, bridge_id, "ACTIVE")
    assert bridge["bridge_audio"] is True and bridge["activated_time"]
    legs = (await http.get(f"{BRIDGES}/{bridge_id}/calls", headers=bearer)).json()
    assert sorted(c["id"] for c in legs) == sorted([first, second])
    assert all(c["bridge_id"] == bridge_id for c in legs)

    # bridge_audio false puts it on hold, true takes it off (the documented inverted naming).
    for audio, state in ((False, "HOLD"), (True, "ACTIVE")):
        response = await http.post(
            f"{BRIDGES}/{bridge_id}", json={"bridge_audio": audio}, headers=bearer
        )
        assert response.json() == {"id": bridge_id}
        assert (await bridge_state(http, bearer, bridge_id, state))["bridge_audio"] is audio
    listed = (await http.get(f"{BRIDGES}?state=ACTIVE", headers=bearer)).json()
    assert bridge_id in [b["id"] for b in listed]

    played = await http.post(
        f"{BRIDGES}/{bridge_id}/play_tts", json={"text": "You are connected"}, headers=bearer
    )
    assert played.status_code == 200, played.text
    assert (
        await http.post(
            f"{BRIDGES}/{bridge_id}/play_audio",
            json={"source_type": "URL", "source": "https://example.com/tone.wav"},
            headers=bearer,
        )
    ).status_code == 200

    # One party hangs up: the bridge completes, the other call stays up on its own.
    assert (await http.delete(f"{CALLS}/{first}", headers=bearer)).status_code == 200
    done = await bridge_state(http, bearer, bridge_id, "COMPLETED")
    assert done["completed_time"]
    other = await until(http, bearer, second, "ACTIVE")
    assert other.get("bridge_id", "") == ""
    assert_error(await http.delete(f"{BRIDGES}/{bridge_id}", headers=bearer), 409, "1001")
    late = await http.post(f"{BRIDGES}/{bridge_id}/play_tts", json={"text": "x"}, headers=bearer)
    assert_error(late, 409, "1001")


async def test_delete_and_refusals(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    a, b, c = await active_calls(http, bearer, 3)
    # call_ids also as one comma-separated string; bridge_audio false starts on hold.
    created = await http.post(
        BRIDGES, json={"call_ids": f"{a},{b}", "bridge_audio": False}, headers=bearer
    )
    assert created.status_code == 200, created.text
    bridge_id = created.json()["id"]
    await bridge_state(http, bearer, bridge_id, "HOLD")
    taken = await http.post(BRIDGES, json={"call_ids": [b, c]}, headers=bearer)
    assert "already in bridge" in assert_error(taken, 409, "1001")
    assert "call_ids" in assert_error(
        await http.post(BRIDGES, json={"call_ids": [c]}, headers=bearer), 400, "400"
    )
    assert_error(
        await http.post(BRIDGES, json={"call_ids": [c, "call_nope"]}, headers=bearer), 404, "404"
    )
    sender = await voice_sender(http, bearer)
    ringing = await call(http, bearer, **{"from": sender, "to": "+14152340404"})
    early = await http.post(BRIDGES, json={"call_ids": [c, ringing]}, headers=bearer)
    assert "ACTIVE" in assert_error(early, 409, "1001")
    # DELETE ends the bridge; both calls stay up and can be bridged again.
    assert (await http.delete(f"{BRIDGES}/{bridge_id}", headers=bearer)).status_code == 200
    await bridge_state(http, bearer, bridge_id, "COMPLETED")
    again = await http.post(BRIDGES, json={"call_ids": [a, b, c]}, headers=bearer)
    assert again.status_code == 200, again.text
    await bridge_state(http, bearer, again.json()["id"], "ACTIVE")
