"""Fan-out of a message request into one Message per recipient, batch by batch.

The targets are expanded in order: first every direct address and contact of `to` (stage 0),
then each contact group of `to` (one stage each: its members by the group's own SQL, STATIC
membership or DYNAMIC criteria), then the request's `criteria` (last stage). Contacts are read
in keyset order (`id > last id`), `batch` at a time, so memory never grows with a group. A
contact's address is its primary MDN when the request's senders include an SMS sender, else its
primary email when they include an email sender; contacts with neither are not recipients.

Each batch is one transaction: the messages (consent decided per recipient: a refused one is
FAILED with NO_CONSENT), the request's resume point (`fanout_stage`, `fanout_after`), its counters
(raised by the batch's messages that went in) and a `message_request.progress` event
commit together, guarded by the request's version, so a restarted or lost worker never creates
a message twice or skips one (and a unique index on (request, to_address) also drops
duplicates, e.g. a contact in two groups).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from switchboard.server.communications.short_urls import (
    LINK_CODE_LENGTH,
    NewShortUrl,
    ShortUrlService,
    random_code,
)
from switchboard.server.contacts.consent import ConsentDecision, ConsentService
from switchboard.server.contacts.directory import ContactAddresses
from switchboard.server.contacts.models import AddressType
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventLog
from switchboard.server.core.ids import new_id
from switchboard.server.core.types import Row
from switchboard.server.delivery import queue
from switchboard.server.delivery.models import Priority, QueueKind, QueueState
from switchboard.server.delivery.recipients import country_and_zones
from switchboard.server.messaging.requests import tracking
from switchboard.server.messaging.requests.ledger import WAITING
from switchboard.server.messaging.requests.message_requests import (
    MessageRequestService,
    Target,
    request_event,
    requests_table,
)
from switchboard.server.messaging.requests.messages import messages_table
from switchboard.server.messaging.requests.models import (
    Direction,
    FailureCode,
    MessageState,
    RequestState,
)
from switchboard.server.messaging.senders.rates import Rates
from switchboard.server.messaging.senders.reference import types
from switchboard.server.messaging.senders.service import Sender, SenderService
from switchboard.server.telephony.phone import zones_for_number

_r = requests_table.c
_m = messages_table.c
EMAIL_TYPES = ("email",)


class ContactReader(Protocol):
    """What the fan-out reads of contacts (contacts' ContactDirectory): direct contacts by id,
    and a group's members or a criteria's matches a page at a time, in id order."""

    async def addresses(
        self, org_id: str, contact_ids: Sequence[str]
    ) -> Mapping[str, ContactAddresses]: ...

    async def group_page(
        self, org_id: str, group_id: str, after: str, limit: int
    ) -> Sequence[ContactAddresses] | None: ...

    async def criteria_page(
        self, org_id: str, criteria: str, after: str, limit: int
    ) -> Sequence[ContactAddresses]: ...


class FanoutLost(Exception):
    """The request changed under the worker (canceled, deleted, taken over)."""


class FanoutRejected(Exception):
    """The request cannot be prepared (e.g. its senders are no longer ACTIVE)."""


@dataclass(frozen=True)
class Recipient:
    address: str
    address_type: AddressType
    contact_id: str = ""
    time_zone: str = ""  # the contact's IANA zone, when it has one


@dataclass
class Plan:
    """What a batch needs from the request, computed once per claim."""

    request: Row
    targets: list[Target]
    # The ACTIVE senders of each kind, in the channel's order (one for a direct sender).
    sms_senders: list[Sender]
    email_senders: list[Sender]
    gateways: dict[str, str]  # sender type → gateway id (the delivery route)
    rates: Rates | None = None

    @property
    def sms_sender(self) -> Sender | None:
        return self.sms_senders[0] if self.sms_senders else None

    @property
    def email_sender(self) -> Sender | None:
        return self.email_senders[0] if self.email_senders else None

    @property
    def stages(self) -> int:
        groups_count = sum(1 for t in self.targets if t.kind == "group")
        return 1 + groups_count + (1 if self.request["criteria"] else 0)

    def route(self, sender: Sender, email: bool) -> str:
        return self.gateways.get(sender.type_id) or ("smtp-default" if email else "sms-default")

    def senders_for(self, recipient: Recipient) -> list[Sender]:
        """The senders that may reach `recipient`, best first by the request's
        `sender_id_sort_criteria`: DELIVERY_ADDRESS prefers a sender in the recipient's country,
        PRICE the cheapest route there; ties keep the channel's order. The first sends, the
        others are the engine's failovers."""
        email = recipient.address_type == AddressType.EMAIL
        candidates = self.email_senders if email else self.sms_senders
        criteria = [c for c in self.request["sender_id_sort_criteria"].split(",") if c]
        if len(candidates) < 2 or not criteria:
            return candidates
        country = "" if email else country_and_zones(recipient.address)[0]
        channel = "email" if email else "sms"

        def key(sender: Sender) -> tuple[float, ...]:
            keys: list[float] = []
            for criterion in criteria:
                if criterion == "DELIVERY_ADDRESS":
                    keys.append(0 if country and sender.country == country else 1)
                elif criterion == "PRICE" and self.rates is not None:
                    keys.append(self.rates.rate(channel, country, self.route(sender, email)))
            return tuple(keys)

        return sorted(candidates, key=key)


def _is_email(sender: Sender) -> bool:
    return sender.type_id in EMAIL_TYPES or sender.type_id.startswith("email")


class Fanout:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        senders: SenderService,
        consent: ConsentService,
        contacts: ContactReader,
        requests: MessageRequestService,
        short_urls: ShortUrlService | None = None,
        rates: Rates | None = None,
        batch: int = 1000,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._senders = senders
        self._consent = consent
        self._contacts = contacts
        self._requests = requests
        self._short_urls = short_urls
        self._rates = rates
        self.batch = max(1, batch)

    async def plan(self, request: Row) -> Plan:
        try:
            senders = await self._senders.resolve_sendable(request["org_id"], request["from_ref"])
        except Exception as exc:  # NotFound: the sender or channel was deleted
            raise FanoutRejected(str(exc)) from exc
        if not senders:
            raise FanoutRejected(f"{request['from_ref']!r} has no ACTIVE sender ID any more")
        async with self._db.read() as session:
            gateways = dict((await session.execute(select(types.c.id, types.c.gateway_id))).all())
        targets = [Target(**t) for t in json.loads(request["targets"])]
        return Plan(
            request,
            targets,
            [s for s in senders if not _is_email(s)],
            [s for s in senders if _is_email(s)],
            {str(k): str(v) for k, v in gateways.items()},
            self._rates,
        )

    # -- reading a batch -------------------------------------------------------------------------

    async def read_batch(self, plan: Plan) -> tuple[list[Recipient], int, str, bool]:
        """The next recipients from the request's resume point: (recipients, stage, last
        contact id, whether the fan-out is done after them)."""
        request = plan.request
        stage, after = request["fanout_stage"], request["fanout_after"]
        while stage < plan.stages:
            if stage == 0:
                recipients = await self._direct(plan)
                return recipients, 1, "", plan.stages == 1
            contacts = await self._stage_page(plan, stage, after)
            if contacts is None:
                stage, after = stage + 1, ""
                continue
            recipients = [r for r in (self._pick(plan, c) for c in contacts) if r is not None]
            if len(contacts) < self.batch:
                return recipients, stage + 1, "", stage + 1 >= plan.stages
            return recipients, stage, str(contacts[-1].id), False
        return [], stage, "", True

    async def _stage_page(
        self, plan: Plan, stage: int, after: str
    ) -> Sequence[ContactAddresses] | None:
        """The stage's next contacts after `after`: a group's members (None for a deleted
        group: no one), or those matching the request's criteria."""
        org_id = plan.request["org_id"]
        group_targets = [t for t in plan.targets if t.kind == "group"]
        if stage - 1 < len(group_targets):
            group_id = group_targets[stage - 1].value
            return await self._contacts.group_page(org_id, group_id, after, self.batch)
        return await self._contacts.criteria_page(
            org_id, plan.request["criteria"], after, self.batch
        )

    async def _direct(self, plan: Plan) -> list[Recipient]:
        recipients: list[Recipient] = []
        contact_ids = [t.value for t in plan.targets if t.kind == "contact"]
        for target in plan.targets:
            if target.kind == "address":
                recipients.append(Recipient(target.value, AddressType(target.address_type)))
        if contact_ids:
            rows = await self._contacts.addresses(plan.request["org_id"], contact_ids)
            for contact_id in contact_ids:
                if contact_id in rows:
                    picked = self._pick(plan, rows[contact_id])
                    if picked is not None:
                        recipients.append(picked)
        return recipients

    def _pick(self, plan: Plan, contact: ContactAddresses) -> Recipient | None:
        if plan.sms_sender is not None and contact.primary_mdn:
            return Recipient(contact.primary_mdn, AddressType.MDN, contact.id, contact.time_zone)
        if plan.email_sender is not None and contact.primary_email_addr:
            return Recipient(
                contact.primary_email_addr, AddressType.EMAIL, contact.id, contact.time_zone
            )
        return None

    async def decisions(
        self, plan: Plan, recipients: list[Recipient]
    ) -> dict[tuple[str, str], ConsentDecision]:
        """Consent per recipient, asked of the sender that will send to it (consent can be
        given per sender)."""
        out: dict[tuple[str, str], ConsentDecision] = {}
        by_sender: dict[tuple[str, AddressType], list[str]] = {}
        for recipient in recipients:
            chosen = plan.senders_for(recipient)
            if chosen:
                key = (chosen[0].id, recipient.address_type)
                by_sender.setdefault(key, []).append(recipient.address)
        for (sender_id, kind), addresses in by_sender.items():
            found = await self._consent.may_send_many(
                plan.request["org_id"],
                sender_id,
                kind,
                addresses,
                plan.request["consent_requirement"],
            )
            out.update({(kind.value, a): d for a, d in found.items()})
        return out

    # -- writing a batch -------------------------------------------------------------------------

    def message_rows(
        self,
        plan: Plan,
        recipients: list[Recipient],
        decisions: dict[tuple[str, str], ConsentDecision],
        now: datetime,
    ) -> list[dict[str, Any]]:
        request = plan.request
        if request["test_message_flag"]:
            state = MessageState.TEST
        elif request["pause_before_transmit"]:
            state = MessageState.PAUSED
        else:
            state = MessageState.CREATED
        rows = []
        for recipient in recipients:
            scheduled_at = _scheduled_for(request, recipient)
            chosen = plan.senders_for(recipient)
            sender = chosen[0] if chosen else None
            row: dict[str, Any] = {
                "id": new_id("msg_"),
                "org_id": request["org_id"],
                "message_request_id": request["id"],
                "external_message_request_id": request["external_id"],
                "conversation_id": request["conversation_id"],
                "campaign_id": request["campaign_id"],
                "direction": Direction.MT.value,
                "customer_sender_id": sender.id if sender else "",
                "from_address": sender.address if sender else "",
                "to_address": recipient.address,
                "state": (
                    MessageState.SCHEDULED.value
                    if state == MessageState.CREATED
                    and scheduled_at is not None
                    and scheduled_at > now
                    else state.value
                ),
                "failure_code": "",
                "failure_details": "",
                "subject": request["subject"],
                "body": request["body"],
                "attachments": request["attachments"],
                "scheduled_at": scheduled_at,
                "expires_at": request["expires_at"],
                "type": _type(recipient, request),
                "contact_id": recipient.contact_id,
                "application_id": request["application_id"],
                "language": request["dst_language"],
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            decision = decisions.get((recipient.address_type.value, recipient.address))
            if sender is None:
                row["state"] = MessageState.FAILED.value
                row["failure_code"] = FailureCode.INVALID_RECIPIENT.value
                row["failure_details"] = "no sender of the request reaches this address"
            elif decision is not None and not decision.allowed:
                row["state"] = MessageState.FAILED.value
                row["failure_code"] = FailureCode.NO_CONSENT.value
                row["failure_details"] = decision.reason
            rows.append(row)
        return rows

    def track(self, plan: Plan, rows: list[dict[str, Any]]) -> list[NewShortUrl]:
        """With `track_links`: each message to be sent gets its own short link for every URL of
        its body (the body is rewritten in place); returns the links to store with them."""
        if not plan.request["track_links"] or self._short_urls is None:
            return []
        links: list[NewShortUrl] = []
        for row in rows:
            if row["state"] not in _QUEUED_STATES:
                continue

            def shorten(url: str, message_id: str = row["id"]) -> str:
                assert self._short_urls is not None
                code = random_code(LINK_CODE_LENGTH)
                links.append(NewShortUrl(code, url, message_id=message_id))
                return self._short_urls.link(code)

            row["body"] = tracking.personalise(row["body"], shorten)
        return links

    def queue_rows(
        self, plan: Plan, rows: list[dict[str, Any]], recipients: list[Recipient]
    ) -> list[dict[str, Any]]:
        """The delivery queue's rows (HELD until the request transmits) for the messages that
        will go out: not TEST, not already FAILED. `rows` are `message_rows(recipients)`."""
        queued = []
        for row, recipient in zip(rows, recipients, strict=True):
            if row["state"] not in _QUEUED_STATES:
                continue
            email = recipient.address_type == AddressType.EMAIL
            sender, *others = plan.senders_for(recipient)  # a message without one is FAILED
            fallbacks = ",".join(f"{plan.route(s, email)}|{s.address}" for s in others)
            if email:
                country, zones = "", recipient.time_zone
            else:
                country, zones = country_and_zones(row["to_address"], time_zone=recipient.time_zone)
            queued.append(
                {
                    "id": row["id"],
                    "kind": QueueKind.MESSAGE.value,
                    "org_id": row["org_id"],
                    "channel": _channel_of(sender, email),
                    "route": plan.route(sender, email),
                    "fallback_routes": fallbacks,
                    "sender": sender.address,
                    "destination": row["to_address"],
                    "country": country,
                    "zones": zones,
                    "window": f"class:{sender.class_id}" if sender.class_id else "",
                    "class_id": sender.class_id,
                    "priority": _PRIORITIES.get(sender.priority, Priority.NORMAL),
                    "state": QueueState.HELD.value,
                    "due_at": row["scheduled_at"] or row["created_at"],
                    "expires_at": row["expires_at"],
                    "created_at": row["created_at"],
                }
            )
        return queued

    def write_batch(
        self,
        session: Session,
        request: Row,
        rows: list[dict[str, Any]],
        stage: int,
        after: str,
        now: datetime,
        lease_until: datetime | None,
        queue_rows: list[dict[str, Any]] | None = None,
        links: list[NewShortUrl] | None = None,
    ) -> Row:
        """Insert the batch's messages (and their HELD queue rows) and move the resume point;
        FanoutLost if the request is no longer this worker's."""
        values: dict[str, Any] = {}
        if rows:
            dialect = session.get_bind().dialect.name
            factory: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = factory(messages_table).on_conflict_do_nothing(
                index_elements=["message_request_id", "to_address"]
            )
            session.execute(statement, rows)
            # Preparing only adds messages: count the batch's rows that went in (a duplicate
            # address was dropped), not the whole request again.
            ids = [r["id"] for r in rows]
            failed = {r["id"] for r in rows if r["state"] == MessageState.FAILED.value}
            inserted = list(session.execute(select(_m.id).where(_m.id.in_(ids))).scalars())
            values["recipient_count"] = _r.recipient_count + len(inserted)
            values["failed_count"] = _r.failed_count + len(failed.intersection(inserted))
            kept = set(inserted)
            queue.enqueue(session, [q for q in queue_rows or [] if q["id"] in kept])
            tracked = [link for link in links or [] if link.message_id in kept]
            if tracked and self._short_urls is not None:
                self._short_urls.insert_for_communication(
                    session, request["org_id"], "message-request", tracked, now
                )
        statement = (
            update(requests_table)
            .where(
                _r.id == request["id"],
                _r.version == request["version"],
                _r.state == RequestState.PREPARING.value,
            )
            .values(
                fanout_stage=stage,
                fanout_after=after,
                lease_until=lease_until,
                updated_at=now,
                version=_r.version + 1,
                **values,
            )
            .returning(*requests_table.c)
        )
        row = session.execute(statement).mappings().one_or_none()
        if row is None:
            raise FanoutLost(request["id"])
        self._events.append(session, [request_event(row, "progress", now)])
        return row

    def finish(self, session: Session, request: Row, now: datetime) -> Row:
        """After the last batch: TRANSMITTING, PAUSED or COMPLETED."""
        if request["test_message_flag"]:
            return self._requests.transition(
                session, request, RequestState.COMPLETED, now, "completed", lease_until=None
            )
        if request["pause_before_transmit"]:
            return self._requests.transition(
                session, request, RequestState.PAUSED, now, "paused", lease_until=None
            )
        row = self._requests.transition(
            session, request, RequestState.TRANSMITTING, now, "transmitting", lease_until=None
        )
        queue.release(session, self._requests.message_ids(request["id"], WAITING))
        if not self._requests.has_unsent(session, request["id"]):
            row = self._requests.transition(session, row, RequestState.COMPLETED, now, "completed")
        return row


_QUEUED_STATES = (
    MessageState.CREATED.value,
    MessageState.SCHEDULED.value,
    MessageState.PAUSED.value,
)
_PRIORITIES = {"high": Priority.HIGH, "normal": Priority.NORMAL, "low": Priority.LOW}


def _channel_of(sender: Sender, email: bool) -> str:
    """The queue's channel: email, whatsapp (a WhatsApp sender type) or sms."""
    if email:
        return "email"
    return "whatsapp" if "WHATSAPP" in sender.capabilities else "sms"


def _type(recipient: Recipient, request: Row) -> str:
    if recipient.address_type == AddressType.EMAIL:
        return "EMAIL"
    return "MMS" if request["attachments"] else "SMS"


def _scheduled_for(request: Row, recipient: Recipient) -> datetime | None:
    """When this recipient's message is due. With zone LOCAL the requested time is a wall-clock
    time in the recipient's own zone: the contact's `time_zone`, else the number's (the first
    libphonenumber gives), else UTC."""
    scheduled: datetime | None = request["scheduled_at"]
    if scheduled is None or request["scheduled_zone"] != "LOCAL":
        return scheduled
    zone: ZoneInfo | None = None
    if recipient.time_zone:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo(recipient.time_zone)
    if zone is None and recipient.address_type == AddressType.MDN:
        zones = zones_for_number(recipient.address)
        zone = zones[0] if zones else None
    if zone is None:
        return scheduled
    wall = scheduled.astimezone(UTC).replace(tzinfo=None)
    return wall.replace(tzinfo=zone).astimezone(UTC)
