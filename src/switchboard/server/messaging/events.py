"""StreamMessagingEvents: message, message request, inbound (MO) and keyword events, on the one
stream contract (README "Streams: one contract"). Family B: an empty `after` replays from the
org's first event, like calling and contacts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from switchboard.messaging.v1 import (
    keyword_pb2,
    message_pb2,
    message_request_pb2,
)
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from switchboard.server.core import streams
from switchboard.server.core.context import current_principal
from switchboard.server.core.events import Heartbeat
from switchboard.server.core.models import EventRecord
from switchboard.server.core.protomap import event_envelope, once_per_event, to_message
from switchboard.server.core.types import Context
from switchboard.server.core.validation import Checks
from switchboard.server.messaging.domain import MessagingDomain
from switchboard.server.messaging.requests.models import MessageState, RequestState
from switchboard.server.messaging.senders.channels import ChannelPredicate, about_channel

EVENT_PREFIXES = ("message.", "message_request.", "keyword.")
_STATES = frozenset(MessageState) | frozenset(RequestState)


class EventRpcs:
    domain: MessagingDomain

    async def StreamMessagingEvents(
        self, request: pb.StreamMessagingEventsRequest, context: Context
    ) -> AsyncIterator[pb.MessagingEvent]:
        checks = Checks()
        exact, prefixes = streams.type_patterns(request.types, EVENT_PREFIXES, checks)
        message_ids = streams.id_list(request.message_ids, checks, "message_ids")
        request_ids = streams.id_list(request.message_request_ids, checks, "message_request_ids")
        resource_ids = streams.id_list(request.resource_ids, checks, "resource_ids")
        # Case-insensitive, like every stream's states (core/streams.states; two enums here).
        states = frozenset(state.strip().upper() for state in request.states)
        for i, state in enumerate(request.states):
            if state.strip().upper() not in _STATES:
                checks.fail(f"states[{i}]", f"{state!r} is not a message or message request state")
        heartbeat = streams.heartbeat(request.heartbeat_seconds, checks)
        checks.raise_if_failed()
        org = current_principal().org
        about = (
            about_channel(
                request.channel_id,
                await self.domain.channels.sender_ids(org, request.channel_id),
            )
            if request.channel_id
            else None
        )
        feed = self.domain.feed
        # Ids the log can filter on its own (a message request's messages cannot: they are other
        # resources), the rest after.
        direct = [*message_ids, *resource_ids]
        wanted = _predicate(
            set(direct),
            set(request_ids),
            states,
            about,
        )
        async for item in feed.follow(
            org_id=org,
            after=await feed.start_cursor(request.after or "0"),
            types=exact,
            type_prefixes=prefixes,
            resource_ids=[] if request_ids else direct,
            heartbeat_seconds=heartbeat,
            started=context.send_initial_metadata,
        ):
            if isinstance(item, EventRecord) and not wanted(item):
                continue
            yield messaging_event(item)


def _predicate(
    ids: set[str],
    request_ids: set[str],
    states: frozenset[str],
    about_channel: ChannelPredicate | None,
) -> Callable[[EventRecord], bool]:
    def wanted(record: EventRecord) -> bool:
        payload: dict[str, Any] = record.payload
        is_request = record.type.startswith("message_request.")
        if ids or request_ids:
            own = record.resource_id in ids or record.resource_id in request_ids
            parent = payload.get("message_request_id") in request_ids if not is_request else False
            if not (own or parent):
                return False
        if states and not record.type.startswith("keyword.") and payload.get("state") not in states:
            return False
        if about_channel is not None:
            return about_channel(record.type, record.resource_id, payload)
        return True

    return wanted


@once_per_event
def messaging_event(item: EventRecord | Heartbeat) -> pb.MessagingEvent:
    event = pb.MessagingEvent(envelope=event_envelope(item))
    if isinstance(item, Heartbeat):
        return event
    payload = item.payload
    if item.type.startswith("message_request."):
        event.message_request.CopyFrom(to_message(message_request_pb2.MessageRequest, payload))
    elif item.type == "message.received":
        event.inbound.CopyFrom(to_message(message_pb2.Message, payload))
    elif item.type.startswith("message."):
        event.message.CopyFrom(to_message(message_pb2.Message, payload))
    elif item.type == "keyword.matched":
        event.keyword_match.CopyFrom(
            pb.KeywordMatchEvent(
                keyword=to_message(keyword_pb2.Keyword, payload),
                sender_id=str(payload.get("sender_id") or ""),
                from_address=str(payload.get("from_address") or ""),
                message=str(payload.get("message") or ""),
                received_at=str(payload.get("received_at") or ""),
            )
        )
    elif item.type.startswith("keyword."):
        event.keyword.CopyFrom(to_message(keyword_pb2.Keyword, payload))
    return event
