"""CallingService: proto ⇄ the calls domain (calling/service.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from google.protobuf import empty_pb2
from switchboard.calling.v1 import (
    bridge_pb2,
    call_pb2,
    calling_service_pb2_grpc,
    conference_pb2,
)
from switchboard.calling.v1 import calling_service_pb2 as pb
from switchboard.common.v1 import resource_pb2

from switchboard.server.calling import bridges, conferences
from switchboard.server.calling import service as calls
from switchboard.server.calling.media import MediaKind
from switchboard.server.calling.models import CallState
from switchboard.server.calling.rpc_conferences import ConferenceRpcs
from switchboard.server.core import protomap, streams
from switchboard.server.core.context import current_principal
from switchboard.server.core.events import EventFeed, Heartbeat
from switchboard.server.core.models import EventRecord
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

_EVENT_PREFIXES = ("call.", "play.", "bridge.", "conference.", "member.")


class CallingServicer(ConferenceRpcs, calling_service_pb2_grpc.CallingServiceServicer):
    def __init__(
        self,
        service: calls.CallService,
        bridge_service: bridges.BridgeService,
        conference_service: conferences.ConferenceService,
        feed: EventFeed,
    ) -> None:
        self._calls = service
        self._bridges = bridge_service
        self._conferences = conference_service
        self._feed = feed

    # -- bridges ---------------------------------------------------------------------------------

    async def ListBridges(
        self, request: pb.ListBridgesRequest, context: Context
    ) -> pb.ListBridgesResponse:
        return await list_response(
            request,
            pb.ListBridgesResponse,
            "bridges",
            partial(self._bridges.list_page, current_principal().org),
        )

    async def CreateBridge(
        self, request: pb.CreateBridgeRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        bridge_id = await self._bridges.create(
            principal.org, principal.subject, written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=bridge_id)

    async def GetBridge(self, request: pb.GetBridgeRequest, context: Context) -> bridge_pb2.Bridge:
        data = await self._bridges.get(current_principal().org, request.bridge_id)
        return to_message(bridge_pb2.Bridge, data)

    async def UpdateBridge(
        self, request: pb.UpdateBridgeRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self._bridges.update(
            current_principal().org,
            request.bridge_id,
            written_fields(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.bridge_id)

    async def DeleteBridge(
        self, request: pb.DeleteBridgeRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._bridges.delete(current_principal().org, request.bridge_id)
        return empty_pb2.Empty()

    async def ListBridgeCalls(
        self, request: pb.ListBridgeCallsRequest, context: Context
    ) -> pb.ListCallsResponse:
        checks = Checks()
        page = page_of(request, checks)
        checks.raise_if_failed()
        items, token = await self._bridges.calls(
            current_principal().org, request.bridge_id, given_filters(request), page
        )
        return page_response(pb.ListCallsResponse, "calls", items, token)

    async def PlayBridgeTts(
        self, request: pb.PlayBridgeTtsRequest, context: Context
    ) -> resource_pb2.ResourceId:
        values = written_fields(request.body)
        play_id = await self._bridges.play(
            current_principal().org, request.bridge_id, MediaKind.TTS, values
        )
        return resource_pb2.ResourceId(id=play_id)

    async def PlayBridgeAudio(
        self, request: pb.PlayBridgeAudioRequest, context: Context
    ) -> resource_pb2.ResourceId:
        values = written_fields(request.body)
        play_id = await self._bridges.play(
            current_principal().org, request.bridge_id, MediaKind.AUDIO, values
        )
        return resource_pb2.ResourceId(id=play_id)

    # -- calls -----------------------------------------------------------------------------------

    async def ListCalls(
        self, request: pb.ListCallsRequest, context: Context
    ) -> pb.ListCallsResponse:
        return await list_response(
            request,
            pb.ListCallsResponse,
            "calls",
            partial(self._calls.list_page, current_principal().org),
        )

    async def CreateCall(
        self, request: pb.CreateCallRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        call_id = await self._calls.create(
            principal.org, principal.subject, written_fields(request.body)
        )
        return resource_pb2.ResourceId(id=call_id)

    async def GetCall(self, request: pb.GetCallRequest, context: Context) -> call_pb2.Call:
        data = await self._calls.get(current_principal().org, request.call_id)
        return to_message(call_pb2.Call, data)

    async def UpdateCall(
        self, request: pb.UpdateCallRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self._calls.update(
            current_principal().org,
            request.call_id,
            written_fields(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.call_id)

    async def DeleteCall(self, request: pb.DeleteCallRequest, context: Context) -> empty_pb2.Empty:
        await self._calls.hang_up(current_principal().org, request.call_id)
        return empty_pb2.Empty()

    async def PlayDtmf(
        self, request: pb.PlayDtmfRequest, context: Context
    ) -> resource_pb2.ResourceId:
        return await self._play(request.call_id, MediaKind.DTMF, written_fields(request.body))

    async def PlayTts(
        self, request: pb.PlayTtsRequest, context: Context
    ) -> resource_pb2.ResourceId:
        return await self._play(request.call_id, MediaKind.TTS, written_fields(request.body))

    async def PlayAudio(
        self, request: pb.PlayAudioRequest, context: Context
    ) -> resource_pb2.ResourceId:
        return await self._play(request.call_id, MediaKind.AUDIO, written_fields(request.body))

    async def _play(
        self, call_id: str, kind: MediaKind, values: dict[str, object]
    ) -> resource_pb2.ResourceId:
        play_id = await self._calls.play(current_principal().org, call_id, kind, values)
        return resource_pb2.ResourceId(id=play_id)

    async def StreamCallEvents(
        self, request: pb.StreamCallEventsRequest, context: Context
    ) -> AsyncIterator[pb.CallEvent]:
        checks = Checks()
        # The one stream contract's filters: ids, type patterns (`call.*`) and states.
        exact, prefixes = streams.type_patterns(request.types, _EVENT_PREFIXES, checks)
        call_ids = streams.id_list(request.call_ids, checks, "call_ids")
        states = streams.states(request.states, CallState, checks)
        heartbeat = streams.heartbeat(request.heartbeat_seconds, checks)
        checks.raise_if_failed()
        async for item in self._feed.follow(
            org_id=current_principal().org,
            # The proto: "0 or empty starts at the org's first event" (unlike SMS and
            # communications, where empty means from now on).
            after=await self._feed.start_cursor(request.after or "0"),
            types=exact,
            type_prefixes=prefixes,
            resource_ids=call_ids,
            heartbeat_seconds=heartbeat,
            started=context.send_initial_metadata,
        ):
            # States are a call's: play, bridge, conference and member events pass.
            if (
                states
                and isinstance(item, EventRecord)
                and item.type.startswith("call.")
                and item.payload.get("state") not in states
            ):
                continue
            yield _call_event(item)


@protomap.once_per_event
def _call_event(item: EventRecord | Heartbeat) -> pb.CallEvent:
    event = pb.CallEvent(envelope=protomap.event_envelope(item))
    if isinstance(item, Heartbeat):
        return event
    if item.type.startswith("play."):
        event.play.CopyFrom(to_message(call_pb2.Play, item.payload))
    elif item.type.startswith("bridge."):
        event.bridge.CopyFrom(to_message(bridge_pb2.Bridge, item.payload))
    elif item.type.startswith("conference."):
        event.conference.CopyFrom(to_message(conference_pb2.Conference, item.payload))
    elif item.type.startswith("member."):
        event.member.CopyFrom(to_message(conference_pb2.ConferenceMember, item.payload))
    else:
        event.call.CopyFrom(to_message(call_pb2.Call, item.payload))
    return event
