"""Message requests: an MT send to addresses, contacts, contact groups and/or criteria, fanned
out in the background into one Message per recipient (see fanout.py and
workers/message_fanout.py).

States: create validates everything it can at once (400 naming every bad field; 400 `1012` for
a body over `max_body` characters; 400 `1017` for bad criteria) and stores the request ACCEPTED
(SUBMITTED → ACCEPTED happen in the one create transaction; a request that fails validation is
never stored). The fan-out worker moves it ACCEPTED → PREPARING (recipient_count grows batch by
batch) → TRANSMITTING, or PAUSED (`pause_before_transmit`), or COMPLETED (a test request, or
nothing to send). It becomes REJECTED when it can no longer be prepared (its senders stopped
being ACTIVE). TRANSMITTING → COMPLETED when no message is left to hand to a provider.

Customers POST `{"state":"CANCELED"}` (from any non-final state: unsent messages → CANCELED) or
`{"state":"TRANSMITTING"}` (resume a PAUSED request: its PAUSED messages go out). Other attributes
are read-only after creation and ignored on that POST. DELETE cancels a non-final request first,
then sets DELETED (soft: it stays readable). Final states: COMPLETED, REJECTED, CANCELED, DELETED.

`to` entries resolve, each in this order: contact group id, contact id, E.164 phone number (or a
number parseable in the default region), email address. `from` is `sender_id:<id>`,
`sender_id-<id>`, a bare sender id, or `channel-<id>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from switchboard.server.contacts import criteria as criteria_language
from switchboard.server.contacts.consent import (
    ConsentRequirement,
    InvalidAddress,
    normalise_address,
)
from switchboard.server.contacts.directory import KnownIds
from switchboard.server.contacts.models import AddressType
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    require_version,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.delivery import queue
from switchboard.server.messaging.content.attachments import AttachmentService
from switchboard.server.messaging.content.message_templates import (
    Designation,
    MessageTemplateService,
    body_allowed,
    render,
    templates_table,
)
from switchboard.server.messaging.requests import tracking
from switchboard.server.messaging.requests.messages import (
    UNSENT,
    MessageService,
    counters,
    messages_table,
)
from switchboard.server.messaging.requests.models import (
    MessageRequestRecord,
    MessageState,
    RequestState,
    TimeZoneMode,
)
from switchboard.server.messaging.senders.models import SenderIdTypeRecord
from switchboard.server.messaging.senders.reference import mime_allowed
from switchboard.server.messaging.senders.service import Sender, SenderService

_types = table_of(SenderIdTypeRecord)

DEFAULT_MAX_BODY = 1600  # characters after template rendering (ten concatenated SMS)
MAX_TO_ENTRIES = 1000
PAUSE_LIMIT = timedelta(hours=24)


FINAL = frozenset(
    {
        RequestState.COMPLETED.value,
        RequestState.REJECTED.value,
        RequestState.CANCELED.value,
        RequestState.DELETED.value,
    }
)


class CustomerRequestState(StrEnum):
    CANCELED = "CANCELED"
    TRANSMITTING = "TRANSMITTING"


requests_table = table_of(MessageRequestRecord)
_r = requests_table.c

_FILTER_COLUMNS = {
    "from": "from_ref",
    "scheduled_delivery_time": "scheduled_at",
    "expiry_time": "expires_at",
    "pause_expiry_time": "pause_expires_at",
}
_FILTER_TIMES = frozenset(
    {
        "scheduled_delivery_time",
        "expiry_time",
        "pause_expiry_time",
        "created_date",
        "last_updated_date",
    }
)
LIMITS = {
    "from": 128,
    "conversation_id": 128,
    "campaign_id": 128,
    "program_id": 128,
    "subject": 256,
    "external_id": 128,
    "src_language": 35,
    "dst_language": 35,
    "content_type": 128,
    "template_id": 128,
}
_SPLIT = re.compile(r"[;,]")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", ""}


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "from": row["from_ref"],
        "conversation_id": row["conversation_id"],
        "to": [x for x in row["to_text"].split(";") if x],
        "campaign_id": row["campaign_id"],
        "program_id": row["program_id"],
        "subject": row["subject"],
        "application_id": row["application_id"],
        "external_id": row["external_id"],
        "state": row["state"],
        "attachments": _csv(row["attachments"]),
        "body": row["body"],
        "consent_requirement": row["consent_requirement"],
        "criteria": row["criteria"],
        "recipient_count": row["recipient_count"],
        "sent_count": row["sent_count"],
        "delivered_count": row["delivered_count"],
        "read_count": row["read_count"],
        "converted_count": row["converted_count"],
        "canceled_count": row["canceled_count"],
        "failed_count": row["failed_count"],
        "scheduled_delivery_time": iso(row["scheduled_at"]),
        "scheduled_delivery_time_zone": row["scheduled_zone"],
        "expiry_time": iso(row["expires_at"]),
        "test_message_flag": row["test_message_flag"],
        "pause_before_transmit": row["pause_before_transmit"],
        "pause_expiry_time": iso(row["pause_expires_at"]),
        "price_threshold": row["price_threshold"],
        "sender_id_sort_criteria": _csv(row["sender_id_sort_criteria"]),
        "contact_delivery_address_priority": _csv(row["contact_delivery_address_priority"]),
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
        "src_language": row["src_language"],
        "dst_language": row["dst_language"],
        "translate": row["translate"],
        "track_links": row["track_links"],
        "translations_count": 0,
        "translations_failed_count": 0,
        "translations_performed_count": 0,
        "content_type": row["content_type"],
        "template_id": row["template_id"],
    }


def request_event(row: Row, what: str, now: datetime) -> NewEvent:
    return NewEvent(row["org_id"], f"message_request.{what}", row["id"], snapshot(row), now)


@dataclass(frozen=True)
class Target:
    """One resolved `to` entry: kind is `address` (value an E.164 number or email), `contact`
    or `group` (value the id)."""

    kind: str
    value: str
    address_type: str = ""


def split_entries(values: Sequence[str]) -> list[str]:
    """`to` as entries: arrays and `;`/`,`-separated strings, blanks dropped, order kept."""
    entries: list[str] = []
    for value in values:
        entries.extend(part.strip() for part in _SPLIT.split(value) if part.strip())
    return list(dict.fromkeys(entries))


def _flag(checks: Checks, field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        checks.fail(field, "must be true or false", "Format")
    return False


def _time(checks: Checks, field: str, value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = listing.parse_instant(str(value))
    if parsed is None:
        checks.fail(field, "must be an RFC 3339 time", "Format")
    return parsed


@dataclass(frozen=True)
class NewRequest:
    """A create's input, parsed and checked: everything that needs no database. `entries` are
    the `to` entries as given (resolved later), `criteria` the normalised criteria text."""

    from_ref: str
    entries: tuple[str, ...]
    criteria: str
    body: str
    template_ref: str
    template_values: Mapping[str, str]
    requirement: ConsentRequirement
    zone: TimeZoneMode
    scheduled_at: datetime | None
    expires_at: datetime | None
    test: bool
    pause: bool
    pause_expires_at: datetime | None
    translate: bool
    track_links: bool
    attachment_ids: tuple[str, ...]
    sort_criteria: tuple[str, ...]
    priorities: tuple[str, ...]
    conversation_id: str
    campaign_id: str
    program_id: str
    subject: str
    external_id: str
    price_threshold: int
    src_language: str
    dst_language: str
    content_type: str


def _parse(values: Mapping[str, Any], now: datetime) -> NewRequest:
    """A create's values as a NewRequest: 400 naming every bad field (in the order they are
    checked), then 400 `1017` for bad criteria."""
    checks = Checks()
    checks.lengths(dict(values), LIMITS)
    from_ref = str(values.get("from") or "").strip()
    checks.required("from", from_ref or None)
    entries = split_entries([str(v) for v in values.get("to") or []])
    if len(entries) > MAX_TO_ENTRIES:
        checks.fail("to", f"has more than {MAX_TO_ENTRIES} entries", "Range")
    criteria_text = str(values.get("criteria") or "").strip()
    if not entries and not criteria_text:
        checks.fail("to", "is required (or criteria)", "Required")
    body = values.get("body")
    template_ref = str(values.get("template_id") or "").strip()
    if not template_ref and not (body or "").strip():
        checks.fail("body", "is required (or template_id)", "Required")
    requirement = ConsentRequirement.OPT_OUT
    if values.get("consent_requirement"):
        chosen = checks.choice(
            "consent_requirement", str(values["consent_requirement"]), ConsentRequirement
        )
        requirement = chosen or requirement
    zone = TimeZoneMode.UTC
    if values.get("scheduled_delivery_time_zone"):
        zone = (
            checks.choice(
                "scheduled_delivery_time_zone",
                str(values["scheduled_delivery_time_zone"]),
                TimeZoneMode,
            )
            or zone
        )
    scheduled_at = _time(checks, "scheduled_delivery_time", values.get("scheduled_delivery_time"))
    expires_at = _time(checks, "expiry_time", values.get("expiry_time"))
    if expires_at is not None and expires_at <= now:
        checks.fail("expiry_time", "must be in the future", "Range")
    if expires_at and scheduled_at and expires_at <= scheduled_at:
        checks.fail("expiry_time", "must be after scheduled_delivery_time", "Range")
    test = _flag(checks, "test_message_flag", values.get("test_message_flag"))
    pause = _flag(checks, "pause_before_transmit", values.get("pause_before_transmit"))
    pause_expires_at = _time(checks, "pause_expiry_time", values.get("pause_expiry_time"))
    if pause_expires_at is not None:
        if not pause:
            checks.fail("pause_expiry_time", "is only given with pause_before_transmit")
        elif pause_expires_at <= now:
            checks.fail("pause_expiry_time", "must be in the future", "Range")
        elif pause_expires_at - now > PAUSE_LIMIT:
            checks.fail("pause_expiry_time", "must be at most 24h ahead", "Range")
    elif pause:
        pause_expires_at = now + PAUSE_LIMIT
    for name in ("src_language", "dst_language"):
        if values.get(name):
            checks.language(name, str(values[name]))
    translate = _flag(checks, "translate", values.get("translate"))
    track_links = _flag(checks, "track_links", values.get("track_links"))
    if translate:
        # Refused rather than ignored: no translation engine is wired in yet, and a request
        # that asked for translation must not go out untranslated.
        checks.fail("translate", "translation is not available on this server")
    attachment_ids = split_entries([str(v) for v in values.get("attachments") or []])
    sort_criteria = [s.upper() for s in split_entries(values.get("sender_id_sort_criteria") or [])]
    for s in sort_criteria:
        if s not in ("DELIVERY_ADDRESS", "PRICE"):
            checks.fail("sender_id_sort_criteria", "entries are DELIVERY_ADDRESS or PRICE")
    priorities = [
        s.upper() for s in split_entries(values.get("contact_delivery_address_priority") or [])
    ]
    for s in priorities:
        if s not in ("MDN", "PUSH"):
            checks.fail("contact_delivery_address_priority", "entries are MDN or PUSH")
    checks.raise_if_failed()
    criteria = criteria_language.parse(criteria_text).text if criteria_text else ""

    template_values = (
        {str(k): str(v) for k, v in dict(values.get("template_values") or {}).items()}
        if template_ref
        else {}
    )
    return NewRequest(
        from_ref=from_ref,
        entries=tuple(entries),
        criteria=criteria,
        body=str(body or ""),
        template_ref=template_ref,
        template_values=template_values,
        requirement=requirement,
        zone=zone,
        scheduled_at=scheduled_at,
        expires_at=expires_at,
        test=test,
        pause=pause,
        pause_expires_at=pause_expires_at,
        translate=translate,
        track_links=track_links,
        attachment_ids=tuple(attachment_ids),
        sort_criteria=tuple(sort_criteria),
        priorities=tuple(priorities),
        conversation_id=str(values.get("conversation_id") or ""),
        campaign_id=str(values.get("campaign_id") or ""),
        program_id=str(values.get("program_id") or ""),
        subject=str(values.get("subject") or ""),
        external_id=str(values.get("external_id") or ""),
        price_threshold=int(values.get("price_threshold") or 0),
        src_language=str(values.get("src_language") or "en"),
        dst_language=str(values.get("dst_language") or ""),
        content_type=str(values.get("content_type") or ""),
    )


class ContactLookup(Protocol):
    """What a request's `to` needs of contacts (contacts' ContactDirectory): which entries are
    the org's contact groups and which its contacts."""

    async def resolve_targets(self, org_id: str, ids: Sequence[str]) -> KnownIds: ...


class MessageRequestService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        contacts: ContactLookup,
        senders: SenderService,
        templates: MessageTemplateService,
        attachments: AttachmentService,
        messages: MessageService,
        default_region: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._contacts = contacts
        self._senders = senders
        self._templates = templates
        self._attachments = attachments
        self._messages = messages
        self._region = default_region
        self.max_body = max_body
        self.rows = OrgTable(
            db=db,
            events=events,
            table=requests_table,
            noun="message request",
            event_prefix="message_request",
            snapshot=snapshot,
            unique_message="message request already exists",
        )
        messages.on_request_changed = self.refresh
        self._wake: list[Callable[[], None]] = []

    def on_created(self, wake: Callable[[], None]) -> None:
        self._wake.append(wake)

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, org_id: str, request_id: str) -> Snapshot:
        return await self.rows.get(org_id, request_id)

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[Snapshot], str]:
        given = dict(given)
        extra: list[ColumnElement[bool]] = []
        if "to" in given:
            # a `+` pasted into a query string arrives as a space
            wanted = re.sub(r"^ (?=\d)", "+", given.pop("to")).strip()
            extra.append(_r.to_text.contains(";" + wanted + ";", autoescape=True))
        for name in ("test_message_flag", "pause_before_transmit"):
            if name in given:
                extra.append(_r[name] == _flag(checks, name, given.pop(name)))
        return await self.rows.list_page(
            org_id,
            given,
            page,
            checks,
            columns=_FILTER_COLUMNS,
            times=_FILTER_TIMES,
            extra=tuple(extra),
        )

    async def require(self, org_id: str, request_id: str) -> None:
        await self.rows.get(org_id, request_id)

    # -- create ----------------------------------------------------------------------------------

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        now = self._clock.now()
        new = _parse(values, now)
        senders = await self._sendable(org_id, new.from_ref)
        checks = Checks()
        attachment_types: list[str] = []
        for attachment_id in new.attachment_ids:
            try:
                attachment = await self._attachments.get(org_id, attachment_id)
            except NotFound:
                checks.fail("attachments", f"attachment {attachment_id!r} does not exist")
                continue
            attachment_types.append(str(attachment["type"]))
        checks.raise_if_failed()
        if attachment_types:
            senders = await self._senders_taking(senders, attachment_types)
        targets = await self._resolve(org_id, list(new.entries), checks)
        checks.raise_if_failed()

        def work(session: Session) -> str:
            text, template_id = self._body(session, org_id, new)
            allowed = [
                s
                for s in senders
                if body_allowed(
                    self._templates.validators(session, org_id, s.message_templates), text
                )
            ]
            if not allowed:
                raise InvalidArgument(
                    "the body matches none of the sender's VALIDATOR templates",
                    violations=[FieldViolation("body", "is not allowed by the sender")],
                )
            if new.track_links:
                tracking.check(text)  # 1020 unless every URL of the final body is trackable
            row = {
                "id": new_id("mr_"),
                "org_id": org_id,
                "application_id": application_id,
                "from_ref": new.from_ref,
                "to_text": (";" + ";".join(new.entries) + ";") if new.entries else "",
                "targets": json.dumps([t.__dict__ for t in targets]),
                "conversation_id": new.conversation_id,
                "campaign_id": new.campaign_id,
                "program_id": new.program_id,
                "subject": new.subject,
                "external_id": new.external_id,
                "state": RequestState.ACCEPTED.value,
                "attachments": ",".join(new.attachment_ids),
                "body": text,
                "template_id": template_id,
                "consent_requirement": new.requirement.value,
                "criteria": new.criteria,
                "scheduled_at": new.scheduled_at,
                "scheduled_zone": new.zone.value,
                "expires_at": new.expires_at,
                "test_message_flag": new.test,
                "pause_before_transmit": new.pause,
                "pause_expires_at": new.pause_expires_at,
                "price_threshold": new.price_threshold,
                "sender_id_sort_criteria": ",".join(new.sort_criteria),
                "contact_delivery_address_priority": ",".join(new.priorities),
                "src_language": new.src_language,
                "dst_language": new.dst_language,
                "translate": new.translate,
                "track_links": new.track_links,
                "content_type": new.content_type,
                "created_at": now,
                "updated_at": now,
            }
            written = (
                session.execute(requests_table.insert().values(row).returning(*requests_table.c))
                .mappings()
                .one()
            )
            self._events.append(session, [request_event(written, "accepted", now)])
            return str(row["id"])

        request_id = await self._db.run_write(work)
        for wake in self._wake:
            wake()
        return request_id

    async def _senders_taking(
        self, senders: Sequence[Sender], mime_types: Sequence[str]
    ) -> list[Sender]:
        """The senders whose type allows every attachment's content type; a 400 naming the
        attachments when none does."""
        type_ids = sorted({s.type_id for s in senders})
        async with self._db.read() as session:
            rows = (
                await session.execute(select(_types).where(_types.c.id.in_(type_ids)))
            ).mappings()
            by_type = {row["id"]: row for row in rows}
        taking = [
            s
            for s in senders
            if s.type_id in by_type and all(mime_allowed(by_type[s.type_id], m) for m in mime_types)
        ]
        if not taking:
            raise InvalidArgument(
                "no sender of this request may send these attachments",
                violations=[
                    FieldViolation(
                        "attachments",
                        f"types {', '.join(sorted(set(mime_types)))} are not allowed by the "
                        "sender's type",
                    )
                ],
            )
        return taking

    async def _sendable(self, org_id: str, from_ref: str) -> list[Sender]:
        try:
            senders = await self._senders.resolve_sendable(org_id, from_ref)
        except NotFound as exc:
            raise InvalidArgument(
                f"from: {exc.message}", violations=[FieldViolation("from", exc.message)]
            ) from exc
        if not senders:
            raise InvalidArgument(
                f"from: {from_ref!r} has no ACTIVE sender ID",
                violations=[FieldViolation("from", "has no ACTIVE sender ID")],
            )
        return senders

    def _body(self, session: Session, org_id: str, new: NewRequest) -> tuple[str, str]:
        template_id = ""
        text = new.body
        template_ref = new.template_ref
        if template_ref:
            query = select(templates_table).where(
                templates_table.c.org_id == org_id,
                (templates_table.c.id == template_ref) | (templates_table.c.name == template_ref),
            )
            template = session.execute(query).mappings().first()
            if template is None or template["designation"] != Designation.TEMPLATE.value:
                raise InvalidArgument(
                    f"template_id: {template_ref!r} is not a TEMPLATE message template",
                    violations=[FieldViolation("template_id", "is not a TEMPLATE of the org")],
                )
            text = render(template["pattern"], dict(new.template_values))
            template_id = str(template["id"])
        if len(text) > self.max_body:
            raise MessageTooLarge(
                f"the message body has {len(text)} characters; the limit is {self.max_body}",
                metadata={"limit": str(self.max_body), "size": str(len(text))},
            )
        return text, template_id

    async def _resolve(self, org_id: str, entries: list[str], checks: Checks) -> list[Target]:
        """Each entry as a group, else a contact, else an address (a violation if none)."""
        if not entries:
            return []
        known = await self._contacts.resolve_targets(org_id, entries)
        targets: list[Target] = []
        for entry in entries:
            if entry in known.group_ids:
                targets.append(Target("group", entry))
            elif entry in known.contact_ids:
                targets.append(Target("contact", entry))
            else:
                kind = AddressType.EMAIL if "@" in entry else AddressType.MDN
                try:
                    address = normalise_address(kind, entry, self._region)
                except InvalidAddress:
                    checks.fail(
                        "to",
                        f"{entry!r} is not a contact group id, contact id, phone number "
                        "or email address of the org",
                    )
                    continue
                targets.append(Target("address", address, kind.value))
        return targets

    # -- state changes ---------------------------------------------------------------------------

    async def set_state(
        self,
        org_id: str,
        request_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
    ) -> None:
        checks = Checks()
        text = values.get("state")
        if not text:
            checks.fail(
                "state",
                'is required: {"state":"CANCELED"} cancels, {"state":"TRANSMITTING"} resumes '
                "a PAUSED request",
                "Required",
            )
        target = checks.choice("state", str(text or ""), CustomerRequestState) if text else None
        checks.raise_if_failed()
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, request_id)
            require_version(current["version"], expected_version, "message request")
            if target == CustomerRequestState.CANCELED:
                if current["state"] == RequestState.CANCELED.value:
                    return
                if current["state"] in FINAL:
                    raise _bad_state(current, "canceled")
                self._cancel(session, current, now)
            else:
                if current["state"] != RequestState.PAUSED.value:
                    raise _bad_state(current, "resumed (only PAUSED requests are)")
                self._resume(session, current, now)

        await self._db.run_write(work)

    async def delete(self, org_id: str, request_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, request_id)
            if current["state"] == RequestState.DELETED.value:
                return
            if current["state"] not in FINAL:
                current = self._cancel(session, current, now)
            self.transition(session, current, RequestState.DELETED, now, "deleted")

        await self._db.run_write(work)

    def _cancel(self, session: Session, current: Row, now: datetime) -> Row:
        row = self.transition(session, current, RequestState.CANCELED, now, "canceled")
        self._change_messages(
            session, row["id"], UNSENT, {"state": MessageState.CANCELED.value}, now, "canceled"
        )
        queue.discard(session, self.message_ids(row["id"], [MessageState.CANCELED.value]))
        return self.current(session, row["id"])

    def _resume(self, session: Session, current: Row, now: datetime) -> None:
        if current["pause_expires_at"] is not None and current["pause_expires_at"] <= now:
            raise _bad_state(current, "resumed: its pause expired")
        row = self.transition(session, current, RequestState.TRANSMITTING, now, "resumed")
        self._change_messages(
            session,
            row["id"],
            [MessageState.PAUSED.value],
            {"state": MessageState.CREATED.value},
            now,
            "resumed",
        )
        queue.release(session, self.message_ids(row["id"], [MessageState.CREATED.value]))

    def _change_messages(
        self,
        session: Session,
        request_id: str,
        states: Sequence[str],
        changes: Mapping[str, Any],
        now: datetime,
        what: str,
        batch: int = 1000,
    ) -> None:
        """Apply `changes` to the request's messages in `states`, 1000 at a time (by id), so a
        request of any size is changed in one transaction without holding all its rows."""
        after = ""
        while True:
            rows = list(
                session.execute(
                    select(messages_table)
                    .where(
                        messages_table.c.message_request_id == request_id,
                        messages_table.c.state.in_(list(states)),
                        messages_table.c.id > after,
                    )
                    .order_by(messages_table.c.id)
                    .limit(batch)
                ).mappings()
            )
            if not rows:
                return
            self._messages.apply(session, rows, changes, now, what)
            after = rows[-1]["id"]

    # -- used by the workers, inside their transactions ------------------------------------------

    def message_ids(self, request_id: str, states: Sequence[str]) -> Any:
        """A SELECT of the ids of the request's messages in `states` (for queue updates)."""
        return select(messages_table.c.id).where(
            messages_table.c.message_request_id == request_id,
            messages_table.c.state.in_(list(states)),
        )

    def current(self, session: Session, request_id: str) -> Row:
        query = select(requests_table).where(_r.id == request_id)
        return session.execute(query).mappings().one()

    def transition(
        self,
        session: Session,
        current: Row,
        state: RequestState,
        now: datetime,
        what: str,
        **values: Any,
    ) -> Row:
        statement = (
            update(requests_table)
            .where(_r.id == current["id"])
            .values(state=state.value, updated_at=now, version=_r.version + 1, **values)
            .returning(*requests_table.c)
        )
        row = session.execute(statement).mappings().one()
        self._events.append(session, [request_event(row, what, now)])
        return row

    def refresh(
        self,
        session: Session,
        request_id: str,
        now: datetime,
        deltas: Mapping[str, int] | None = None,
    ) -> Row:
        """Move a request's counters by `deltas` (or recount them from its messages when None);
        a TRANSMITTING request with nothing left to send becomes COMPLETED."""
        row = self.current(session, request_id)
        if deltas is None:
            values: dict[str, Any] = counters(session, request_id)
            changed = any(row[k] != v for k, v in values.items())
        else:
            values = {k: _r[k] + d for k, d in deltas.items()}
            changed = bool(deltas)
        if not changed and row["state"] != "TRANSMITTING":
            return row
        statement = (
            update(requests_table)
            .where(_r.id == request_id)
            .values(**values, updated_at=now, version=_r.version + 1)
            .returning(*requests_table.c)
        )
        row = session.execute(statement).mappings().one()
        if row["state"] == RequestState.TRANSMITTING.value and not self.has_unsent(
            session, request_id
        ):
            row = self.transition(session, row, RequestState.COMPLETED, now, "completed")
        return row

    def has_unsent(self, session: Session, request_id: str) -> bool:
        query = (
            select(messages_table.c.id)
            .where(
                messages_table.c.message_request_id == request_id,
                messages_table.c.state.in_(
                    [MessageState.CREATED.value, MessageState.SCHEDULED.value]
                ),
            )
            .limit(1)
        )
        return session.execute(query).first() is not None


def _bad_state(current: Row, action: str) -> InvalidArgument:
    return InvalidArgument(
        f"message request {current['id']!r} is {current['state']} and cannot be {action}",
        violations=[FieldViolation("state", f"not allowed from {current['state']}")],
    )


__all__ = [
    "FINAL",
    "MessageRequestService",
    "Target",
    "requests_table",
    "snapshot",
    "timedelta",
]
