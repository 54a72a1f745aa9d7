"""Messages: one per recipient of a message request (MT), or one per received message (MO).

Messages are read-only to customers but for state changes (POST with `state`):
MO: PROCESSED (from RECEIVED) or DELETED (from any state); MT: CONVERTED (from CREATED, SENT,
DELIVERED, READ, CANCELED, SCHEDULED or PAUSED, with `converted_date` and
`conversion_info_source`) or DELETED (from any state). DELETE is the same as state DELETED (a
soft delete: the message stays readable). An illegal change is 400 naming the allowed ones.

The counters of a message request are aggregates of its messages (`counters`); every change moves
them by its delta (`counter_deltas`) in the same transaction, so they are always true.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    require_version,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.messaging.requests.models import Direction, MessageRecord, MessageState


class CustomerState(StrEnum):
    """The states a customer may set."""

    PROCESSED = "PROCESSED"
    CONVERTED = "CONVERTED"
    DELETED = "DELETED"


CONVERTIBLE = frozenset(
    {
        MessageState.CREATED,
        MessageState.SENT,
        MessageState.DELIVERED,
        MessageState.READ,
        MessageState.CANCELED,
        MessageState.SCHEDULED,
        MessageState.PAUSED,
    }
)
# Messages whose end user can have clicked a tracked link: they went out.
CLICKABLE = (MessageState.SENT.value, MessageState.DELIVERED.value, MessageState.READ.value)
# Messages still waiting to go out: canceling their request cancels them.
UNSENT = (MessageState.CREATED.value, MessageState.SCHEDULED.value, MessageState.PAUSED.value)


messages_table = table_of(MessageRecord)
_m = messages_table.c

FILTER_COLUMNS = {
    "sent_date": "sent_at",
    "delivered_date": "delivered_at",
    "converted_date": "converted_at",
    "scheduled_delivery_time": "scheduled_at",
    "expiry_time": "expires_at",
}
FILTER_TIMES = frozenset(
    {
        "sent_date",
        "delivered_date",
        "converted_date",
        "scheduled_delivery_time",
        "expiry_time",
        "created_date",
        "last_updated_date",
    }
)
NOT_ALLOWED = (
    "Not allowed: messages are created by message requests; "
    "send with POST /messaging/message_requests"
)
NOT_ALLOWED_ATTACHMENTS = (
    "Not allowed: a message's attachments are those named in its message request's "
    "`attachments`; create attachments with POST /messaging/attachments"
)


def snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "message_request_id": row["message_request_id"] or "",
        "external_transaction_ids": [x for x in row["external_transaction_ids"].split(",") if x],
        "external_message_request_id": row["external_message_request_id"],
        "conversation_id": row["conversation_id"],
        "campaign_id": row["campaign_id"],
        "direction": row["direction"],
        "customer_sender_id": row["customer_sender_id"],
        "from_address": row["from_address"],
        "to_address": row["to_address"],
        "state": row["state"],
        "failure_code": row["failure_code"],
        "failure_details": row["failure_details"],
        "subject": row["subject"],
        "body": row["body"],
        "sent_date": iso(row["sent_at"]),
        "delivered_date": iso(row["delivered_at"]),
        "converted_date": iso(row["converted_at"]),
        "conversion_info_source": row["conversion_info_source"],
        "reply_to": row["reply_to"],
        "attachments": [x for x in row["attachments"].split(",") if x],
        "scheduled_delivery_time": iso(row["scheduled_at"]),
        "expiry_time": iso(row["expires_at"]),
        "type": row["type"],
        "message_delivery_provider": row["message_delivery_provider"],
        "contact_id": row["contact_id"],
        "price": row["price"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
        "language": row["language"],
        "failed_translation": row["failed_translation"],
    }


def counters(session: Session, request_id: str) -> dict[str, int]:
    """The counters of a message request, aggregated from its messages."""

    def count_in(*states: MessageState) -> Any:
        return func.coalesce(
            func.sum(case((_m.state.in_([s.value for s in states]), 1), else_=0)), 0
        )

    query = select(
        func.count(),
        func.count(_m.sent_at),
        func.count(_m.delivered_at),
        count_in(MessageState.READ),
        func.count(_m.converted_at),
        count_in(MessageState.CANCELED),
        count_in(MessageState.FAILED, MessageState.EXPIRED),
    ).where(_m.message_request_id == request_id)
    row = session.execute(query).one()
    return {name: int(value or 0) for name, value in zip(COUNTER_NAMES, row, strict=True)}


COUNTER_NAMES = (
    "recipient_count",
    "sent_count",
    "delivered_count",
    "read_count",
    "converted_count",
    "canceled_count",
    "failed_count",
)


def contribution(row: Row) -> tuple[int, ...]:
    """What one message adds to its request's counters (in COUNTER_NAMES order): the same rules
    as `counters`, for one row."""
    state = row["state"]
    return (
        1,
        int(row["sent_at"] is not None),
        int(row["delivered_at"] is not None),
        int(state == MessageState.READ.value),
        int(row["converted_at"] is not None),
        int(state == MessageState.CANCELED.value),
        int(state in (MessageState.FAILED.value, MessageState.EXPIRED.value)),
    )


def counter_deltas(before: Iterable[Row], after: Iterable[Row]) -> dict[str, dict[str, int]]:
    """Per request, how its counters move when messages change from `before` to `after`."""
    old = {r["id"]: r for r in before}
    deltas: dict[str, list[int]] = {}
    for row in after:
        request_id = row["message_request_id"]
        if not request_id or row["id"] not in old:
            continue
        change = deltas.setdefault(request_id, [0] * len(COUNTER_NAMES))
        for i, (new, was) in enumerate(
            zip(contribution(row), contribution(old[row["id"]]), strict=True)
        ):
            change[i] += new - was
    return {
        request_id: {n: d for n, d in zip(COUNTER_NAMES, change, strict=True) if d}
        for request_id, change in deltas.items()
    }


def message_events(rows: Iterable[Row], what: str, now: datetime) -> list[NewEvent]:
    return [NewEvent(r["org_id"], f"message.{what}", r["id"], snapshot(r), now) for r in rows]


class MessageService:
    def __init__(self, *, db: Database, events: EventLog, clock: Clock) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self.rows = OrgTable(
            db=db,
            events=events,
            table=messages_table,
            noun="message",
            event_prefix="message",
            snapshot=snapshot,
            unique_message="message already exists",
        )
        # set by MessageRequestService: keeps a request's counters true after a change
        self.on_request_changed: Any = None

    async def get(self, org_id: str, message_id: str) -> Snapshot:
        return await self.rows.get(org_id, message_id)

    async def list_page(
        self,
        org_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
        *,
        request_id: str | None = None,
    ) -> tuple[list[Snapshot], str]:
        extra: list[Any] = [] if request_id is None else [_m.message_request_id == request_id]
        given = dict(given)
        if "price" in given:
            try:
                extra.append(_m.price == float(given.pop("price")))
            except ValueError:
                checks.fail("price", "must be a number", "Format")
        return await self.rows.list_page(
            org_id,
            given,
            page,
            checks,
            columns=FILTER_COLUMNS,
            times=FILTER_TIMES,
            extra=tuple(extra),
        )

    async def attachment_ids(self, org_id: str, message_id: str) -> list[str]:
        message = await self.get(org_id, message_id)
        return list(message["attachments"])

    async def change_state(
        self,
        org_id: str,
        message_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
    ) -> None:
        checks = Checks()
        state_text = values.get("state")
        # Absent, empty or blank alike: the request says nothing to do.
        target = (
            checks.choice("state", str(state_text), CustomerState)
            if checks.required("state", state_text)
            else None
        )
        converted_at: datetime | None = None
        if values.get("converted_date"):
            converted_at = listing.parse_instant(str(values["converted_date"]))
            if converted_at is None:
                checks.fail("converted_date", "must be an RFC 3339 time", "Format")
        source = str(values.get("conversion_info_source") or "")
        checks.length("conversion_info_source", source, 128)
        if target is not None and target != CustomerState.CONVERTED:
            for name in ("converted_date", "conversion_info_source"):
                if values.get(name):
                    checks.fail(name, "is only given with state CONVERTED")
        checks.raise_if_failed()
        assert target is not None
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, message_id)
            require_version(current["version"], expected_version, "message")
            _require_transition(current, target)
            changes: dict[str, Any] = {"state": target.value}
            if target == CustomerState.CONVERTED:
                changes["converted_at"] = converted_at or now
                changes["conversion_info_source"] = source
            self.apply(session, [current], changes, now, target.value.lower())

        await self._db.run_write(work)

    async def delete(self, org_id: str, message_id: str) -> None:
        await self.change_state(org_id, message_id, {"state": "DELETED"}, None)

    def apply(
        self,
        session: Session,
        rows: Sequence[Row],
        changes: Mapping[str, Any],
        now: datetime,
        what: str,
        per_row: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[Row]:
        """Write `changes` (plus each row's `per_row` values) to `rows`, event each, and recount
        their requests once."""
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        written: list[Row] = []
        if per_row:
            for item_id in ids:
                statement = (
                    update(messages_table)
                    .where(_m.id == item_id)
                    .values(
                        **changes,
                        **per_row.get(item_id, {}),
                        updated_at=now,
                        version=_m.version + 1,
                    )
                    .returning(*messages_table.c)
                )
                written.extend(session.execute(statement).mappings().all())
        else:
            for start in range(0, len(ids), 500):
                statement = (
                    update(messages_table)
                    .where(_m.id.in_(ids[start : start + 500]))
                    .values(**changes, updated_at=now, version=_m.version + 1)
                    .returning(*messages_table.c)
                )
                written.extend(session.execute(statement).mappings().all())
        self._events.append(session, message_events(written, what, now))
        # Counters move by what changed, not by a recount of every message of the request:
        # a large send dispatched in batches would otherwise recount it once per batch.
        deltas = counter_deltas(rows, written)
        requests = {r["message_request_id"] for r in written if r["message_request_id"]}
        if self.on_request_changed is not None:
            for request_id in sorted(requests):
                self.on_request_changed(session, request_id, now, deltas.get(request_id, {}))
        return written

    def convert_by_click(
        self, session: Session, org_id: str, message_id: str, now: datetime
    ) -> None:
        """A tracked link of the message was clicked: its first click makes a sent message
        CONVERTED (`conversion_info_source` URL, `converted_date` now), counted on its request;
        later clicks change nothing."""
        query = select(messages_table).where(
            _m.org_id == org_id,
            _m.id == message_id,
            _m.state.in_(CLICKABLE),
            _m.converted_at.is_(None),
        )
        rows = list(session.execute(query).mappings())
        changes = {
            "state": MessageState.CONVERTED.value,
            "converted_at": now,
            "conversion_info_source": "URL",
        }
        self.apply(session, rows, changes, now, "converted")

    async def mark_read(self, message_ids: Sequence[str]) -> None:
        """Read receipts (WhatsApp): SENT or DELIVERED messages among `message_ids` become READ,
        counted on their requests; ids of other APIs' messages are ignored."""
        if not message_ids:
            return
        now = self._clock.now()

        def work(session: Session) -> None:
            query = select(messages_table).where(
                _m.id.in_(list(message_ids)),
                _m.state.in_([MessageState.SENT.value, MessageState.DELIVERED.value]),
            )
            rows = list(session.execute(query).mappings())
            changes = {"state": MessageState.READ.value}
            self.apply(session, rows, changes, now, "read")

        await self._db.run_write(work)

    async def record_inbound(
        self,
        org_id: str,
        *,
        from_address: str,
        to_address: str,
        body: str,
        customer_sender_id: str = "",
        reply_to: str = "",
    ) -> str:
        """An MO message as received, in a transaction of its own."""
        now = self._clock.now()

        def work(session: Session) -> str:
            written = self.insert_inbound(
                session,
                org_id,
                from_address=from_address,
                to_address=to_address,
                body=body,
                customer_sender_id=customer_sender_id,
                reply_to=reply_to,
                now=now,
            )
            return str(written["id"])

        return await self._db.run_write(work)

    def insert_inbound(
        self,
        session: Session,
        org_id: str,
        *,
        from_address: str,
        to_address: str,
        body: str,
        now: datetime,
        customer_sender_id: str = "",
        reply_to: str = "",
    ) -> Row:
        """An MO message (RECEIVED, with its event) in the caller's transaction."""
        row = {
            "id": new_id("msg_"),
            "org_id": org_id,
            "direction": Direction.MO.value,
            "from_address": from_address,
            "to_address": to_address,
            "body": body[:8192],
            "customer_sender_id": customer_sender_id,
            "reply_to": reply_to,
            "state": MessageState.RECEIVED.value,
            "created_at": now,
            "updated_at": now,
        }
        statement = messages_table.insert().values(row).returning(*messages_table.c)
        written = session.execute(statement).mappings().one()
        self._events.append(session, message_events([written], "received", now))
        return written

    def insert_reply(self, session: Session, mo: Row, body: str, now: datetime) -> Row:
        """An MT answer to `mo` (an auto-reply), CREATED, with its event."""
        row = {
            "id": new_id("msg_"),
            "org_id": mo["org_id"],
            "direction": Direction.MT.value,
            "customer_sender_id": mo["customer_sender_id"],
            "from_address": mo["to_address"],
            "to_address": mo["from_address"],
            "reply_to": mo["id"],
            "body": body[:8192],
            "state": MessageState.CREATED.value,
            "created_at": now,
            "updated_at": now,
        }
        statement = messages_table.insert().values(row).returning(*messages_table.c)
        written = session.execute(statement).mappings().one()
        self._events.append(session, message_events([written], "created", now))
        return written


def _require_transition(current: Row, target: CustomerState) -> None:
    state = current["state"]
    if target == CustomerState.DELETED:
        return
    if current["direction"] == Direction.MO.value:
        if target == CustomerState.PROCESSED and state == MessageState.RECEIVED.value:
            return
        allowed = "PROCESSED (from RECEIVED) or DELETED"
    else:
        if target == CustomerState.CONVERTED and state in CONVERTIBLE:
            return
        allowed = (
            "CONVERTED (from CREATED, SENT, DELIVERED, READ, CANCELED, SCHEDULED or PAUSED) "
            "or DELETED"
        )
    raise InvalidArgument(
        f"a {current['direction']} message in state {state} cannot become {target.value}; "
        f"allowed: {allowed}",
        violations=[FieldViolation("state", f"cannot change from {state} to {target.value}")],
    )


def not_allowed(message: str) -> PermissionDenied:
    return PermissionDenied(message)


def require_found(row: Row | None, noun: str, item_id: str) -> Row:
    if row is None:
        raise NotFound(f"{noun} {item_id!r} not found")
    return row
