"""Calls through Envoy and gRPC on the sandbox carrier: the state machine and every scripted
outcome, plays in order with their events, hang-up, price and duration, the live event stream,
the unhappy paths (wrong states, bad media, foreign orgs), and reconciliation after a restart."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import uuid
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import select
from switchboard.calling.v1 import calling_service_pb2 as pb
from switchboard.calling.v1 import calling_service_pb2_grpc

from switchboard.server.app.server import build_application
from switchboard.server.calling.service import plays_table
from tests.support.attachments import create as create_attachment
from tests.support.attachments import token as attachment_token
from tests.support.attachments import upload
from tests.support.auth import TokenFactory
from tests.support.calling import CALLS, call, until, voice_sender
from tests.support.clock import TEST_CLOCK
from tests.support.errors import assert_error
from tests.support.messaging import us_number
from tests.support.server import make_settings

pytestmark = pytest.mark.envoy


def _suffix(ending: str) -> str:
    return f"+1415234{ending}"


async def test_a_call_its_plays_and_its_hang_up(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel, auth: Any
) -> None:
    sender = await voice_sender(http, bearer)
    call_id = await call(http, bearer, **{"from": sender, "to": _suffix("1234")}, external_id="x-1")
    started = (await http.get(f"{CALLS}/{call_id}", headers=bearer)).json()
    assert started["state"] in ("STARTED", "ACTIVE") and started["direction"] == "OUT"
    assert started["to_address"] == _suffix("1234") and started["answer_timeout"] == 30000
    active = await until(http, bearer, call_id, "ACTIVE")
    assert active["answer_time"] >= active["start_time"]

    plays = []
    for path, body in (
        ("play_dtmf", {"dtmf_digits": "12w#"}),
        ("play_tts", {"text": "Your code is four seven", "language": "en-us", "gender": "female"}),
        ("play_audio", {"source_type": "url", "source": "https://example.com/hold.wav"}),
    ):
        response = await http.post(f"{CALLS}/{call_id}/{path}", json=body, headers=bearer)
        assert response.status_code == 200, response.text
        plays.append(response.json()["id"])

    # The stream shows each play start and finish in order (DTMF 0.95 s, TTS 2 s; the audio
    # is hung up mid-way).
    stub = calling_service_pb2_grpc.CallingServiceStub(channel)
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        request = pb.StreamCallEventsRequest(after="0", call_ids=[call_id])
        async for event in stub.StreamCallEvents(request, metadata=auth):
            if event.envelope.type.startswith("play."):
                seen.append((event.envelope.type, event.play.id))
            if event.envelope.type == "call.completed":
                return

    following = asyncio.create_task(follow())
    async with asyncio.timeout(10):
        while ("play.started", plays[2]) not in seen:
            await asyncio.sleep(0.05)
    assert (await http.delete(f"{CALLS}/{call_id}", headers=bearer)).status_code == 200
    await asyncio.wait_for(following, 10)

    def events_of(play_id: str) -> list[str]:
        return [kind for kind, found in seen if found == play_id]

    finished = ["play.queued", "play.started", "play.completed"]
    assert events_of(plays[0]) == events_of(plays[1]) == finished
    assert events_of(plays[2]) == ["play.queued", "play.started", "play.interrupted"]
    # One after the other: each starts only once the one before it completed.
    for before, after in itertools.pairwise(plays):
        assert seen.index(("play.completed", before)) < seen.index(("play.started", after))
    done = await until(http, bearer, call_id, "COMPLETED")
    assert done["chargeable_duration"] >= 3 and done["end_time"]
    assert done["price"] == 0.013  # one started minute to the US at the reference rate
    assert done["external_id"] == "x-1" and done["failure_code"] == ""
    # An ended call cannot be hung up or played into again.
    assert_error(await http.delete(f"{CALLS}/{call_id}", headers=bearer), 409, "1001")
    again = await http.post(
        f"{CALLS}/{call_id}/play_dtmf", json={"dtmf_digits": "1"}, headers=bearer
    )
    assert_error(again, 409, "1001")


@pytest.mark.parametrize(
    ("ending", "timeout", "state", "failure"),
    [
        ("0486", 30000, "REJECTED", "BUSY"),
        ("0404", 1000, "REJECTED", "NO_ANSWER"),
        ("0503", 30000, "REJECTED", "CARRIER_ERROR"),
    ],
)
async def test_rejected_outcomes(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    ending: str,
    timeout: int,
    state: str,
    failure: str,
) -> None:
    sender = await voice_sender(http, bearer)
    call_id = await call(
        http, bearer, **{"from": sender, "to": _suffix(ending)}, answer_timeout=timeout
    )
    rejected = await until(http, bearer, call_id, state)
    assert rejected["failure_code"] == failure and rejected["end_time"]
    assert "answer_time" not in rejected  # never answered: the timestamp is absent
    assert rejected["chargeable_duration"] == 0 and rejected["price"] == 0


async def test_the_far_end_hangs_up(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    sender = await voice_sender(http, bearer)
    call_id = await call(http, bearer, **{"from": sender, "to": _suffix("0500")})
    await until(http, bearer, call_id, "ACTIVE")
    done = await until(http, bearer, call_id, "COMPLETED")
    answered = datetime.fromisoformat(done["answer_time"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(done["end_time"].replace("Z", "+00:00"))
    assert 2.0 <= (ended - answered).total_seconds() < 2.5  # the script: 2 s after the answer
    assert done["chargeable_duration"] == math.ceil((ended - answered).total_seconds())
    assert done["failure_details"] == ""


async def test_refusals(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    sender = await voice_sender(http, bearer)
    ringing = await call(http, bearer, **{"from": sender, "to": _suffix("0404")})
    early = await http.post(
        f"{CALLS}/{ringing}/play_dtmf", json={"dtmf_digits": "1"}, headers=bearer
    )
    assert "ACTIVE" in assert_error(early, 409, "1001")
    for fields, field in (
        ({"from": sender, "to": "not-a-number"}, "to"),
        ({"from": "sid_nope", "to": us_number()}, "from"),
        ({"to": us_number()}, "from"),
        ({"from": sender, "to": us_number(), "answer_timeout": 10}, "answer_timeout"),
    ):
        response = await http.post(CALLS, json=fields, headers=bearer)
        assert field in assert_error(response, 400, "400"), fields
    active = await call(http, bearer, **{"from": sender, "to": us_number()})
    await until(http, bearer, active, "ACTIVE")
    for path, body, field in (
        ("play_dtmf", {"dtmf_digits": "12x"}, "dtmf_digits"),
        ("play_tts", {"text": ""}, "text"),
        ("play_tts", {"text": "hi", "gender": "robot"}, "text"),
        ("play_audio", {"source_type": "FTP", "source": "x"}, "source"),
    ):
        response = await http.post(f"{CALLS}/{active}/{path}", json=body, headers=bearer)
        assert field in assert_error(response, 400, "400"), body
    stranger = {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:8]}')}"}
    assert_error(await http.get(f"{CALLS}/{active}", headers=stranger), 404, "404")
    assert_error(await http.delete(f"{CALLS}/{active}", headers=stranger), 404, "404")
    listed = (await http.get(f"{CALLS}?state=ACTIVE", headers=bearer)).json()
    assert active in [c["id"] for c in listed]
    assert (await http.get(CALLS, headers=stranger)).json() == []
    # Only external_id changes after the call is placed.
    changed = await http.post(f"{CALLS}/{active}", json={"external_id": "crm-7"}, headers=bearer)
    assert changed.status_code == 200 and changed.json() == {"id": active}
    moved = await http.post(f"{CALLS}/{active}", json={"to": us_number()}, headers=bearer)
    assert "to" in assert_error(moved, 400, "400")
    assert (await http.delete(f"{CALLS}/{active}", headers=bearer)).status_code == 200


async def test_subscribers_see_each_transition_at_once(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel, auth: Any
) -> None:
    sender = await voice_sender(http, bearer)
    stub = calling_service_pb2_grpc.CallingServiceStub(channel)
    arrivals: list[tuple[str, float]] = []
    ready = asyncio.Event()
    call_ids: list[str] = []

    async def follow() -> None:
        request = pb.StreamCallEventsRequest(states=["STARTED", "ACTIVE", "COMPLETED"])
        stream = stub.StreamCallEvents(request, metadata=auth)
        await stream.initial_metadata()  # sent once the stream has taken its start cursor
        ready.set()
        async for event in stream:
            if event.envelope.type.startswith("call.") and event.call.id in call_ids:
                happened = event.envelope.occur_time.ToDatetime(UTC)
                lag = (TEST_CLOCK.now() - happened).total_seconds()
                arrivals.append((event.call.state, lag))
                if event.call.state == "COMPLETED":
                    return

    following = asyncio.create_task(follow())
    await ready.wait()
    call_ids.append(await call(http, bearer, **{"from": sender, "to": us_number()}))
    await until(http, bearer, call_ids[0], "ACTIVE")
    await http.delete(f"{CALLS}/{call_ids[0]}", headers=bearer)
    await asyncio.wait_for(following, 10)
    assert [state for state, _ in arrivals] == ["STARTED", "ACTIVE", "COMPLETED"]
    worst = max(lag for _, lag in arrivals)
    print(f"\ncall event lag: {', '.join(f'{s} {lag * 1000:.1f} ms' for s, lag in arrivals)}")
    assert worst < 0.5, arrivals


async def test_live_calls_are_reconciled_after_a_restart(
    tmp_path: Path, fresh_database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=fresh_database_url)
    org = f"org-{uuid.uuid4().hex[:8]}"
    first = build_application(settings)
    await first.start()
    try:
        sender = await first.messaging.senders.create(
            org, "t", {"type_id": "sms-long-code", "class_id": "alerts-na", "address": us_number()}
        )
        answered = await first.calling.calls.create(org, "t", {"from": sender, "to": us_number()})
        ringing = await first.calling.calls.create(
            org, "t", {"from": sender, "to": _suffix("0404"), "answer_timeout": 60000}
        )
        async with asyncio.timeout(10):
            while (await first.calling.calls.get(org, answered))["state"] != "ACTIVE":
                await asyncio.sleep(0.05)
        play = await first.calling.calls.play(
            org, answered, "TTS", {"text": "a long message " * 20}
        )
    finally:
        await first.stop()  # the process goes away with both calls live
    second = build_application(settings)
    await second.start()
    try:
        ended = await second.calling.calls.get(org, answered)
        assert ended["state"] == "COMPLETED" and ended["failure_details"] == "server restart"
        never = await second.calling.calls.get(org, ringing)
        assert never["state"] == "REJECTED" and never["failure_code"] == "CARRIER_ERROR"
        async with second.db.read() as session:
            state = (
                await session.execute(select(plays_table.c.state).where(plays_table.c.id == play))
            ).scalar_one()
        assert state == "INTERRUPTED"
    finally:
        await second.stop()


def _wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * round(seconds * rate))
    return buffer.getvalue()


async def test_attachment_audio_plays_its_own_length(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any, make_token: TokenFactory
) -> None:
    attachment_id = await create_attachment(http, bearer, name="hold.wav", type="audio/wav")
    access_token = await attachment_token(http, bearer, attachment_id)
    uploaded = await upload(http, access_token, _wav(1.5), mime="audio/wav")
    assert uploaded.status_code == 200, uploaded.text
    sender = await voice_sender(http, bearer)
    call_id = await call(http, bearer, **{"from": sender, "to": us_number()})
    await until(http, bearer, call_id, "ACTIVE")
    body = {"source_type": "ATTACHMENT", "source": attachment_id}
    played = await http.post(f"{CALLS}/{call_id}/play_audio", json=body, headers=bearer)
    assert played.status_code == 200, played.text
    async with app.db.read() as session:
        query = select(plays_table.c.duration).where(plays_table.c.id == played.json()["id"])
        assert (await session.execute(query)).scalar_one() == 1.5  # the WAV's real length
    # Another org's attachment (or none) is not a source.
    other = {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:8]}')}"}
    foreign_sender = await voice_sender(http, other)
    foreign_call = await call(http, other, **{"from": foreign_sender, "to": us_number()})
    await until(http, other, foreign_call, "ACTIVE")
    refused = await http.post(f"{CALLS}/{foreign_call}/play_audio", json=body, headers=other)
    assert "source" in assert_error(refused, 400, "400")
    await http.delete(f"{CALLS}/{call_id}", headers=bearer)
    await http.delete(f"{CALLS}/{foreign_call}", headers=other)
