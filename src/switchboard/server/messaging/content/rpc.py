"""MessagingService RPCs of the content area: message templates, keywords, attachments and
their content. Proto ⇄ plain data only; the rules live in the services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.messaging.v1 import attachment_pb2, keyword_pb2, message_template_pb2
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from switchboard.server.core.context import current_principal
from switchboard.server.core.errors import InvalidArgument
from switchboard.server.core.protomap import (
    body_version,
    list_response,
    to_message,
    written_fields,
)
from switchboard.server.core.types import Context
from switchboard.server.messaging.domain import MessagingDomain


class ContentRpcs:
    domain: MessagingDomain

    # -- message templates -----------------------------------------------------------------------

    async def ListMessageTemplates(
        self, request: pb.ListMessageTemplatesRequest, context: Context
    ) -> pb.ListMessageTemplatesResponse:
        return await list_response(
            request,
            pb.ListMessageTemplatesResponse,
            "message_templates",
            partial(self.domain.message_templates.rows.list_page, current_principal().org),
        )

    async def CreateMessageTemplate(
        self, request: pb.CreateMessageTemplateRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        template_id = await self.domain.message_templates.create(
            principal.org, principal.subject, written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=template_id)

    async def GetMessageTemplate(
        self, request: pb.GetMessageTemplateRequest, context: Context
    ) -> message_template_pb2.MessageTemplate:
        data = await self.domain.message_templates.rows.get(
            current_principal().org, request.template_id
        )
        return to_message(message_template_pb2.MessageTemplate, data)

    async def UpdateMessageTemplate(
        self, request: pb.UpdateMessageTemplateRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.message_templates.update(
            current_principal().org,
            request.template_id,
            written_fields(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.template_id)

    async def ReplaceMessageTemplate(
        self, request: pb.ReplaceMessageTemplateRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.message_templates.update(
            current_principal().org,
            request.template_id,
            written_fields(request.body),
            body_version(request.body, context),
            replace=True,
        )
        return empty_pb2.Empty()

    async def DeleteMessageTemplate(
        self, request: pb.DeleteMessageTemplateRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.message_templates.delete(current_principal().org, request.template_id)
        return empty_pb2.Empty()

    # -- keywords --------------------------------------------------------------------------------

    async def ListKeywords(
        self, request: pb.ListKeywordsRequest, context: Context
    ) -> pb.ListKeywordsResponse:
        return await list_response(
            request,
            pb.ListKeywordsResponse,
            "keywords",
            partial(self.domain.keywords.list_page, current_principal().org),
        )

    async def CreateKeyword(
        self, request: pb.CreateKeywordRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        keyword_id = await self.domain.keywords.create(
            principal.org, principal.subject, written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=keyword_id)

    async def GetKeyword(
        self, request: pb.GetKeywordRequest, context: Context
    ) -> keyword_pb2.Keyword:
        data = await self.domain.keywords.get(current_principal().org, request.keyword_id)
        return to_message(keyword_pb2.Keyword, data)

    async def UpdateKeyword(
        self, request: pb.UpdateKeywordRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.keywords.update(
            current_principal().org,
            request.keyword_id,
            written_fields(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.keyword_id)

    async def ReplaceKeyword(
        self, request: pb.ReplaceKeywordRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.keywords.update(
            current_principal().org,
            request.keyword_id,
            written_fields(request.body),
            body_version(request.body, context),
            replace=True,
        )
        return empty_pb2.Empty()

    async def DeleteKeyword(
        self, request: pb.DeleteKeywordRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.keywords.delete(current_principal().org, request.keyword_id)
        return empty_pb2.Empty()

    # -- attachments -----------------------------------------------------------------------------

    async def ListAttachments(
        self, request: pb.ListAttachmentsRequest, context: Context
    ) -> pb.ListAttachmentsResponse:
        return await list_response(
            request,
            pb.ListAttachmentsResponse,
            "attachments",
            partial(self.domain.attachments.list_page, current_principal().org),
        )

    async def CreateAttachment(
        self, request: pb.CreateAttachmentRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        attachment_id = await self.domain.attachments.create(
            principal.org, principal.subject, written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=attachment_id)

    async def GetAttachment(
        self, request: pb.GetAttachmentRequest, context: Context
    ) -> attachment_pb2.Attachment:
        data = await self.domain.attachments.get(current_principal().org, request.attachment_id)
        return to_message(attachment_pb2.Attachment, data)

    async def UpdateAttachment(
        self, request: pb.UpdateAttachmentRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.attachments.update(
            current_principal().org,
            request.attachment_id,
            written_fields(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.attachment_id)

    async def DeleteAttachment(
        self, request: pb.DeleteAttachmentRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.attachments.delete(current_principal().org, request.attachment_id)
        return empty_pb2.Empty()

    async def CreateAttachmentAccessToken(
        self, request: pb.CreateAttachmentAccessTokenRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        token = await self.domain.attachments.create_token(
            principal.org, principal.subject, request.attachment_id
        )
        return resource_pb2.ResourceId(id=token)

    async def UploadAttachmentContent(
        self, request_iterator: AsyncIterator[pb.UploadAttachmentContentRequest], context: Context
    ) -> resource_pb2.ResourceId:
        first = await anext(request_iterator, None)
        if first is None or not first.access_token:
            raise InvalidArgument("the upload names no access token")

        async def pieces() -> AsyncIterator[bytes]:
            yield first.http_body.data
            async for message in request_iterator:
                yield message.http_body.data

        attachment_id = await self.domain.attachments.upload(
            first.access_token, first.http_body.content_type, pieces()
        )
        return resource_pb2.ResourceId(id=attachment_id)

    async def DownloadAttachmentContent(
        self, request: pb.DownloadAttachmentContentRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        content_type, chunks = await self.domain.attachments.download(request.access_token)
        sent = False
        async for data in chunks:
            yield httpbody_pb2.HttpBody(content_type=content_type, data=data)
            sent = True
        if not sent:
            yield httpbody_pb2.HttpBody(content_type=content_type)
