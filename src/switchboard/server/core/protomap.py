"""Servicer helpers shared by every domain: proto ⇄ plain data, list responses, If-Match.

Domain services speak plain dicts ("snapshots": JSON-safe, times as RFC 3339 strings, keys as
the proto field names), so the same snapshot serves an RPC response and an event payload.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from switchboard.common.v1 import event_pb2

from switchboard.server.core import context as rpc_context
from switchboard.server.core import listing
from switchboard.server.core.errors import FieldViolation, validation_error
from switchboard.server.core.events import Heartbeat, StreamNotice
from switchboard.server.core.models import EventRecord
from switchboard.server.core.validation import Checks

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
E = TypeVar("E", bound=Message)
# What a list RPC's service call returns: the page's snapshots and the next page token.
Fetch = Callable[
    [dict[str, Any], listing.Page, Checks], Awaitable[tuple[Iterable[Mapping[str, Any]], str]]
]
_PAGING = frozenset({"limit", "offset", "page_token"})


def present(message: Message) -> dict[str, Any]:
    """The fields a client set (for `optional` fields, presence; scalars as they are)."""
    return {field.name: value for field, value in message.ListFields()}


def written_fields(body: Message) -> dict[str, Any]:
    """The attributes an Input message set; its version_number travels separately (see
    body_version)."""
    fields = present(body)
    fields.pop("version_number", None)
    return fields


def page_of(request: Any, checks: Checks) -> listing.Page:
    """The page a list request asks for (its limit, offset and page_token)."""
    return listing.page(checks, request.limit, request.offset, request.page_token)


@functools.cache
def filter_names(descriptor: Descriptor) -> tuple[str, ...]:
    """A list request's filters, read off its message: every scalar field with presence (the
    `optional` ones) but the paging trio. Path parameters and repeated fields have no presence."""
    return tuple(
        field.name
        for field in descriptor.fields
        if field.has_presence
        and field.type != FieldDescriptor.TYPE_MESSAGE
        and field.name not in _PAGING
    )


def given_filters(request: Message, *, exclude: Collection[str] = ()) -> dict[str, Any]:
    """The filter query parameters a list request carried (see filter_names), but `exclude`:
    those the RPC passes to its service apart."""
    return {
        name: getattr(request, name)
        for name in filter_names(request.DESCRIPTOR)
        if name not in exclude and request.HasField(name)
    }


def iso(value: datetime | None) -> str | None:
    """A UTC time as the RFC 3339 string snapshots carry."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_message(cls: type[M], snapshot: Mapping[str, Any]) -> M:
    """`snapshot` (proto field names; None means unset) as a `cls` message."""
    clean = {k: v for k, v in snapshot.items() if v is not None}
    return json_format.ParseDict(clean, cls(), ignore_unknown_fields=True)


def event_envelope(item: EventRecord | Heartbeat) -> event_pb2.EventEnvelope:
    """The envelope of a streamed event, or of a heartbeat (which carries the stream's cursor)."""
    if isinstance(item, Heartbeat):
        # A StreamNotice (stream.lagged, stream.closing) is a heartbeat with its own type.
        kind = item.type if isinstance(item, StreamNotice) else "heartbeat"
        envelope = event_pb2.EventEnvelope(cursor=str(item.cursor), type=kind)
        envelope.occur_time.FromDatetime(item.at)
        return envelope
    envelope = event_pb2.EventEnvelope(
        cursor=str(item.seq), type=item.type, resource_id=item.resource_id
    )
    envelope.occur_time.FromDatetime(item.occurred_at)
    return envelope


#: Converted events kept per stream kind: enough for every subscriber of a burst to share one.
_SHARED_EVENTS = 4096


def once_per_event(
    convert: Callable[[EventRecord | Heartbeat], E],
) -> Callable[[EventRecord | Heartbeat], E]:
    """`convert` (an event's record into a stream's message) once per event, not once per
    subscriber: the hub hands the same event to every subscriber of its org, and building the
    message is most of a delivery's cost. Messages are shared, so nobody may change one after."""
    # By the record object itself (kept alive here, so its id cannot be reused): the hub hands
    # one object to all; a cursor alone could name another database's event in a test process.
    cache: OrderedDict[int, tuple[EventRecord, E]] = OrderedDict()

    def shared(item: EventRecord | Heartbeat) -> E:
        if isinstance(item, Heartbeat):
            return convert(item)
        hit = cache.get(id(item))
        if hit is not None and hit[0] is item:
            return hit[1]
        message = convert(item)
        cache[id(item)] = (item, message)
        if len(cache) > _SHARED_EVENTS:
            cache.popitem(last=False)
        return message

    return shared


def bare_list(field: str) -> None:
    """Mark this RPC's response as a family-B list: REST clients get `field` as a bare array."""
    rpc_context.set_bare_list(field)


async def list_response(
    request: Message,
    response_cls: type[R],
    field: str,
    fetch: Fetch,
) -> R:
    """The usual List RPC: the request's page and filters (see given_filters) go to
    `fetch(given, page, checks)`, one service call, and its page comes back as a `response_cls`
    (see page_response)."""
    checks = Checks()
    page = page_of(request, checks)
    items, token = await fetch(given_filters(request), page, checks)
    return page_response(response_cls, field, items, token)


def page_response(
    response_cls: type[R], field: str, items: Iterable[Mapping[str, Any]], token: str
) -> R:
    """A family-B list response: snapshots as the messages of its repeated `field` (REST clients
    get that field as a bare array, see bare_list) and the next page token."""
    bare_list(field)
    item_cls = _item_class(response_cls.DESCRIPTOR, field)
    listed = [to_message(item_cls, item) for item in items]
    return response_cls(**{field: listed, "next_page_token": token})


@functools.cache
def _item_class(descriptor: Descriptor, field: str) -> type[Message]:
    item = descriptor.fields_by_name[field].message_type
    if item is None:
        raise TypeError(f"{descriptor.full_name}.{field} is not a list of messages")
    return message_factory.GetMessageClass(item)


_VERSION = re.compile(r"[0-9]{1,10}")


def if_match(context: grpc.aio.ServicerContext) -> int | None:
    """The version an `If-Match` header expects (`3`, `"3"` or `W/"3"`), if one was sent."""
    for key, value in context.invocation_metadata() or ():
        if key == "if-match":
            text = value.decode() if isinstance(value, bytes) else str(value)
            stripped = text.strip().removeprefix("W/").strip('"')
            # ASCII digits only (str.isdigit also takes "²", which int() refuses), and few
            # enough for int() and a 32-bit version_number.
            if not _VERSION.fullmatch(stripped):
                violation = FieldViolation("If-Match", "must be the resource's version_number")
                raise validation_error([violation])
            return int(stripped)
    return None


def body_version(body: Message, context: grpc.aio.ServicerContext) -> int | None:
    """The version a write of `body` (an input message with `optional version_number`)
    expects, from the body or an If-Match header."""
    version = body.version_number if body.HasField("version_number") else None  # type: ignore[attr-defined]
    return expected_version(version, context)


def expected_version(body_version: int | None, context: grpc.aio.ServicerContext) -> int | None:
    """The version a write expects: `version_number` in the body, else If-Match; both must agree."""
    header = if_match(context)
    if body_version is not None and header is not None and body_version != header:
        violation = FieldViolation("version_number", "differs from the If-Match header")
        raise validation_error([violation])
    return body_version if body_version is not None else header
