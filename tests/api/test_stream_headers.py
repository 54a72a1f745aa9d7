"""Every event stream sends its response headers at once, through Envoy: a subscriber knows it is
subscribed before the first event or heartbeat (here: none for 300 s)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest
from switchboard.calling.v1 import calling_service_pb2, calling_service_pb2_grpc
from switchboard.communications.v1 import (
    communications_service_pb2,
    communications_service_pb2_grpc,
)
from switchboard.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from switchboard.sms.v1 import sms_message_pb2, sms_service_pb2_grpc

from switchboard.server.edge.envoy import EnvoyProcess

#: Headers must come well before this; the stream's first heartbeat is 300 s away.
AT_ONCE = 1.0
STREAMS = ["sms", "communications", "contacts", "calling"]


def start_grpc(
    channel: grpc.aio.Channel, stream: str, org: str, metadata: list[tuple[str, str]]
) -> Any:
    if stream == "sms":
        return sms_service_pb2_grpc.SmsServiceStub(channel).StreamSmsEvents(
            sms_message_pb2.StreamSmsEventsRequest(heartbeat_seconds=300), metadata=metadata
        )
    if stream == "communications":
        stub = communications_service_pb2_grpc.CommunicationsServiceStub(channel)
        return stub.StreamCommunicationEvents(
            communications_service_pb2.StreamCommunicationEventsRequest(
                org=org, heartbeat_seconds=300
            ),
            metadata=metadata,
        )
    if stream == "contacts":
        return contacts_service_pb2_grpc.ContactsServiceStub(channel).StreamContactsEvents(
            contacts_service_pb2.StreamContactsEventsRequest(heartbeat_seconds=300),
            metadata=metadata,
        )
    return calling_service_pb2_grpc.CallingServiceStub(channel).StreamCallEvents(
        calling_service_pb2.StreamCallEventsRequest(heartbeat_seconds=300), metadata=metadata
    )


SSE_PATHS = {
    "sms": "/communication/message/sms/events?heartbeatSeconds=300",
    "communications": "/v2/orgs/{org}/communications/events?heartbeatSeconds=300",
    "contacts": "/contacts/events?heartbeat_seconds=300",
    "calling": "/calling/events?heartbeat_seconds=300",
}


@pytest.mark.parametrize("stream", STREAMS)
async def test_grpc_stream_sends_headers_at_once(
    envoy: EnvoyProcess, org: str, auth: list[tuple[str, str]], stream: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{envoy.settings.listen_port}") as channel:
        await channel.channel_ready()
        call = start_grpc(channel, stream, org, auth)
        try:
            async with asyncio.timeout(AT_ONCE):
                await call.initial_metadata()
            assert not call.done()
        finally:
            call.cancel()


@pytest.mark.parametrize("stream", STREAMS)
async def test_sse_stream_sends_headers_at_once(
    http: httpx.AsyncClient, org: str, bearer: dict[str, str], stream: str
) -> None:
    await http.get("/openapi.json")  # the connection is open: only the stream is timed
    path = SSE_PATHS[stream].format(org=org)
    async with asyncio.timeout(AT_ONCE):
        async with http.stream("GET", path, headers=bearer) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")


async def test_refused_stream_keeps_its_status(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    # Validation comes before the headers: a refused stream is still a 400, not a 200.
    response = await http.get("/contacts/events?heartbeat_seconds=1000", headers=bearer)
    assert response.status_code == 400
    assert response.json()["error_code"]
