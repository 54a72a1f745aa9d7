"""Small helpers the tests share: reading rich gRPC errors and following event streams."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

Metadata = Sequence[tuple[str, str]]
Stub = sms_service_pb2_grpc.SmsServiceStub


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    """(ErrorInfo.reason, ErrorInfo.metadata, [(field, reason)] of BadRequest) of a failed RPC."""
    status = rpc_status.from_call(error)
    assert status is not None, "error carries no google.rpc.Status details"
    reason, metadata, fields = "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [(v.field, v.reason) for v in bad.field_violations]
    return reason, metadata, fields


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
