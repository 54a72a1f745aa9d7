"""gRPC ⇄ domain for CommunicationsService (family A: `{commit, id, data}` envelopes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format
from switchboard.communications.v1 import (
    communication_pb2,
    communications_service_pb2_grpc,
    phone_number_pb2,
    short_url_pb2,
)
from switchboard.communications.v1 import communications_service_pb2 as pb

from switchboard.server.communications import phone_validation, qr
from switchboard.server.communications.domain import CommunicationsDomain
from switchboard.server.communications.models import DeliveryStatus
from switchboard.server.communications.service import Caller
from switchboard.server.core import context as rpc_context
from switchboard.server.core import protomap, streams
from switchboard.server.core.context import current_principal
from switchboard.server.core.events import Heartbeat
from switchboard.server.core.models import EventRecord
from switchboard.server.core.validation import Checks
from switchboard.server.core.version import server_version

_FOUND = 302


def _body(message: communication_pb2.CommunicationInput) -> dict[str, Any]:
    """The request body as plain data (proto field names; arguments as JSON values)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _caller(org: str) -> Caller:
    principal = current_principal()
    principal.require_org(org)
    return Caller(org, principal.subject, principal.client_id or "")


class CommunicationsServicer(communications_service_pb2_grpc.CommunicationsServiceServicer):
    def __init__(self, domain: CommunicationsDomain) -> None:
        self.domain = domain

    async def SendCommunication(
        self, request: pb.SendCommunicationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommunicationResponse:
        caller = _caller(request.org)
        snapshot, complete = await self.domain.communications.send(caller, _body(request.body))
        rpc_context.set_http_status(202 if complete else 206)
        return pb.CommunicationResponse(
            commit=server_version(),
            id=snapshot["id"],
            data=protomap.to_message(communication_pb2.Communication, snapshot),
        )

    async def PreviewCommunication(
        self, request: pb.PreviewCommunicationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommunicationPreviewResponse:
        caller = _caller(request.org)
        snapshot, complete = await self.domain.communications.preview(caller, _body(request.body))
        rpc_context.set_http_status(200 if complete else 206)
        return pb.CommunicationPreviewResponse(
            commit=server_version(),
            data=protomap.to_message(communication_pb2.CommunicationPreview, snapshot),
        )

    async def SearchCommunications(
        self, request: pb.SearchCommunicationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommunicationListResponse:
        caller = _caller(request.org)
        items = await self.domain.communications.search(
            caller.org_id,
            protomap.given_filters(request),
            limit=request.limit,
            offset=request.offset,
        )
        return pb.CommunicationListResponse(
            commit=server_version(),
            data=[protomap.to_message(communication_pb2.Communication, i) for i in items],
        )

    async def GetCommunication(
        self, request: pb.GetCommunicationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommunicationResponse:
        caller = _caller(request.org)
        snapshot = await self.domain.communications.get(caller.org_id, request.communication_id)
        return pb.CommunicationResponse(
            commit=server_version(),
            id=snapshot["id"],
            data=protomap.to_message(communication_pb2.Communication, snapshot),
        )

    async def ListCommunicationAttachments(
        self, request: pb.ListCommunicationAttachmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommunicationAttachmentResponse:
        caller = _caller(request.org)
        items = await self.domain.communications.attachments(
            caller.org_id, request.communication_id
        )
        return pb.CommunicationAttachmentResponse(
            commit=server_version(),
            id=request.communication_id,
            data=[protomap.to_message(communication_pb2.CommunicationAttachment, i) for i in items],
        )

    async def GetQrCodeImage(
        self, request: pb.GetQrCodeImageRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        payload = self.domain.sealer.open_qr_token(request.qr_token, self.domain.clock.now())
        return httpbody_pb2.HttpBody(content_type="image/png", data=qr.png(payload.text))

    async def ValidateFixedPhoneNumber(
        self, request: pb.ValidateFixedPhoneNumberRequest, context: grpc.aio.ServicerContext
    ) -> pb.PhoneNumberValidationResponse:
        return _validation(phone_validation.LineKind.FIXED, request.body)

    async def ValidateMobilePhoneNumber(
        self, request: pb.ValidateMobilePhoneNumberRequest, context: grpc.aio.ServicerContext
    ) -> pb.PhoneNumberValidationResponse:
        return _validation(phone_validation.LineKind.MOBILE, request.body)

    async def SearchShortUrls(
        self, request: pb.SearchShortUrlsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShortUrlListResponse:
        caller = _caller(request.org)
        items = await self.domain.short_urls.search(
            caller.org_id,
            protomap.given_filters(request),
            limit=request.limit,
            offset=request.offset,
        )
        return pb.ShortUrlListResponse(
            commit=server_version(),
            data=[protomap.to_message(short_url_pb2.ShortUrl, i) for i in items],
        )

    async def CreateShortUrl(
        self, request: pb.CreateShortUrlRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShortUrlResponse:
        caller = _caller(request.org)
        body = request.body
        snapshot = await self.domain.short_urls.create(
            caller.org_id, caller.application_id, body.long_url, body.custom_suffix, body.length
        )
        rpc_context.set_http_status(201)
        return pb.ShortUrlResponse(
            commit=server_version(),
            id=snapshot["id"],
            data=protomap.to_message(short_url_pb2.ShortUrl, snapshot),
        )

    async def StreamCommunicationEvents(
        self, request: pb.StreamCommunicationEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CommunicationEvent]:
        caller = _caller(request.org)
        checks = Checks()
        # The one stream contract's filters: ids, type patterns (`communication.*`) and states.
        # Family A: field names in camelCase.
        types, prefixes = streams.type_patterns(request.types, _EVENT_PREFIXES, checks)
        ids = streams.id_list(request.communication_ids, checks, "communicationIds")
        states = streams.states(request.states, DeliveryStatus, checks)
        heartbeat = streams.heartbeat(request.heartbeat_seconds, checks, "heartbeatSeconds")
        checks.raise_if_failed()
        feed = self.domain.feed
        async for item in feed.follow(
            org_id=caller.org_id,
            after=await feed.start_cursor(request.after),
            types=types,
            type_prefixes=prefixes,
            resource_ids=ids,
            heartbeat_seconds=heartbeat,
            started=context.send_initial_metadata,
        ):
            # States are a delivery's `status`: short-link clicks pass.
            if (
                states
                and isinstance(item, EventRecord)
                and item.type.startswith("communication.")
                and item.payload.get("status") not in states
            ):
                continue
            yield _communication_event(item)

    async def FollowShortUrl(
        self, request: pb.FollowShortUrlRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        target = await self.domain.short_urls.follow(request.code)
        rpc_context.set_http_status(_FOUND)
        rpc_context.set_response_header("location", target)
        return httpbody_pb2.HttpBody(content_type="text/plain; charset=utf-8", data=b"")


_EVENT_PREFIXES = ("communication.", "short_url.")


@protomap.once_per_event
def _communication_event(item: EventRecord | Heartbeat) -> pb.CommunicationEvent:
    event = pb.CommunicationEvent(envelope=protomap.event_envelope(item))
    if isinstance(item, Heartbeat):
        return event
    if item.type.startswith("short_url."):
        event.click.CopyFrom(protomap.to_message(pb.ShortUrlClick, item.payload))
    else:
        event.delivery.CopyFrom(protomap.to_message(pb.CommunicationDelivery, item.payload))
    return event


def _validation(
    kind: phone_validation.LineKind, body: phone_number_pb2.PhoneNumberInput
) -> pb.PhoneNumberValidationResponse:
    verdict = phone_validation.validate(kind, body.phone_number, body.country_code)
    return pb.PhoneNumberValidationResponse(
        commit=server_version(),
        id=verdict.e164 or verdict.phone_number,
        data=protomap.to_message(phone_number_pb2.PhoneNumberValidation, verdict.snapshot()),
    )
