"""The SMS API's rules: validation, routing by channel, idempotent acceptance, status, events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from switchboard.server.core import streams
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.errors import FieldViolation, NotFound, validation_error
from switchboard.server.core.events import EventFeed, EventLog, Heartbeat, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.models import EventRecord
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks
from switchboard.server.core.writer import Writer
from switchboard.server.delivery import queue
from switchboard.server.delivery.models import Priority, QueueKind
from switchboard.server.delivery.recipients import country_and_zones
from switchboard.server.sms.models import Channel, SmsStatus
from switchboard.server.sms.repository import SmsRepository
from switchboard.server.telephony import phone
from switchboard.server.telephony.encoding import segment_count

CLIENT_MESSAGE_ID_MAX = 64
SMS_EVENT_PREFIXES = ("sms.",)


@dataclass(frozen=True)
class SmsLimits:
    max_content_length: int = 1600
    max_batch: int = 1000
    default_region: str | None = None


@dataclass(frozen=True)
class SmsRequest:
    """One message as the client sent it."""

    channel: str
    to: str
    content: str
    client_message_id: str


@dataclass(frozen=True)
class SmsOutcome:
    """What happened to one requested message. `channel` is None when it could not be routed."""

    index: int
    request: SmsRequest
    channel: Channel | None
    to: str
    api_message_id: str = ""
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Candidate:
    index: int
    channel: Channel
    to: phone.PhoneNumber
    request: SmsRequest


@dataclass(frozen=True)
class _AcceptBatch:
    org_id: str
    candidates: list[_Candidate]


def snapshot(row: Row, *, with_content: bool = True) -> dict[str, Any]:
    """A stored message (a row of sms_messages) as clients see it (JSON-safe)."""
    return {
        "api_message_id": row["id"],
        "client_message_id": row["client_message_id"] or "",
        "channel": row["channel"],
        "to": row["destination"],
        "content": row["content"] if with_content else "",
        "status": row["status"],
        "error": row["error"],
        "segments": row["segments"],
        "create_time": row["created_at"].isoformat(),
        "update_time": row["updated_at"].isoformat(),
    }


def status_event(row: Row) -> NewEvent:
    """The event recording that a message entered its current status."""
    return NewEvent(
        org_id=row["org_id"],
        type=SmsStatus(row["status"]).event_type,
        resource_id=row["id"],
        # Events say what changed, not what was said: content stays out of the log (it can be
        # 1600 characters, would be copied per state change, and streams fan out widely).
        payload=snapshot(row, with_content=False),
        occurred_at=row["updated_at"],
    )


class SmsService:
    def __init__(
        self,
        *,
        db: Database,
        repository: SmsRepository,
        events: EventLog,
        feed: EventFeed,
        clock: Clock,
        limits: SmsLimits,
        writer: Writer,
    ) -> None:
        self._db = db
        self._repository = repository
        self._events = events
        self._feed = feed
        self._clock = clock
        self._limits = limits
        self._acceptor = writer.channel("sms-accept", self._accept)

    async def send(self, org_id: str, requests: Sequence[SmsRequest]) -> list[SmsOutcome]:
        """Validate the whole request (nothing is applied if it is malformed), route each message,
        and make every routable one durable in one group commit."""
        self._validate(requests)
        outcomes: list[SmsOutcome | None] = [None] * len(requests)
        candidates: list[_Candidate] = []
        for index, request in enumerate(requests):
            channel = _parse_channel(request.channel)
            if channel is None:
                allowed = ", ".join(c.value for c in Channel)
                error = f"unknown channel {request.channel!r}; use one of: {allowed}"
                outcomes[index] = SmsOutcome(index, request, None, request.to, error=error)
                continue
            try:
                to = phone.classify(request.to, self._limits.default_region)
            except phone.InvalidNumber as exc:
                outcomes[index] = SmsOutcome(index, request, channel, request.to, error=str(exc))
                continue
            candidates.append(_Candidate(index, channel, to, request))
        if candidates:
            ids = await self._acceptor.submit(_AcceptBatch(org_id, candidates))
            for candidate, api_id in zip(candidates, ids, strict=True):
                key = candidate.request.client_message_id
                conflict = f"clientMessageId {key!r} was already used for a different message"
                outcomes[candidate.index] = SmsOutcome(
                    candidate.index,
                    candidate.request,
                    candidate.channel,
                    candidate.to.e164,
                    api_message_id=api_id or "",
                    error=None if api_id else conflict,
                )
        return [o for o in outcomes if o is not None]

    def _validate(self, requests: Sequence[SmsRequest]) -> None:
        limits = self._limits
        violations: list[FieldViolation] = []
        if not requests:
            violations.append(
                FieldViolation("Messages", "at least one message is required", "Required")
            )
        if len(requests) > limits.max_batch:
            violations.append(
                FieldViolation(
                    "Messages",
                    f"at most {limits.max_batch} messages per request, got {len(requests)}",
                    "Range",
                )
            )
        for i, request in enumerate(requests[: limits.max_batch]):
            for name, value in (("channel", request.channel), ("to", request.to)):
                if not value.strip():
                    violations.append(
                        FieldViolation(f"Messages[{i}].{name}", "is required", "Required")
                    )
            if not request.content:
                violations.append(
                    FieldViolation(f"Messages[{i}].content", "is required", "Required")
                )
            elif len(request.content) > limits.max_content_length:
                violations.append(
                    FieldViolation(
                        f"Messages[{i}].content",
                        f"at most {limits.max_content_length} characters, "
                        f"got {len(request.content)}",
                        "Length",
                    )
                )
            if len(request.client_message_id) > CLIENT_MESSAGE_ID_MAX:
                violations.append(
                    FieldViolation(
                        f"Messages[{i}].clientMessageId",
                        f"at most {CLIENT_MESSAGE_ID_MAX} characters",
                        "Length",
                    )
                )
        if violations:
            raise validation_error(violations)

    def _accept(self, session: Session, batches: Sequence[_AcceptBatch]) -> list[list[str | None]]:
        """Group-commit handler: one transaction for many requests. A message whose
        clientMessageId exists already gets the earlier id (or None when its content differs)."""
        now = self._clock.now()
        rows: list[dict[str, Any]] = []
        results: list[list[str | None]] = []
        for batch in batches:
            keys = [c.request.client_message_id for c in batch.candidates]
            known: dict[str, tuple[str, str, str, str]] = {}
            if any(keys):
                existing = self._repository.find_by_client_ids(
                    session, batch.org_id, [k for k in keys if k]
                )
                known = {
                    key: (r["id"], r["channel"], r["destination"], r["content"])
                    for key, r in existing.items()
                }
            ids: list[str | None] = []
            for candidate in batch.candidates:
                key = candidate.request.client_message_id
                fingerprint = (
                    candidate.channel.value,
                    candidate.to.e164,
                    candidate.request.content,
                )
                if key and key in known:
                    first_id, *first = known[key]
                    ids.append(first_id if tuple(first) == fingerprint else None)
                    continue
                row: dict[str, Any] = {
                    "id": new_id("sms_"),
                    "org_id": batch.org_id,
                    "client_message_id": key or None,
                    "channel": candidate.channel.value,
                    "destination": candidate.to.e164,
                    "destination_type": candidate.to.type,
                    "content": candidate.request.content,
                    "segments": segment_count(candidate.request.content),
                    "status": SmsStatus.ACCEPTED.value,
                    "error": None,
                    "provider_message_id": None,
                    "attempts": 0,
                    "lease_until": None,
                    "created_at": now,
                    "updated_at": now,
                }
                if key:
                    known[key] = (row["id"], *fingerprint)
                rows.append(row)
                ids.append(row["id"])
            results.append(ids)
        self._repository.insert_many(session, [r for r in rows if not r["client_message_id"]])
        keyed = [r for r in rows if r["client_message_id"]]
        inserted = self._repository.insert_unless_key_taken(session, keyed)
        # Another replica may have committed the same key since we looked: its message stands.
        replaced = self._resolve_lost_races(session, [r for r in keyed if r["id"] not in inserted])
        if replaced:
            rows = [r for r in rows if r["id"] not in replaced]
            results = [[replaced.get(i, i) if i else i for i in ids] for ids in results]
        self._events.append(session, [status_event(r) for r in rows])
        queue.enqueue(session, [_queue_row(r) for r in rows])
        return results

    def _resolve_lost_races(self, session: Session, lost: Sequence[Row]) -> dict[str, str | None]:
        """For keyed rows not inserted: the winner's id, or None when it says something else."""
        winners: dict[str, str | None] = {}
        for org_id in {row["org_id"] for row in lost}:
            mine = [row for row in lost if row["org_id"] == org_id]
            existing = self._repository.find_by_client_ids(
                session, org_id, [row["client_message_id"] for row in mine]
            )
            for row in mine:
                winner = existing[row["client_message_id"]]
                same = all(winner[k] == row[k] for k in ("channel", "destination", "content"))
                winners[row["id"]] = winner["id"] if same else None
        return winners

    async def get(self, org_id: str, api_message_id: str) -> Row:
        async with self._db.read() as session:
            record = await self._repository.get(session, org_id, api_message_id)
        if record is None:
            raise NotFound(f"no SMS message {api_message_id!r}")
        return record

    async def follow(
        self,
        org_id: str,
        *,
        after: str,
        api_message_ids: Sequence[str],
        states: Sequence[str],
        heartbeat_seconds: int,
        types: Sequence[str] = (),
        started: Callable[[tuple[()]], Awaitable[object]] | None = None,
    ) -> AsyncIterator[EventRecord | Heartbeat]:
        """The one stream contract's filters (README "Streams: one contract"): an event passes
        when it is about one of `api_message_ids`, matches one of `types` and enters one of
        `states` (each empty: any). Family C names the fields in camelCase."""
        checks = Checks()
        exact, prefixes = streams.type_patterns(types, SMS_EVENT_PREFIXES, checks)
        wanted = streams.states(states, SmsStatus, checks)
        streams.id_list(api_message_ids, checks, "apiMessageIds")
        if heartbeat_seconds and not 1 <= heartbeat_seconds <= 300:
            checks.fail("heartbeatSeconds", "must be between 1 and 300", "Range")
        checks.raise_if_failed()
        cursor = await self._feed.start_cursor(after)
        # An SMS event's type is its state's (`sms.delivered`): states alone narrow the log's read.
        state_types = frozenset(SmsStatus(s).event_type for s in wanted)
        if state_types and not types:
            exact, prefixes = sorted(state_types), ()
        async for item in self._feed.follow(
            org_id=org_id,
            after=cursor,
            types=exact,
            type_prefixes=prefixes,
            resource_ids=api_message_ids,
            heartbeat_seconds=heartbeat_seconds or 15,
            started=started,
        ):
            if state_types and isinstance(item, EventRecord) and item.type not in state_types:
                continue
            yield item


def _queue_row(row: Row) -> dict[str, Any]:
    """The delivery queue's row for an accepted message: its channel is its route."""
    country, zones = country_and_zones(row["destination"])
    return {
        "id": row["id"],
        "kind": QueueKind.SMS.value,
        "org_id": row["org_id"],
        "channel": "sms",
        "route": row["channel"],
        "destination": row["destination"],
        "country": country,
        "zones": zones,
        "priority": Priority.NORMAL,
        "due_at": row["created_at"],
        "created_at": row["created_at"],
    }


def _parse_channel(raw: str) -> Channel | None:
    try:
        return Channel(raw.strip().lower())
    except ValueError:
        return None
