"""ContactsService RPCs of consent: address statuses, their history, and the Communications API's
blacklist removal. Proto ⇄ snapshots only; the rules are in consent.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.contacts.v1 import consent_pb2
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from switchboard.server.core import protomap
from switchboard.server.core.context import current_principal
from switchboard.server.core.version import server_version

if TYPE_CHECKING:
    from switchboard.server.contacts.domain import ContactsDomain


class ConsentRpcs:
    domain: ContactsDomain

    async def ListContactAddressStatuses(
        self, request: pb.ListContactAddressStatusesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContactAddressStatusesResponse:
        items, token = await self.domain.consent.list_statuses(
            current_principal().org,
            protomap.given_filters(request),
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
        )
        return protomap.page_response(
            pb.ListContactAddressStatusesResponse, "contact_address_statuses", items, token
        )

    async def CreateContactAddressStatus(
        self, request: pb.CreateContactAddressStatusRequest, context: grpc.aio.ServicerContext
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        status_id = await self.domain.consent.create_status(
            principal.org, principal.subject, protomap.written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=status_id)

    async def GetContactAddressStatus(
        self, request: pb.GetContactAddressStatusRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ContactAddressStatus:
        item = await self.domain.consent.get_status(
            current_principal().org, request.address_status_id
        )
        return protomap.to_message(consent_pb2.ContactAddressStatus, item)

    async def UpdateContactAddressStatus(
        self, request: pb.UpdateContactAddressStatusRequest, context: grpc.aio.ServicerContext
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        status_id = await self.domain.consent.update_status(
            principal.org,
            principal.subject,
            request.address_status_id,
            protomap.written_fields(request.body),
            protomap.body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=status_id)

    async def DeleteContactAddressStatus(
        self, request: pb.DeleteContactAddressStatusRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = current_principal()
        await self.domain.consent.delete_status(
            principal.org,
            principal.subject,
            request.address_status_id,
            protomap.expected_version(None, context),
        )
        return empty_pb2.Empty()

    async def ListContactAddressHistory(
        self, request: pb.ListContactAddressHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContactAddressHistoryResponse:
        items, token = await self.domain.consent.list_history(
            current_principal().org,
            protomap.given_filters(request),
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
        )
        return protomap.page_response(
            pb.ListContactAddressHistoryResponse, "contact_address_history", items, token
        )

    async def RemoveBlacklistEntry(
        self, request: pb.RemoveBlacklistEntryRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveBlacklistEntryResponse:
        principal = current_principal()
        principal.require_org(request.org)
        address, count = await self.domain.consent.remove_blacklist(
            request.org, principal.subject, request.address
        )
        return pb.RemoveBlacklistEntryResponse(
            commit=server_version(),
            id=address,
            data=pb.BlacklistRemoval(address=address, removed_count=count),
        )
