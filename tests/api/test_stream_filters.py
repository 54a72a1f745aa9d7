"""The one stream contract's filters on every stream (README "Streams: one contract"): event-type
patterns (`types`) and `states` over gRPC and, with query parameters, over SSE through Envoy;
an unknown pattern or state is INVALID_ARGUMENT / 400 naming the field.

Each test makes its events first, then replays them (`after=0`) with filters, reading until the
first heartbeat (1 s without events: everything logged was sent). Nothing here depends on the
time of day or the time zone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from switchboard.calling.v1 import calling_service_pb2, calling_service_pb2_grpc
from switchboard.communications.v1 import communications_service_pb2 as comm_pb
from switchboard.communications.v1 import communications_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from switchboard.sms.v1 import sms_message_pb2, sms_service_pb2_grpc

from tests.support.auth import Metadata, TokenFactory
from tests.support.calling import call, until, voice_sender
from tests.support.communications import admin, envelope, seed_type, send_body, wait_status
from tests.support.contacts import create
from tests.support.errors import error_details
from tests.support.messaging import us_number
from tests.support.sms import collect_events, sms

pytestmark = pytest.mark.envoy


# -- helpers -----------------------------------------------------------------------------------


async def replay(open_stream: Callable[[], Any]) -> list[str]:
    """The event types a stream sends before its first heartbeat."""
    stream = open_stream()
    await stream.initial_metadata()  # subscribed
    types: list[str] = []
    try:
        async with asyncio.timeout(10):
            async for event in stream:
                if event.envelope.type == "heartbeat":
                    break
                types.append(event.envelope.type)
    finally:
        stream.cancel()
    return types


async def sse_types(
    http: httpx.AsyncClient, path: str, params: dict[str, Any], headers: dict[str, str]
) -> list[str]:
    """The event types an SSE stream sends before its first heartbeat."""
    types: list[str] = []
    async with (
        asyncio.timeout(10),
        http.stream("GET", path, params=params, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                kind = json.loads(line[5:])["envelope"]["type"]
                if kind == "heartbeat":
                    break
                types.append(kind)
    return types


async def refused(open_stream: Callable[[], Any]) -> list[tuple[str, str]]:
    """The field violations of a stream refused with INVALID_ARGUMENT."""
    stream = open_stream()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return error_details(caught.value)[2]


# -- SMS (family C: camelCase query parameters) ------------------------------------------------


async def test_sms_stream_filters_by_type_pattern_and_state(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel, auth: Metadata
) -> None:
    stub = sms_service_pb2_grpc.SmsServiceStub(channel)
    sent = await stub.SendSms(sms_message_pb2.SendSmsRequest(messages=[sms()]), metadata=auth)
    api_id = sent.smpp_msg_response.messages[0].api_message_id
    await collect_events(
        stub, auth, until=1, after="0", api_message_ids=[api_id], states=["DELIVERED"]
    )

    def stream(**filters: Any) -> Callable[[], Any]:
        request = sms_message_pb2.StreamSmsEventsRequest(
            after="0", api_message_ids=[api_id], heartbeat_seconds=1, **filters
        )
        return lambda: stub.StreamSmsEvents(request, metadata=auth)

    everything = await replay(stream())
    assert everything[0] == "sms.accepted" and everything[-1] == "sms.delivered"
    assert await replay(stream(types=["sms.*"])) == everything
    assert await replay(stream(types=["*"])) == everything
    assert await replay(stream(types=["sms.accepted"])) == ["sms.accepted"]
    # Both filters: an event passes when it matches both.
    assert await replay(stream(types=["sms.*"], states=["delivered"])) == ["sms.delivered"]
    assert await replay(stream(types=["sms.accepted"], states=["DELIVERED"])) == []

    params = {"after": "0", "apiMessageIds": api_id, "heartbeatSeconds": "1"}
    path = "/communication/message/sms/events"
    assert await sse_types(http, path, {**params, "types": "sms.accepted"}, bearer) == [
        "sms.accepted"
    ]
    assert await sse_types(http, path, {**params, "states": "DELIVERED"}, bearer) == [
        "sms.delivered"
    ]

    assert await refused(stream(types=["sms.delivered", "call.*"])) == [("types[1]", "Invalid")]
    response = await http.get(path, params={"types": "sms.*x"}, headers=bearer)
    assert response.status_code == 400, response.text
    assert "types[0]" in response.text


# -- calling (family B: snake_case) ------------------------------------------------------------


async def test_call_stream_filters_by_type_pattern_and_state(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel, auth: Metadata
) -> None:
    sender = await voice_sender(http, bearer)
    call_id = await call(http, bearer, **{"from": sender, "to": us_number()})
    await until(http, bearer, call_id, "ACTIVE")
    stub = calling_service_pb2_grpc.CallingServiceStub(channel)

    def stream(**filters: Any) -> Callable[[], Any]:
        request = calling_service_pb2.StreamCallEventsRequest(
            call_ids=[call_id], heartbeat_seconds=1, **filters
        )
        return lambda: stub.StreamCallEvents(request, metadata=auth)

    assert await replay(stream()) == ["call.started", "call.active"]
    assert await replay(stream(types=["call.*"])) == ["call.started", "call.active"]
    assert await replay(stream(types=["call.active"])) == ["call.active"]
    assert await replay(stream(types=["play.*"])) == []
    assert await replay(stream(types=["*"], states=["STARTED"])) == ["call.started"]

    params = {"call_ids": call_id, "heartbeat_seconds": "1"}
    assert await sse_types(
        http, "/calling/events", {**params, "types": "call.started"}, bearer
    ) == ["call.started"]
    assert await sse_types(http, "/calling/events", {**params, "states": "ACTIVE"}, bearer) == [
        "call.active"
    ]

    assert await refused(stream(types=["message.*"])) == [("types[0]", "Invalid")]
    assert await refused(stream(states=["RINGING"])) == [("states[0]", "Enum")]
    response = await http.get("/calling/events", params={"types": "call"}, headers=bearer)
    assert response.status_code == 400, response.text
    assert "types[0]" in response.text


# -- contacts (family B): states are an import or export job's -----------------------------------


async def test_contacts_stream_filters_job_events_by_state(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel, auth: Metadata
) -> None:
    contact_id = await create(http, bearer, first_name="Filtered")
    export = await http.post("/contactexport", json={}, headers=bearer)
    assert export.status_code == 200, export.text
    export_id = export.json()["id"]
    async with asyncio.timeout(20):
        while (await http.get(f"/contactexport/{export_id}", headers=bearer)).json()[
            "state"
        ] not in ("COMPLETED", "FAILED"):
            await asyncio.sleep(0.05)
    stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)

    def stream(**filters: Any) -> Callable[[], Any]:
        request = contacts_service_pb2.StreamContactsEventsRequest(
            resource_ids=[contact_id, export_id], heartbeat_seconds=1, **filters
        )
        return lambda: stub.StreamContactsEvents(request, metadata=auth)

    everything = await replay(stream())
    assert everything[0] == "contact.created"
    assert everything[1] == "contact_export_job.created"
    assert everything[-1] == "contact_export_job.completed"
    jobs = await replay(stream(types=["contact_export_job.*"]))
    assert jobs == everything[1:]
    assert await replay(stream(types=["contact_export_job.*"], states=["COMPLETED"])) == [
        "contact_export_job.completed"
    ]
    # A contact has no state: its events pass a states filter unless `types` excludes them.
    assert await replay(stream(states=["created"])) == [
        "contact.created",
        "contact_export_job.created",
    ]

    params = {"resource_ids": [contact_id, export_id], "heartbeat_seconds": "1"}
    got = await sse_types(
        http,
        "/contacts/events",
        {**params, "types": "contact_export_job.*", "states": "CREATED"},
        bearer,
    )
    assert got == ["contact_export_job.created"]

    assert await refused(stream(states=["DONE"])) == [("states[0]", "Enum")]
    response = await http.get("/contacts/events", params={"states": "DONE"}, headers=bearer)
    assert response.status_code == 400, response.text
    assert "states[0]" in response.text


# -- communications (family A: camelCase) --------------------------------------------------------


async def test_communications_stream_filters_by_type_pattern_and_state(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    channel: grpc.aio.Channel,
    auth: Metadata,
) -> None:
    code = await seed_type(http, admin(make_token, org), bearer, org, channels=("sms",))
    body = send_body(code, channels=["sms"])
    del body["emailInput"]
    sent = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    communication_id = sent["id"]
    await wait_status(http, bearer, org, communication_id, "sms", "DELIVERED")
    stub = communications_service_pb2_grpc.CommunicationsServiceStub(channel)

    def stream(**filters: Any) -> Callable[[], Any]:
        request = comm_pb.StreamCommunicationEventsRequest(
            org=org,
            after="0",
            communication_ids=[communication_id],
            heartbeat_seconds=1,
            **filters,
        )
        return lambda: stub.StreamCommunicationEvents(request, metadata=auth)

    everything = ["communication.accepted", "communication.sent", "communication.delivered"]
    assert await replay(stream()) == everything
    assert await replay(stream(types=["communication.*"])) == everything
    assert await replay(stream(states=["SENT"])) == ["communication.sent"]
    assert await replay(stream(types=["communication.*"], states=["sent", "DELIVERED"])) == [
        "communication.sent",
        "communication.delivered",
    ]
    assert await replay(stream(types=["short_url.*"], states=["SENT"])) == []

    path = f"/v2/orgs/{org}/communications/events"
    params = {"after": "0", "communicationIds": communication_id, "heartbeatSeconds": "1"}
    assert await sse_types(http, path, {**params, "states": "DELIVERED"}, bearer) == [
        "communication.delivered"
    ]
    assert await sse_types(http, path, {**params, "types": "communication.accepted"}, bearer) == [
        "communication.accepted"
    ]

    assert await refused(stream(states=["READ"])) == [("states[0]", "Enum")]
    response = await http.get(path, params={"types": "contact.*"}, headers=bearer)
    assert response.status_code == 400, response.text
    assert "types[0]" in response.text
