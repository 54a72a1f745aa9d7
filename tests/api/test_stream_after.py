"""`after` on each event stream does what its proto comment says: on calling and contacts "0 or
empty starts at the org's first event"; on SMS and communications empty means "from now on" and
"0" replays; a cursor resumes after itself (exclusive)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
from switchboard.calling.v1 import calling_service_pb2, calling_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from switchboard.sms.v1 import sms_message_pb2, sms_service_pb2_grpc

from tests.support.auth import Metadata
from tests.support.calling import call, until, voice_sender
from tests.support.contacts import create
from tests.support.messaging import us_number
from tests.support.sms import collect_events, sms


async def _read(open_stream: Callable[[], Any], count: int) -> list[Any]:
    """Up to `count` events a stream sends before its second heartbeat (1 s apart)."""
    stream: AsyncIterator[Any] = open_stream()
    seen: list[Any] = []
    beats = 0
    try:
        async with asyncio.timeout(10):
            async for event in stream:
                if event.envelope.type == "heartbeat":
                    beats += 1
                    if beats == 2:
                        break
                    continue
                seen.append(event)
                if len(seen) == count:
                    break
    finally:
        stream.cancel()  # type: ignore[attr-defined]
    return seen


async def test_calling_empty_after_replays_from_the_first_event(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel, auth: Metadata
) -> None:
    sender = await voice_sender(http, bearer)
    call_id = await call(http, bearer, **{"from": sender, "to": us_number()})
    await until(http, bearer, call_id, "ACTIVE")
    stub = calling_service_pb2_grpc.CallingServiceStub(channel)

    def stream(after: str) -> Callable[[], Any]:
        request = calling_service_pb2.StreamCallEventsRequest(
            after=after, call_ids=[call_id], heartbeat_seconds=1
        )
        return lambda: stub.StreamCallEvents(request, metadata=auth)

    replayed = await _read(stream("0"), 2)
    assert [e.envelope.type for e in replayed] == ["call.started", "call.active"]
    empty = await _read(stream(""), 2)
    assert [e.envelope.cursor for e in empty] == [e.envelope.cursor for e in replayed]
    resumed = await _read(stream(replayed[0].envelope.cursor), 1)
    assert [e.envelope.cursor for e in resumed] == [replayed[1].envelope.cursor]
    assert await _read(stream(replayed[1].envelope.cursor), 1) == []


async def test_contacts_empty_after_replays_from_the_first_event(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel, auth: Metadata
) -> None:
    contact_id = await create(http, bearer, first_name="After")
    await http.post(f"/contacts/{contact_id}", json={"first_name": "After2"}, headers=bearer)
    stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)

    def stream(after: str) -> Callable[[], Any]:
        request = contacts_service_pb2.StreamContactsEventsRequest(
            after=after, types=["contact.created", "contact.updated"], heartbeat_seconds=1
        )
        return lambda: stub.StreamContactsEvents(request, metadata=auth)

    replayed = await _read(stream("0"), 2)
    assert [e.envelope.type for e in replayed] == ["contact.created", "contact.updated"]
    assert all(e.envelope.resource_id == contact_id for e in replayed)
    empty = await _read(stream(""), 2)
    assert [e.envelope.cursor for e in empty] == [e.envelope.cursor for e in replayed]
    resumed = await _read(stream(replayed[0].envelope.cursor), 1)
    assert [e.envelope.cursor for e in resumed] == [replayed[1].envelope.cursor]


async def test_sms_empty_after_starts_from_now(channel: grpc.aio.Channel, auth: Metadata) -> None:
    stub = sms_service_pb2_grpc.SmsServiceStub(channel)
    response = await stub.SendSms(sms_message_pb2.SendSmsRequest(messages=[sms()]), metadata=auth)
    api_id = response.smpp_msg_response.messages[0].api_message_id
    (accepted,) = await collect_events(
        stub, auth, until=1, after="0", api_message_ids=[api_id], heartbeat_seconds=1
    )

    def stream(after: str) -> Callable[[], Any]:
        request = sms_message_pb2.StreamSmsEventsRequest(
            after=after, api_message_ids=[api_id], heartbeat_seconds=1
        )
        return lambda: stub.StreamSmsEvents(request, metadata=auth)

    everything = await _read(stream("0"), 10)
    assert everything[0].envelope.cursor == accepted.envelope.cursor
    # Nothing already logged comes back (a later delivery report may still arrive).
    last = int(everything[-1].envelope.cursor)
    assert all(int(e.envelope.cursor) > last for e in await _read(stream(""), 10))
    if len(everything) > 1:
        resumed = await _read(stream(everything[0].envelope.cursor), 1)
        assert [e.envelope.cursor for e in resumed] == [everything[1].envelope.cursor]
