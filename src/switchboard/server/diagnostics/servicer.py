"""Ping (authenticates the caller and does nothing else: the benchmarks' ceiling) and the dev
outbox of sandbox routes."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from switchboard.common.v1 import diagnostics_service_pb2 as pb
from switchboard.common.v1 import diagnostics_service_pb2_grpc

from switchboard.server.core.context import current_principal
from switchboard.server.core.errors import NotFound
from switchboard.server.core.validation import Checks
from switchboard.server.delivery.outbox import Outbox
from switchboard.server.messaging.requests.inbound import InboundService


class DiagnosticsServicer(diagnostics_service_pb2_grpc.DiagnosticsServiceServicer):
    def __init__(self, outbox: Outbox, inbound: InboundService | None = None) -> None:
        self._outbox = outbox
        self._inbound = inbound

    async def InjectInboundMessage(
        self, request: pb.InjectInboundMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.InjectInboundMessageResponse:
        if self._inbound is None:
            raise NotFound("inbound messages are not handled by this server")
        message_id = await self._inbound.inject(
            current_principal().org, getattr(request, "from"), request.to, request.text
        )
        return pb.InjectInboundMessageResponse(id=message_id)

    async def ListOutbox(
        self, request: pb.ListOutboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOutboxResponse:
        checks = Checks()
        limit = request.limit or 100
        if not 1 <= limit <= 1000:
            checks.fail("limit", "must be between 1 and 1000", "Range")
        if request.channel and request.channel not in ("sms", "email", "whatsapp"):
            checks.fail("channel", "must be sms, email or whatsapp")
        checks.raise_if_failed()
        entries = self._outbox.recent(current_principal().org, channel=request.channel, limit=limit)
        response = pb.ListOutboxResponse()
        for entry in entries:
            item = response.entries.add(
                message_id=entry.message_id,
                kind=entry.kind,
                channel=entry.channel,
                route=entry.route,
                to=entry.to,
                sender=entry.sender,
                subject=entry.subject,
                content=entry.content,
            )
            item.handed_time.FromDatetime(entry.handed_at)
        return response

    async def Ping(
        self, request: pb.PingRequest, context: grpc.aio.ServicerContext
    ) -> pb.PingResponse:
        now = Timestamp()
        now.GetCurrentTime()
        return pb.PingResponse(org=current_principal().org, server_time=now)
