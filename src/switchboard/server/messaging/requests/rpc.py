"""MessagingService RPCs of message requests and messages. Proto ⇄ plain data only; the rules
live in message_requests.py, messages.py and fanout.py."""

from __future__ import annotations

from functools import partial
from typing import Any

from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.messaging.v1 import message_pb2, message_request_pb2
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from switchboard.server.core.context import current_principal
from switchboard.server.core.protomap import (
    body_version,
    given_filters,
    list_response,
    page_of,
    page_response,
    to_message,
    written_fields,
)
from switchboard.server.core.types import Context
from switchboard.server.core.validation import Checks
from switchboard.server.messaging.content import attachments
from switchboard.server.messaging.domain import MessagingDomain
from switchboard.server.messaging.requests import messages


def _input(message: Any) -> dict[str, Any]:
    values = written_fields(message)
    values.pop("recipient_count_typo", None)
    if "template_values" in values:
        values["template_values"] = dict(values["template_values"])
    return {
        k: list(v) if not isinstance(v, str | int | float | bool | dict) else v
        for k, v in values.items()
    }


def _message(data: dict[str, Any]) -> message_pb2.Message:
    return to_message(message_pb2.Message, data)


class MessageRpcs:
    domain: MessagingDomain

    # -- message requests ------------------------------------------------------------------------

    async def ListMessageRequests(
        self, request: pb.ListMessageRequestsRequest, context: Context
    ) -> pb.ListMessageRequestsResponse:
        return await list_response(
            request,
            pb.ListMessageRequestsResponse,
            "message_requests",
            partial(self.domain.message_requests.list_page, current_principal().org),
        )

    async def SubmitMessageRequest(
        self, request: pb.SubmitMessageRequestRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        request_id = await self.domain.message_requests.create(
            principal.org, principal.subject, _input(request.body)
        )
        return resource_pb2.ResourceId(id=request_id)

    async def ReadMessageRequest(
        self, request: pb.ReadMessageRequestRequest, context: Context
    ) -> message_request_pb2.MessageRequest:
        data = await self.domain.message_requests.get(
            current_principal().org, request.message_request_id
        )
        return to_message(message_request_pb2.MessageRequest, data)

    async def SetMessageRequestState(
        self, request: pb.SetMessageRequestStateRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.message_requests.set_state(
            current_principal().org,
            request.message_request_id,
            _input(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.message_request_id)

    async def DiscardMessageRequest(
        self, request: pb.DiscardMessageRequestRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.message_requests.delete(
            current_principal().org, request.message_request_id
        )
        return empty_pb2.Empty()

    async def ListMessageRequestMessages(
        self, request: pb.ListMessageRequestMessagesRequest, context: Context
    ) -> pb.ListMessageRequestMessagesResponse:
        org = current_principal().org
        checks = Checks()
        page = page_of(request, checks)
        given = given_filters(request)
        if "message_request_id_filter" in given:
            given["message_request_id"] = given.pop("message_request_id_filter")
        await self.domain.message_requests.require(org, request.message_request_id)
        items, token = await self.domain.messages.list_page(
            org, given, page, checks, request_id=request.message_request_id
        )
        return page_response(pb.ListMessageRequestMessagesResponse, "messages", items, token)

    async def CreateMessageRequestMessage(
        self, request: pb.CreateMessageRequestMessageRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.message_requests.require(
            current_principal().org, request.message_request_id
        )
        raise messages.not_allowed(messages.NOT_ALLOWED)

    # -- messages --------------------------------------------------------------------------------

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        return await list_response(
            request,
            pb.ListMessagesResponse,
            "messages",
            partial(self.domain.messages.list_page, current_principal().org),
        )

    async def CreateMessage(
        self, request: pb.CreateMessageRequest, context: Context
    ) -> resource_pb2.ResourceId:
        raise messages.not_allowed(messages.NOT_ALLOWED)

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: Context
    ) -> message_pb2.Message:
        return _message(await self.domain.messages.get(current_principal().org, request.message_id))

    async def UpdateMessage(
        self, request: pb.UpdateMessageRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.messages.change_state(
            current_principal().org,
            request.message_id,
            _input(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.message_id)

    async def DeleteMessage(
        self, request: pb.DeleteMessageRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.messages.delete(current_principal().org, request.message_id)
        return empty_pb2.Empty()

    async def ListMessageAttachments(
        self, request: pb.ListMessageAttachmentsRequest, context: Context
    ) -> pb.ListMessageAttachmentsResponse:
        org = current_principal().org
        checks = Checks()
        page = page_of(request, checks)
        given = given_filters(request)
        ids = await self.domain.messages.attachment_ids(org, request.message_id)
        items: list[dict[str, Any]] = []
        token = ""
        if ids:
            items, token = await self.domain.attachments.rows.list_page(
                org,
                given,
                page,
                checks,
                columns={"type": "content_type", "size": "size_bytes"},
                integers=frozenset({"size"}),
                extra=(attachments.attachments_table.c.id.in_(ids),),
            )
        else:
            checks.raise_if_failed()
        return page_response(pb.ListMessageAttachmentsResponse, "attachments", items, token)

    async def CreateMessageAttachment(
        self, request: pb.CreateMessageAttachmentRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.messages.get(current_principal().org, request.message_id)
        raise messages.not_allowed(messages.NOT_ALLOWED_ATTACHMENTS)
