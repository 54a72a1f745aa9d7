"""The SMS API as its clients use it: messages, the gRPC event stream, the REST send path."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from tests.support.auth import Metadata

Stub = sms_service_pb2_grpc.SmsServiceStub
#: The REST send path (family C).
SEND = "/communication/message/sms"


def sms(
    channel: str = "smpp", to: str = "+27821234567", content: str = "hi", **kw: Any
) -> pb.SmsMessage:
    return pb.SmsMessage(channel=channel, to=to, content=content, **kw)


async def collect_events(
    stub: sms_service_pb2_grpc.SmsServiceStub,
    metadata: Metadata,
    *,
    until: int,
    timeout: float = 10.0,
    **request: Any,
) -> list[pb.SmsEvent]:
    """Read non-heartbeat events until `until` of them arrived (or fail after `timeout`)."""
    events: list[pb.SmsEvent] = []
    call = stub.StreamSmsEvents(pb.StreamSmsEventsRequest(**request), metadata=metadata)
    try:
        async with asyncio.timeout(timeout):
            async for event in call:
                if event.envelope.type != "heartbeat":
                    events.append(event)
                    if len(events) >= until:
                        break
    finally:
        call.cancel()
    return events


async def first_event(
    stub: sms_service_pb2_grpc.SmsServiceStub, metadata: Metadata, **request: Any
) -> pb.SmsEvent:
    """The first thing a replay of the whole log shows; a heartbeat when the org has no events."""
    call = stub.StreamSmsEvents(
        pb.StreamSmsEventsRequest(after="0", heartbeat_seconds=1, **request), metadata=metadata
    )
    try:
        return await asyncio.wait_for(call.read(), 5)
    finally:
        call.cancel()
