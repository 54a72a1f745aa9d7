"""ContactsService RPCs of tokens: the org's access tokens, a contact's access tokens and a
contact's application tokens. Proto ⇄ snapshots only; the rules are in tokens.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.contacts.v1 import access_token_pb2
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from switchboard.server.contacts.models import TokenOwner
from switchboard.server.core import protomap
from switchboard.server.core.context import current_principal

if TYPE_CHECKING:
    from switchboard.server.contacts.domain import ContactsDomain


def _app_fields(body: access_token_pb2.ContactApplicationTokenInput) -> dict[str, Any]:
    fields = protomap.present(body)
    fields.pop("version_number", None)
    return fields


class TokenRpcs:
    domain: ContactsDomain

    # ---- /access_tokens -----------------------------------------------------------------------

    async def ListAccessTokens(
        self, request: pb.ListAccessTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAccessTokensResponse:
        items, token = await self.domain.access_tokens.list_tokens(
            current_principal().org,
            protomap.given_filters(request),
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
        )
        return protomap.page_response(pb.ListAccessTokensResponse, "access_tokens", items, token)

    async def CreateAccessToken(
        self, request: pb.CreateAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        token = await self.domain.access_tokens.create(
            principal.org, principal.subject, TokenOwner.ORG
        )
        return resource_pb2.ResourceId(id=token)

    async def GetAccessToken(
        self, request: pb.GetAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> access_token_pb2.AccessToken:
        item = await self.domain.access_tokens.get(current_principal().org, request.access_token_id)
        return protomap.to_message(access_token_pb2.AccessToken, item)

    async def DeleteAccessToken(
        self, request: pb.DeleteAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.domain.access_tokens.delete(
            current_principal().org,
            request.access_token_id,
            expected_version=protomap.expected_version(None, context),
        )
        return empty_pb2.Empty()

    # ---- /contacts/{contact_id}/access_tokens -------------------------------------------------

    async def ListContactAccessTokens(
        self, request: pb.ListContactAccessTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContactAccessTokensResponse:
        items, token = await self.domain.access_tokens.list_tokens(
            current_principal().org,
            protomap.given_filters(request),
            contact_id=request.contact_id,
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
        )
        return protomap.page_response(
            pb.ListContactAccessTokensResponse, "access_tokens", items, token
        )

    async def CreateContactAccessToken(
        self, request: pb.CreateContactAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        token = await self.domain.access_tokens.create(
            principal.org, principal.subject, TokenOwner.CONTACT, request.contact_id
        )
        return resource_pb2.ResourceId(id=token)

    async def GetContactAccessToken(
        self, request: pb.GetContactAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> access_token_pb2.AccessToken:
        item = await self.domain.access_tokens.get(
            current_principal().org, request.access_token_id, contact_id=request.contact_id
        )
        return protomap.to_message(access_token_pb2.AccessToken, item)

    async def DeleteContactAccessToken(
        self, request: pb.DeleteContactAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.domain.access_tokens.delete(
            current_principal().org,
            request.access_token_id,
            contact_id=request.contact_id,
            expected_version=protomap.expected_version(None, context),
        )
        return empty_pb2.Empty()

    async def RenewContactAccessToken(
        self, request: pb.RenewContactAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.domain.access_tokens.renew(
            current_principal().org,
            request.access_token_id,
            contact_id=request.contact_id,
            expected_version=protomap.expected_version(None, context),
        )
        return empty_pb2.Empty()

    # ---- /contacts/{contact_id}/application_tokens --------------------------------------------

    async def ListContactApplicationTokens(
        self, request: pb.ListContactApplicationTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContactApplicationTokensResponse:
        items, token = await self.domain.application_tokens.list_tokens(
            current_principal().org,
            request.contact_id,
            protomap.given_filters(request),
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
        )
        return protomap.page_response(
            pb.ListContactApplicationTokensResponse, "application_tokens", items, token
        )

    async def CreateContactApplicationToken(
        self, request: pb.CreateContactApplicationTokenRequest, context: grpc.aio.ServicerContext
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        token_id = await self.domain.application_tokens.create(
            principal.org, principal.subject, request.contact_id, _app_fields(request.body)
        )
        return resource_pb2.ResourceId(id=token_id)

    async def GetContactApplicationToken(
        self, request: pb.GetContactApplicationTokenRequest, context: grpc.aio.ServicerContext
    ) -> access_token_pb2.ContactApplicationToken:
        item = await self.domain.application_tokens.get(
            current_principal().org, request.contact_id, request.application_token_id
        )
        return protomap.to_message(access_token_pb2.ContactApplicationToken, item)

    async def UpdateContactApplicationToken(
        self, request: pb.UpdateContactApplicationTokenRequest, context: grpc.aio.ServicerContext
    ) -> resource_pb2.ResourceId:
        token_id = await self.domain.application_tokens.update(
            current_principal().org,
            request.contact_id,
            request.application_token_id,
            _app_fields(request.body),
            protomap.body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=token_id)

    async def ReplaceContactApplicationToken(
        self, request: pb.ReplaceContactApplicationTokenRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.domain.application_tokens.replace(
            current_principal().org,
            request.contact_id,
            request.application_token_id,
            _app_fields(request.body),
            protomap.body_version(request.body, context),
        )
        return empty_pb2.Empty()

    async def DeleteContactApplicationToken(
        self, request: pb.DeleteContactApplicationTokenRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.domain.application_tokens.delete(
            current_principal().org,
            request.contact_id,
            request.application_token_id,
            protomap.expected_version(None, context),
        )
        return empty_pb2.Empty()
