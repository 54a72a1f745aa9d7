"""MessagingService RPCs of the senders area: sender ID classes and types (reference data, with
Admin-only writes), sender IDs (incl. purchase and Admin provisioning) and channels with their
sender IDs. Proto ⇄ plain data only; the rules live in reference.py, senders.py, channels.py."""

from __future__ import annotations

from functools import partial
from typing import Any

from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.messaging.v1 import channel_pb2, sender_pb2
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from switchboard.server.core.context import current_principal
from switchboard.server.core.protomap import (
    body_version,
    list_response,
    to_message,
    written_fields,
)
from switchboard.server.core.types import Context
from switchboard.server.messaging.domain import MessagingDomain


def _input(message: Any) -> dict[str, Any]:
    """The fields present in an Input message, repeated ones as lists, version_number dropped."""
    values = written_fields(message)
    return {
        k: list(v) if not isinstance(v, str | int | float | bool) else v for k, v in values.items()
    }


class SenderRpcs:
    domain: MessagingDomain

    # -- reference data ------------------------------------------------------------------------

    async def ListSenderIdClasses(
        self, request: pb.ListSenderIdClassesRequest, context: Context
    ) -> pb.ListSenderIdClassesResponse:
        return await list_response(
            request,
            pb.ListSenderIdClassesResponse,
            "sender_id_classes",
            self.domain.reference.list_classes,
        )

    async def GetSenderIdClass(
        self, request: pb.GetSenderIdClassRequest, context: Context
    ) -> sender_pb2.SenderIdClass:
        data = await self.domain.reference.get_class(request.class_id)
        return to_message(sender_pb2.SenderIdClass, data)

    async def PutSenderIdClass(
        self, request: pb.PutSenderIdClassRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.reference.put_class(
            request.class_id, _input(request.body), body_version(request.body, context)
        )
        return empty_pb2.Empty()

    async def ListSenderIdTypes(
        self, request: pb.ListSenderIdTypesRequest, context: Context
    ) -> pb.ListSenderIdTypesResponse:
        return await list_response(
            request,
            pb.ListSenderIdTypesResponse,
            "sender_id_types",
            self.domain.reference.list_types,
        )

    async def GetSenderIdType(
        self, request: pb.GetSenderIdTypeRequest, context: Context
    ) -> sender_pb2.SenderIdType:
        data = await self.domain.reference.get_type(request.type_id)
        return to_message(sender_pb2.SenderIdType, data)

    async def PutSenderIdType(
        self, request: pb.PutSenderIdTypeRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.reference.put_type(
            request.type_id, _input(request.body), body_version(request.body, context)
        )
        return empty_pb2.Empty()

    # -- sender IDs ----------------------------------------------------------------------------

    async def ListSenderIds(
        self, request: pb.ListSenderIdsRequest, context: Context
    ) -> pb.ListSenderIdsResponse:
        return await list_response(
            request,
            pb.ListSenderIdsResponse,
            "sender_ids",
            partial(self.domain.senders.list_page, current_principal().org),
        )

    async def CreateSenderId(
        self, request: pb.CreateSenderIdRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        sender_id = await self.domain.senders.create(
            principal.org, principal.subject, _input(request.body)
        )
        return resource_pb2.ResourceId(id=sender_id)

    async def PurchaseSenderId(
        self, request: pb.PurchaseSenderIdRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        sender_id = await self.domain.senders.purchase(
            principal.org, principal.subject, request.parent_id
        )
        return resource_pb2.ResourceId(id=sender_id)

    async def GetSenderId(
        self, request: pb.GetSenderIdRequest, context: Context
    ) -> sender_pb2.SenderId:
        data = await self.domain.senders.get(current_principal().org, request.sender_id)
        return to_message(sender_pb2.SenderId, data)

    async def UpdateSenderId(
        self, request: pb.UpdateSenderIdRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.senders.update(
            current_principal().org,
            request.sender_id,
            _input(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.sender_id)

    async def DeleteSenderId(
        self, request: pb.DeleteSenderIdRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.senders.delete(current_principal().org, request.sender_id)
        return empty_pb2.Empty()

    async def CreateSystemSenderId(
        self, request: pb.CreateSystemSenderIdRequest, context: Context
    ) -> resource_pb2.ResourceId:
        sender_id = await self.domain.senders.create_system(
            current_principal().subject, _input(request.body)
        )
        return resource_pb2.ResourceId(id=sender_id)

    async def ProvisionSenderId(
        self, request: pb.ProvisionSenderIdRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.senders.provision(
            request.sender_id,
            request.state,
            request.country,
            list(request.operators),
            request.billing,
        )
        return resource_pb2.ResourceId(id=request.sender_id)

    # -- channels ------------------------------------------------------------------------------

    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: Context
    ) -> pb.ListChannelsResponse:
        return await list_response(
            request,
            pb.ListChannelsResponse,
            "channels",
            partial(self.domain.channels.list_page, current_principal().org),
        )

    async def CreateChannel(
        self, request: pb.CreateChannelRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        channel_id = await self.domain.channels.create(
            principal.org, principal.subject, _input(request.body)
        )
        return resource_pb2.ResourceId(id=channel_id)

    async def GetChannel(
        self, request: pb.GetChannelRequest, context: Context
    ) -> channel_pb2.Channel:
        data = await self.domain.channels.get(current_principal().org, request.channel_id)
        return to_message(channel_pb2.Channel, data)

    async def UpdateChannel(
        self, request: pb.UpdateChannelRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.channels.update(
            current_principal().org,
            request.channel_id,
            _input(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.channel_id)

    async def ReplaceChannel(
        self, request: pb.ReplaceChannelRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.channels.update(
            current_principal().org,
            request.channel_id,
            _input(request.body),
            body_version(request.body, context),
            replace=True,
        )
        return empty_pb2.Empty()

    async def DeleteChannel(
        self, request: pb.DeleteChannelRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.channels.delete(current_principal().org, request.channel_id)
        return empty_pb2.Empty()

    async def ListChannelSenderIds(
        self, request: pb.ListChannelSenderIdsRequest, context: Context
    ) -> pb.ListChannelSenderIdsResponse:
        return await list_response(
            request,
            pb.ListChannelSenderIdsResponse,
            "sender_ids",
            partial(self.domain.channels.list_senders, current_principal().org, request.channel_id),
        )

    async def AddChannelSenderIds(
        self, request: pb.AddChannelSenderIdsRequest, context: Context
    ) -> resource_pb2.ResourceId:
        ids = [*request.sender_ids, *([request.sender_id] if request.sender_id else [])]
        channel_id = await self.domain.channels.add_senders(
            current_principal().org, request.channel_id, ids
        )
        return resource_pb2.ResourceId(id=channel_id)

    async def RemoveChannelSenderIds(
        self, request: pb.RemoveChannelSenderIdsRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.channels.remove_senders(
            current_principal().org, request.channel_id, list(request.sender_id)
        )
        return empty_pb2.Empty()
