"""MessagingService RPCs of event handlers (signed webhooks). Proto ⇄ plain data only; the rules
live in event_handlers.service."""

from __future__ import annotations

from functools import partial

from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.messaging.v1 import event_handler_pb2
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from switchboard.server.core.context import current_principal
from switchboard.server.core.protomap import (
    body_version,
    list_response,
    present,
    to_message,
    written_fields,
)
from switchboard.server.core.types import Context
from switchboard.server.messaging.domain import MessagingDomain


class EventHandlerRpcs:
    domain: MessagingDomain

    async def ListEventHandlers(
        self, request: pb.ListEventHandlersRequest, context: Context
    ) -> pb.ListEventHandlersResponse:
        return await list_response(
            request,
            pb.ListEventHandlersResponse,
            "event_handlers",
            partial(self.domain.event_handlers.list_handlers, current_principal().org),
        )

    async def CreateEventHandler(
        self, request: pb.CreateEventHandlerRequest, context: Context
    ) -> event_handler_pb2.EventHandlerSecret:
        handler_id, secret = await self.domain.event_handlers.create(
            current_principal().org, written_fields(request.body)
        )
        return event_handler_pb2.EventHandlerSecret(id=handler_id, secret=secret)

    async def GetEventHandler(
        self, request: pb.GetEventHandlerRequest, context: Context
    ) -> event_handler_pb2.EventHandler:
        data = await self.domain.event_handlers.rows.get(
            current_principal().org, request.event_handler_id
        )
        return to_message(event_handler_pb2.EventHandler, data)

    async def UpdateEventHandler(
        self, request: pb.UpdateEventHandlerRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.event_handlers.update(
            current_principal().org,
            request.event_handler_id,
            written_fields(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.event_handler_id)

    async def DeleteEventHandler(
        self, request: pb.DeleteEventHandlerRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.event_handlers.delete(current_principal().org, request.event_handler_id)
        return empty_pb2.Empty()

    async def RotateEventHandlerSecret(
        self, request: pb.RotateEventHandlerSecretRequest, context: Context
    ) -> event_handler_pb2.EventHandlerSecret:
        grace = request.body.grace_seconds if request.body.HasField("grace_seconds") else None
        secret = await self.domain.event_handlers.rotate(
            current_principal().org, request.event_handler_id, grace
        )
        return event_handler_pb2.EventHandlerSecret(id=request.event_handler_id, secret=secret)

    async def ListEventDeliveries(
        self, request: pb.ListEventDeliveriesRequest, context: Context
    ) -> pb.ListEventDeliveriesResponse:
        return await list_response(
            request,
            pb.ListEventDeliveriesResponse,
            "deliveries",
            partial(
                self.domain.event_handlers.list_deliveries,
                current_principal().org,
                request.event_handler_id,
            ),
        )

    async def ListDeliveryAttempts(
        self, request: pb.ListDeliveryAttemptsRequest, context: Context
    ) -> pb.ListDeliveryAttemptsResponse:
        return await list_response(
            request,
            pb.ListDeliveryAttemptsResponse,
            "attempts",
            partial(
                self.domain.event_handlers.list_attempts,
                current_principal().org,
                request.event_handler_id,
            ),
        )

    async def CreateEventReplay(
        self, request: pb.CreateEventReplayRequest, context: Context
    ) -> resource_pb2.ResourceId:
        replay_id = await self.domain.event_handlers.create_replay(
            current_principal().org, request.event_handler_id, present(request.body)
        )
        return resource_pb2.ResourceId(id=replay_id)

    async def GetEventReplay(
        self, request: pb.GetEventReplayRequest, context: Context
    ) -> event_handler_pb2.EventReplay:
        data = await self.domain.event_handlers.get_replay(
            current_principal().org, request.event_handler_id, request.replay_id
        )
        return to_message(event_handler_pb2.EventReplay, data)
