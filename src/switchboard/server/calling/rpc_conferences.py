"""CallingService's conference RPCs: proto ⇄ calling/conferences.py."""

from __future__ import annotations

from functools import partial

from google.protobuf import empty_pb2
from switchboard.calling.v1 import calling_service_pb2 as pb
from switchboard.calling.v1 import conference_pb2
from switchboard.common.v1 import resource_pb2

from switchboard.server.calling import conferences
from switchboard.server.calling.media import MediaKind
from switchboard.server.core.context import current_principal
from switchboard.server.core.protomap import (
    list_response,
    to_message,
    written_fields,
)
from switchboard.server.core.types import Context


class ConferenceRpcs:
    _conferences: conferences.ConferenceService

    async def ListConferences(
        self, request: pb.ListConferencesRequest, context: Context
    ) -> pb.ListConferencesResponse:
        return await list_response(
            request,
            pb.ListConferencesResponse,
            "conferences",
            partial(self._conferences.list_page, current_principal().org),
        )

    async def CreateConference(
        self, request: pb.CreateConferenceRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        conference_id = await self._conferences.create(
            principal.org, principal.subject, written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=conference_id)

    async def GetConference(
        self, request: pb.GetConferenceRequest, context: Context
    ) -> conference_pb2.Conference:
        data = await self._conferences.get(current_principal().org, request.conference_id)
        return to_message(conference_pb2.Conference, data)

    async def DeleteConference(
        self, request: pb.DeleteConferenceRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._conferences.delete(current_principal().org, request.conference_id)
        return empty_pb2.Empty()

    async def PlayConferenceTts(
        self, request: pb.PlayConferenceTtsRequest, context: Context
    ) -> resource_pb2.ResourceId:
        play_id = await self._conferences.play(
            current_principal().org,
            request.conference_id,
            MediaKind.TTS,
            written_fields(request.body),
        )
        return resource_pb2.ResourceId(id=play_id)

    async def PlayConferenceAudio(
        self, request: pb.PlayConferenceAudioRequest, context: Context
    ) -> resource_pb2.ResourceId:
        play_id = await self._conferences.play(
            current_principal().org,
            request.conference_id,
            MediaKind.AUDIO,
            written_fields(request.body),
        )
        return resource_pb2.ResourceId(id=play_id)

    async def ListConferenceMembers(
        self, request: pb.ListConferenceMembersRequest, context: Context
    ) -> pb.ListConferenceMembersResponse:
        return await list_response(
            request,
            pb.ListConferenceMembersResponse,
            "members",
            partial(self._conferences.list_members, current_principal().org, request.conference_id),
        )

    async def CreateConferenceMember(
        self, request: pb.CreateConferenceMemberRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        member_id = await self._conferences.add_member(
            principal.org, principal.subject, request.conference_id, written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=member_id)

    async def GetConferenceMember(
        self, request: pb.GetConferenceMemberRequest, context: Context
    ) -> conference_pb2.ConferenceMember:
        data = await self._conferences.get_member(
            current_principal().org, request.conference_id, request.member_id
        )
        return to_message(conference_pb2.ConferenceMember, data)

    async def DeleteConferenceMember(
        self, request: pb.DeleteConferenceMemberRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._conferences.remove_member(
            current_principal().org, request.conference_id, request.member_id
        )
        return empty_pb2.Empty()

    async def PlayConferenceMemberTts(
        self, request: pb.PlayConferenceMemberTtsRequest, context: Context
    ) -> resource_pb2.ResourceId:
        play_id = await self._conferences.play_member(
            current_principal().org,
            request.conference_id,
            request.member_id,
            MediaKind.TTS,
            written_fields(request.body),
        )
        return resource_pb2.ResourceId(id=play_id)

    async def PlayConferenceMemberAudio(
        self, request: pb.PlayConferenceMemberAudioRequest, context: Context
    ) -> resource_pb2.ResourceId:
        play_id = await self._conferences.play_member(
            current_principal().org,
            request.conference_id,
            request.member_id,
            MediaKind.AUDIO,
            written_fields(request.body),
        )
        return resource_pb2.ResourceId(id=play_id)
