"""gRPC ⇄ domain for the SMS API. No rules here: see service.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from switchboard.server.core.context import current_principal
from switchboard.server.core.events import Heartbeat
from switchboard.server.core.models import EventRecord
from switchboard.server.core.protomap import event_envelope, once_per_event
from switchboard.server.sms.models import Channel
from switchboard.server.sms.service import SmsOutcome, SmsRequest, SmsService, snapshot


class SmsServicer(sms_service_pb2_grpc.SmsServiceServicer):
    def __init__(self, service: SmsService) -> None:
        self._service = service

    async def SendSms(
        self, request: pb.SendSmsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SmsMsgResponse:
        principal = current_principal()
        requests = [
            SmsRequest(m.channel, m.to, m.content, m.client_message_id) for m in request.messages
        ]
        outcomes = await self._service.send(principal.org, requests)
        return _send_response(request, outcomes)

    async def GetSmsMessage(
        self, request: pb.GetSmsMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SmsMessageStatus:
        record = await self._service.get(current_principal().org, request.api_message_id)
        return _status(snapshot(record))

    async def StreamSmsEvents(
        self, request: pb.StreamSmsEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SmsEvent]:
        events = self._service.follow(
            current_principal().org,
            after=request.after,
            api_message_ids=list(request.api_message_ids),
            states=list(request.states),
            types=list(request.types),
            heartbeat_seconds=request.heartbeat_seconds,
            started=context.send_initial_metadata,
        )
        async for item in events:
            yield _event(item)


def _timestamp(value: datetime | str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(value) if isinstance(value, str) else value)
    return stamp


def _status(data: dict[str, Any]) -> pb.SmsMessageStatus:
    status = pb.SmsMessageStatus(
        api_message_id=data["api_message_id"],
        client_message_id=data["client_message_id"],
        channel=data["channel"],
        to=data["to"],
        content=data["content"],
        status=data["status"],
        segments=data["segments"],
        create_time=_timestamp(data["create_time"]),
        update_time=_timestamp(data["update_time"]),
    )
    if data.get("error"):
        status.error = data["error"]
    return status


@once_per_event
def _event(item: EventRecord | Heartbeat) -> pb.SmsEvent:
    envelope = event_envelope(item)
    if isinstance(item, Heartbeat):
        return pb.SmsEvent(envelope=envelope)
    return pb.SmsEvent(envelope=envelope, message=_status(item.payload))


def _send_response(request: pb.SendSmsRequest, outcomes: list[SmsOutcome]) -> pb.SmsMsgResponse:
    response = pb.SmsMsgResponse()
    unrouted: list[pb.ResponseError] = []
    for outcome in outcomes:
        msg = request.messages[outcome.index]
        common: dict[str, Any] = {
            "api_message_id": outcome.api_message_id,
            "accepted": outcome.accepted,
            "to": outcome.to,
            "msg": msg,
        }
        if outcome.error is not None:
            common["error"] = outcome.error
        match outcome.channel:
            case Channel.GRANDCOM:
                group = response.grandcom_msg_response
                group.messages.append(
                    pb.GrandcomResponseMsg(**common, has_error=outcome.error is not None)
                )
            case Channel.CLICKATELL:
                response.clickatell_msg_response.messages.append(
                    pb.ClickatellResponsesMsg(**common)
                )
            case Channel.SMPP:
                response.smpp_msg_response.messages.append(pb.SMPPResponseMsg(**common))
            case None:
                unrouted.append(
                    pb.ResponseError(
                        error_code="InvalidChannel",
                        field_name=f"Messages[{outcome.index}].channel",
                        message=outcome.error or "",
                        meta={
                            "index": str(outcome.index),
                            "clientMessageId": msg.client_message_id,
                            "to": msg.to,
                        },
                    )
                )
    rejected = sum(1 for o in outcomes if not o.accepted)
    if rejected:
        response.error = f"{rejected} of {len(outcomes)} messages were not accepted"
    if unrouted:
        response.response_status.CopyFrom(
            pb.ResponseStatus(
                error_code="InvalidChannel",
                message=f"{len(unrouted)} messages name no known channel",
                errors=unrouted,
            )
        )
    return response
