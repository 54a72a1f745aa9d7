"""Sender IDs: the addresses applications send from, and who may use them.

Rules (docs/rest-families.md and the catalog's purchase flow):

- A customer's sender starts PENDING_IMPLEMENTATION; provisioning (the Admin-only
  ProvisionSenderId RPC) makes it ACTIVE. With `messaging_sandbox_provisioning` on (the default
  of `make run` and the tests) provisioning happens at once, in the creating transaction.
- The operator's senders belong to no org (SYSTEM_ORG). SHARED ones are listed to every org and
  used by creating a PRIVATE copy (`POST /messaging/sender_ids` with `parent_id`). PREPROVISIONED
  ones are bought (`POST /messaging/sender_ids/purchase`): the buyer gets a PRIVATE copy pointing
  at the original, which becomes PURCHASED (hidden from other orgs) until the copy is deleted,
  when it returns to PREPROVISIONED. Copies inherit the original's (provisioned) state.
- Operator-managed fields (ownership, state, country, operators) are refused to customers with
  403 naming the field, unless the value sent equals the current one (a GET → POST round trip
  works). parent_id, type_id, class_id and address are fixed after creation (400).
- Credentials are stored as given and always read back masked (`****` for every value but the
  `provider` key); sending the masked value back keeps the stored credentials.
- The address is validated against its type's address_format; E.164 numbers give the country.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy import ColumnElement, Table, and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    UniqueKeyViolated,
    require_version,
    validation_error,
)
from switchboard.server.core.events import EventLog
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks
from switchboard.server.messaging.senders import reference
from switchboard.server.messaging.senders.common import list_filters, pack, split_items, unpack
from switchboard.server.messaging.senders.models import (
    SYSTEM_ORG,
    AddressFormat,
    ChannelRecord,
    ChannelSenderRecord,
    ConsentManagedBy,
    Ownership,
    SenderIdRecord,
    SenderState,
    YesNo,
)

senders = table_of(SenderIdRecord)
channels = table_of(ChannelRecord)
channel_senders = table_of(ChannelSenderRecord)
_s = senders.c

OPERATOR_FIELDS = ("ownership", "state", "country", "operators")
FIXED_FIELDS = ("parent_id", "type_id", "class_id", "address")
MASK = "****"
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHANUMERIC = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_REF_PREFIXES = ("sender_id:", "sender_id-")


@dataclass(frozen=True)
class Sender:
    """An ACTIVE sender an org may send from (see SenderService.resolve_sendable). `credentials`
    are in clear: never return them to a client."""

    id: str
    org_id: str
    parent_id: str | None
    address: str
    type_id: str
    class_id: str
    country: str
    capabilities: tuple[str, ...]
    message_templates: tuple[str, ...]
    credentials: str
    consent_managed_by: str
    check_white_list: bool
    channel_id: str | None = None
    priority: str = "normal"  # the channel's priority (high, normal, low); normal when direct


def mask_credentials(text: str) -> str:
    """Credentials as clients see them: every value but `provider` replaced by ****."""
    if not text:
        return ""
    try:
        parsed = json.loads(text)
    except ValueError:
        return MASK
    if not isinstance(parsed, list):
        return MASK
    masked = [
        {k: (v if k == "provider" else MASK) for k, v in item.items()}
        if isinstance(item, dict)
        else MASK
        for item in parsed
    ]
    return json.dumps(masked, separators=(",", ":"))


def snapshot(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "parent_id": row["parent_id"] or "",
        "name": row["name"],
        "ownership": row["ownership"],
        "class_id": row["class_id"],
        "type_id": row["type_id"],
        "state": row["state"],
        "address": row["address"],
        "content_type": row["content_type"],
        "message_templates": unpack(row["message_templates"]),
        "country": row["country"],
        "operators": unpack(row["operators"]),
        "credentials": mask_credentials(row["credentials"]),
        "two_way_required": row["two_way_required"],
        "keep_sender_address": row["keep_sender_address"],
        "dr_required": row["dr_required"],
        "consent_managed_by": row["consent_managed_by"],
        "capabilities": unpack(row["capabilities"]),
        "check_white_list": row["check_white_list"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
        "billing": row["billing"],
    }


def visible_to(org_id: str) -> ColumnElement[bool]:
    """Senders an org sees: its own, and the operator's SHARED and PREPROVISIONED ones."""
    return or_(
        _s.org_id == org_id,
        and_(
            _s.org_id == SYSTEM_ORG,
            _s.ownership.in_([Ownership.SHARED.value, Ownership.PREPROVISIONED.value]),
        ),
    )


def validate_address(checks: Checks, address_format: str, address: str) -> tuple[str, str]:
    """The address normalised for its type's format, and the country it implies ("" if none)."""
    value = address.strip()
    if address_format == AddressFormat.E164.value:
        try:
            number = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_valid_number(number):
            checks.fail("address", "must be a valid E.164 phone number such as +14155550100")
            return value, ""
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return e164, phonenumbers.region_code_for_number(number) or ""
    if address_format == AddressFormat.SHORT_CODE.value and not _SHORT_CODE.match(value):
        checks.fail("address", "must be a short code of 3 to 8 digits")
    elif address_format == AddressFormat.ALPHANUMERIC.value and not _ALPHANUMERIC.match(value):
        checks.fail("address", "must be 1 to 11 letters, digits or spaces, with a letter")
    elif address_format == AddressFormat.EMAIL.value:
        if not _EMAIL.match(value) or len(value) > 320:
            checks.fail("address", "must be an email address")
        value = value.lower()
    elif not value:
        checks.fail("address", "is required", "Required")
    checks.length("address", value, 320)
    return value, ""


class _Visible(OrgTable):
    """Reads and locks see the org's senders and the operator's SHARED and PREPROVISIONED ones."""

    def scope(self, org_id: str) -> ColumnElement[bool]:
        return visible_to(org_id)


class SenderService:
    def __init__(
        self, db: Database, events: EventLog, clock: Clock, *, auto_provision: bool
    ) -> None:
        self._db = db
        self._clock = clock
        self.auto_provision = auto_provision
        self.rows = _Visible(
            db=db,
            events=events,
            table=senders,
            noun="sender ID",
            event_prefix="sender_id",
            snapshot=snapshot,
            unique_message="the org already has a sender ID with this type and address",
            unique_field="address",
        )

    # -- reads ---------------------------------------------------------------------------------

    async def list_page(
        self,
        org_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
        *,
        extra: Sequence[ColumnElement[bool]] = (),
    ) -> tuple[list[dict[str, Any]], str]:
        if "state" in given and given["state"].upper() == "ATIVE":
            given = {**given, "state": SenderState.ACTIVE.value}
        clauses = list_filters(
            checks,
            senders,
            given,
            contains=frozenset({"operators", "capabilities"}),
            booleans=frozenset({"check_white_list"}),
        )
        checks.raise_if_failed()
        query = listing.paged(
            select(senders).where(visible_to(org_id), *clauses, *extra), senders, page
        )
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        return [snapshot(r) for r in rows[: page.limit]], listing.next_page_token(rows, page)

    async def get(self, org_id: str, sender_id: str) -> dict[str, Any]:
        return await self.rows.get(org_id, sender_id)

    async def resolve_sendable(self, org_id: str, sender_ref: str) -> list[Sender]:
        """The ACTIVE senders `org_id` may send from for a message request's `from`.

        `sender_ref` is `channel-<id>` (the channel's ACTIVE sender IDs, in the order they were
        added, each carrying the channel's priority), or `sender_id:<id>`, `sender_id-<id>` or
        a bare id: the org's own sender (a PRIVATE one, or its copy of a SHARED or purchased
        sender, whose original must be ACTIVE too) or an operator's SHARED sender. Returns []
        when the sender or channel exists but nothing in it is ACTIVE; an unknown or foreign
        reference raises NotFound. Only ACTIVE senders send.
        """
        ref = sender_ref.strip()
        async with self._db.read() as session:
            if ref.startswith("channel-"):
                channel_id = ref.removeprefix("channel-")
                channel = (
                    (
                        await session.execute(
                            select(channels).where(
                                channels.c.id == channel_id, channels.c.org_id == org_id
                            )
                        )
                    )
                    .mappings()
                    .one_or_none()
                )
                if channel is None:
                    raise NotFound(f"channel {channel_id!r} not found")
                query = (
                    select(senders)
                    .join(channel_senders, channel_senders.c.sender_id == _s.id)
                    .where(channel_senders.c.channel_id == channel_id, _s.org_id == org_id)
                    .order_by(channel_senders.c.position, channel_senders.c.created_at)
                )
                rows = list((await session.execute(query)).mappings())
                parents = await self._parents(session, rows)
                return [
                    _sender(row, channel_id, channel["priority"])
                    for row in rows
                    if _sendable(row, parents)
                ]
            sender_id = ref
            for prefix in _REF_PREFIXES:
                sender_id = sender_id.removeprefix(prefix)
            query = select(senders).where(
                _s.id == sender_id,
                or_(
                    _s.org_id == org_id,
                    and_(_s.org_id == SYSTEM_ORG, _s.ownership == Ownership.SHARED.value),
                ),
            )
            row = (await session.execute(query)).mappings().one_or_none()
            if row is None:
                raise NotFound(f"sender ID {sender_id!r} not found")
            parents = await self._parents(session, [row])
        return [_sender(row, None, "normal")] if _sendable(row, parents) else []

    async def _parents(self, session: Any, rows: Sequence[Row]) -> dict[str, str]:
        ids = [r["parent_id"] for r in rows if r["parent_id"]]
        if not ids:
            return {}
        result = await session.execute(select(_s.id, _s.state).where(_s.id.in_(ids)))
        return {str(i): str(state) for i, state in result}

    # -- customer writes -----------------------------------------------------------------------

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        if values.get("parent_id"):
            return await self._create_copy(org_id, application_id, values)
        _refuse_operator_fields(values, None)
        now = self._clock.now()

        def work(session: Session) -> str:
            row = self._new_row(session, org_id, application_id, values, now, operator=False)
            session.execute(insert(senders).values(row))
            self.rows.event(session, "created", row, now)
            if self.auto_provision:
                self._set_state(session, row, SenderState.ACTIVE.value, now)
            return str(row["id"])

        return await self.rows.write(work)

    async def _create_copy(
        self, org_id: str, application_id: str, values: Mapping[str, Any]
    ) -> str:
        parent_id = str(values["parent_id"]).strip()
        now = self._clock.now()

        def work(session: Session) -> str:
            parent = self._system_parent(session, parent_id)
            if parent["ownership"] != Ownership.SHARED.value:
                raise InvalidArgument(
                    f"sender ID {parent_id!r} is {parent['ownership']}: only SHARED senders "
                    "are used this way; buy PREPROVISIONED ones with "
                    "POST /messaging/sender_ids/purchase",
                    violations=[FieldViolation("parent_id", "is not a SHARED sender ID")],
                )
            row = self._copy_row(session, parent, org_id, application_id, values, now)
            session.execute(insert(senders).values(row))
            self.rows.event(session, "created", row, now)
            return str(row["id"])

        return await self.rows.write(work)

    async def purchase(self, org_id: str, application_id: str, parent_id: str) -> str:
        if not parent_id.strip():
            raise validation_error([FieldViolation("parent_id", "is required", "Required")])
        now = self._clock.now()

        def work(session: Session) -> str:
            parent = self._system_parent(session, parent_id.strip())
            if parent["ownership"] == Ownership.PURCHASED.value:
                raise UniqueKeyViolated(
                    f"sender ID {parent_id!r} is already purchased",
                    metadata={"field": "parent_id"},
                )
            if parent["ownership"] != Ownership.PREPROVISIONED.value:
                raise InvalidArgument(
                    f"sender ID {parent_id!r} is {parent['ownership']}, not PREPROVISIONED",
                    violations=[FieldViolation("parent_id", "is not a PREPROVISIONED sender ID")],
                )
            row = self._copy_row(session, parent, org_id, application_id, {}, now)
            session.execute(insert(senders).values(row))
            self.rows.event(session, "purchased", row, now)
            self._change(session, parent, {"ownership": Ownership.PURCHASED.value}, now)
            return str(row["id"])

        return await self.rows.write(work)

    async def update(
        self,
        org_id: str,
        sender_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
    ) -> str:
        now = self._clock.now()

        def work(session: Session) -> str:
            current = self._locked_own(session, org_id, sender_id)
            require_version(current["version"], expected_version, "sender ID")
            _refuse_operator_fields(values, current)
            _refuse_fixed_fields(values, current)
            type_row = self._reference_row(session, reference.types, current["type_id"], "type_id")
            checks = Checks()
            changes = _customer_columns(checks, values, type_row, current)
            checks.raise_if_failed()
            self._change(session, current, changes, now)
            return sender_id

        return await self.rows.write(work)

    async def delete(self, org_id: str, sender_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self._locked_own(session, org_id, sender_id)
            session.execute(delete(channel_senders).where(channel_senders.c.sender_id == sender_id))
            session.execute(delete(senders).where(_s.id == sender_id))
            self.rows.event(session, "deleted", current, now)
            if current["parent_id"]:
                parent = (
                    session.execute(
                        for_update(session, select(senders).where(_s.id == current["parent_id"]))
                    )
                    .mappings()
                    .one_or_none()
                )
                if parent is not None and parent["ownership"] == Ownership.PURCHASED.value:
                    self._change(
                        session, parent, {"ownership": Ownership.PREPROVISIONED.value}, now
                    )

        await self._db.run_write(work)

    # -- operator (Admin) writes ---------------------------------------------------------------

    async def create_system(self, application_id: str, values: Mapping[str, Any]) -> str:
        """An operator's SHARED or PREPROVISIONED sender (state defaults to ACTIVE)."""
        checks = Checks()
        ownership = checks.choice("ownership", values.get("ownership") or "", Ownership)
        if ownership not in (Ownership.SHARED, Ownership.PREPROVISIONED) and checks.ok("ownership"):
            checks.fail("ownership", "operator senders are SHARED or PREPROVISIONED")
        if values.get("parent_id"):
            checks.fail("parent_id", "operator senders have no parent")
        checks.raise_if_failed()
        now = self._clock.now()

        def work(session: Session) -> str:
            row = self._new_row(session, SYSTEM_ORG, application_id, values, now, operator=True)
            session.execute(insert(senders).values(row))
            self.rows.event(session, "created", row, now)
            return str(row["id"])

        return await self.rows.write(work)

    async def provision(
        self,
        sender_id: str,
        state: str,
        country: str,
        operators: Sequence[str],
        billing: str,
    ) -> str:
        """Operator provisioning: the new state (default ACTIVE), country, operators, billing."""
        checks = Checks()
        new_state = _state(checks, state or SenderState.ACTIVE.value)
        changes: dict[str, Any] = {}
        if country:
            if not _COUNTRY.match(country.strip().upper()):
                checks.fail("country", "must be an ISO 3166-1 alpha-2 code", "Format")
            changes["country"] = country.strip().upper()
        if operators:
            changes["operators"] = pack(split_items(operators))
            checks.length("operators", changes["operators"], 1024)
        if billing:
            checks.length("billing", billing, 1024)
            changes["billing"] = billing
        checks.raise_if_failed()
        now = self._clock.now()

        def work(session: Session) -> str:
            current = (
                session.execute(for_update(session, select(senders).where(_s.id == sender_id)))
                .mappings()
                .one_or_none()
            )
            if current is None:
                raise NotFound(f"sender ID {sender_id!r} not found")
            row = self._change(session, current, changes, now) if changes else current
            if new_state is not None and new_state != row["state"]:
                self._set_state(session, row, new_state, now)
            return sender_id

        return await self._db.run_write(work)

    # -- internals -----------------------------------------------------------------------------

    def _new_row(
        self,
        session: Session,
        org_id: str,
        application_id: str,
        values: Mapping[str, Any],
        now: datetime,
        *,
        operator: bool,
    ) -> dict[str, Any]:
        checks = Checks()
        for field in ("type_id", "class_id", "address"):
            checks.required(field, values.get(field))
        checks.raise_if_failed()
        type_row = self._reference_row(session, reference.types, values["type_id"], "type_id")
        class_row = self._reference_row(session, reference.classes, values["class_id"], "class_id")
        address, country = validate_address(checks, type_row["address_format"], values["address"])
        if operator and values.get("country"):
            country = str(values["country"]).strip().upper()
            if not _COUNTRY.match(country):
                checks.fail("country", "must be an ISO 3166-1 alpha-2 code", "Format")
        if checks.ok("address") and not reference.class_applies(session, class_row, country):
            checks.fail(
                "class_id",
                f"class {class_row['id']!r} does not apply to {country or 'this country'}",
            )
        defaults = {
            "message_templates": [],
            "capabilities": [],
            "two_way_required": "NO",
            "keep_sender_address": "NO",
            "dr_required": "NO",
            "consent_managed_by": "USER",
        }
        changes = _customer_columns(checks, {**defaults, **values}, type_row, None)
        state = SenderState.PENDING_IMPLEMENTATION.value
        ownership = Ownership.PRIVATE.value
        operators = ""
        if operator:
            ownership = str(values["ownership"]).strip().upper()
            state = _state(checks, values.get("state") or "ACTIVE") or state
            operators = pack(split_items(values.get("operators", [])))
        checks.raise_if_failed()
        return {
            "name": "",
            "content_type": "",
            "credentials": "",
            "check_white_list": False,
            **changes,
            "id": new_id("sid_"),
            "org_id": org_id,
            "parent_id": None,
            "ownership": ownership,
            "class_id": class_row["id"],
            "type_id": type_row["id"],
            "state": state,
            "address": address,
            "country": country,
            "operators": operators,
            "billing": "",
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

    def _copy_row(
        self,
        session: Session,
        parent: Row,
        org_id: str,
        application_id: str,
        values: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        _refuse_operator_fields(values, None)
        copy = dict(parent) | {"parent_id": None}
        _refuse_fixed_fields({k: v for k, v in values.items() if k != "parent_id"}, copy)
        type_row = self._reference_row(session, reference.types, parent["type_id"], "type_id")
        checks = Checks()
        changes = _customer_columns(checks, values, type_row, parent)
        checks.raise_if_failed()
        return (
            dict(parent)
            | changes
            | {
                "id": new_id("sid_"),
                "org_id": org_id,
                "parent_id": parent["id"],
                "ownership": Ownership.PRIVATE.value,
                "application_id": application_id,
                "credentials": changes.get("credentials", ""),
                "billing": "",
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )

    def _system_parent(self, session: Session, parent_id: str) -> Row:
        query = select(senders).where(_s.id == parent_id, _s.org_id == SYSTEM_ORG)
        parent = session.execute(for_update(session, query)).mappings().one_or_none()
        if parent is None:
            raise NotFound(f"sender ID {parent_id!r} not found")
        return parent

    def _reference_row(self, session: Session, table: Table, row_id: Any, field: str) -> Row:
        row = (
            session.execute(select(table).where(table.c.id == str(row_id).strip()))
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise validation_error([FieldViolation(field, f"{row_id!r} does not exist")])
        return row

    def _locked_own(self, session: Session, org_id: str, sender_id: str) -> Row:
        row = self.rows.locked(session, org_id, sender_id)
        if row["org_id"] != org_id:
            raise PermissionDenied(
                f"sender ID {sender_id!r} is the operator's {row['ownership']} sender: use it "
                "through a copy (POST /messaging/sender_ids with parent_id, or /purchase)"
            )
        return row

    def _change(
        self, session: Session, current: Row, changes: Mapping[str, Any], now: datetime
    ) -> Row:
        row = dict(current) | dict(changes) | {"updated_at": now, "version": current["version"] + 1}
        session.execute(
            update(senders)
            .where(_s.id == current["id"])
            .values({k: v for k, v in row.items() if k not in ("id", "org_id")})
        )
        self.rows.event(session, "updated", row, now)
        return row

    def _set_state(self, session: Session, current: Row, state: str, now: datetime) -> Row:
        row = dict(current) | {"state": state, "updated_at": now, "version": current["version"] + 1}
        session.execute(
            update(senders)
            .where(_s.id == current["id"])
            .values(state=state, updated_at=now, version=row["version"])
        )
        what = "provisioned" if state == SenderState.ACTIVE.value else "state_changed"
        self.rows.event(session, what, row, now)
        return row


def _state(checks: Checks, value: str) -> str | None:
    text = value.strip().upper()
    if text == "ATIVE":
        text = SenderState.ACTIVE.value
    chosen = checks.choice("state", text, SenderState)
    return chosen.value if chosen is not None else None


def _refuse_operator_fields(values: Mapping[str, Any], current: Row | None) -> None:
    """Customers may not set operator-managed fields (except to their current value)."""
    for field in OPERATOR_FIELDS:
        if field not in values:
            continue
        given = values[field]
        if field == "operators":
            same = current is not None and split_items(given) == unpack(current["operators"])
        elif field == "ownership" and current is None:
            same = str(given).strip().upper() == Ownership.PRIVATE.value
        elif field == "state" and current is not None:
            state = str(given).strip().upper()
            same = (SenderState.ACTIVE.value if state == "ATIVE" else state) == current["state"]
        else:
            same = current is not None and str(given).strip().upper() == current[field]
        if not same:
            raise PermissionDenied(
                f"{field} is managed by the operator and cannot be set by customers",
                violations=[FieldViolation(field, "is managed by the operator")],
            )


def _refuse_fixed_fields(values: Mapping[str, Any], current: Row) -> None:
    checks = Checks()
    for field in FIXED_FIELDS:
        if field in values and str(values[field]).strip() != (current[field] or ""):
            checks.fail(field, "cannot change after creation; create another sender ID")
    checks.raise_if_failed()


def _customer_columns(
    checks: Checks, values: Mapping[str, Any], type_row: Row, current: Row | None
) -> dict[str, Any]:
    """Columns for the customer-settable fields present in `values`."""
    changes: dict[str, Any] = {}
    if "name" in values:
        checks.length("name", values["name"], 256)
        changes["name"] = str(values["name"]).strip()
    if "content_type" in values:
        checks.length("content_type", values["content_type"], 128)
        changes["content_type"] = str(values["content_type"]).strip()
    if "message_templates" in values:
        templates = split_items(values["message_templates"])
        if len(templates) > 100:
            checks.fail("message_templates", "at most 100 templates", "Range")
        for template in templates:
            checks.length("message_templates", template, 64)
        changes["message_templates"] = pack(templates)
    for field in ("two_way_required", "keep_sender_address", "dr_required"):
        if field in values:
            chosen = checks.choice(field, str(values[field]), YesNo)
            if chosen is not None:
                changes[field] = chosen.value
    if "consent_managed_by" in values:
        managed = checks.choice(
            "consent_managed_by", str(values["consent_managed_by"]), ConsentManagedBy
        )
        if managed is not None:
            changes["consent_managed_by"] = managed.value
    if "check_white_list" in values:
        changes["check_white_list"] = bool(values["check_white_list"])
    allowed = split_items([type_row["capabilities"]], upper=True)
    if "capabilities" in values:
        wanted = split_items(values["capabilities"], upper=True)
        extra = [c for c in wanted if c not in allowed]
        if extra:
            checks.fail(
                "capabilities",
                f"{', '.join(extra)} not offered by type {type_row['id']!r} ({', '.join(allowed)})",
            )
        changes["capabilities"] = pack(wanted or allowed)
    if "credentials" in values:
        text = str(values["credentials"])
        stored = current["credentials"] if current is not None else ""
        if current is not None and text == mask_credentials(stored):
            pass  # the masked value sent back: keep what is stored
        elif text.strip():
            checks.length("credentials", text, 8192)
            parsed = checks.json_value("credentials", text, list)
            if parsed is not None:
                _check_credentials(checks, parsed, type_row)
                changes["credentials"] = json.dumps(parsed, separators=(",", ":"))
        else:
            changes["credentials"] = ""
    return changes


def _check_credentials(checks: Checks, parsed: list[Any], type_row: Row) -> None:
    needed = reference.credential_parameters(type_row)
    for i, item in enumerate(parsed):
        if not isinstance(item, dict) or not all(
            isinstance(v, str | int | float | bool) for v in item.values()
        ):
            checks.fail("credentials", f"entry {i} must be an object of name/value pairs")
            continue
        provider = item.get("provider")
        if provider is None and len(needed) == 1:
            provider = next(iter(needed))
        if provider in needed:
            missing = [p for p in needed[provider] if p not in item]
            if missing:
                checks.fail("credentials", f"entry {i} ({provider}) lacks {', '.join(missing)}")
        elif needed and provider is not None:
            checks.fail("credentials", f"entry {i}: provider must be one of {', '.join(needed)}")


def _sendable(row: Row, parent_states: Mapping[str, str]) -> bool:
    if row["state"] != SenderState.ACTIVE.value:
        return False
    parent = row["parent_id"]
    return not parent or parent_states.get(parent) == SenderState.ACTIVE.value


def _sender(row: Row, channel_id: str | None, priority: str) -> Sender:
    return Sender(
        id=row["id"],
        org_id=row["org_id"],
        parent_id=row["parent_id"],
        address=row["address"],
        type_id=row["type_id"],
        class_id=row["class_id"],
        country=row["country"],
        capabilities=tuple(unpack(row["capabilities"])),
        message_templates=tuple(unpack(row["message_templates"])),
        credentials=row["credentials"],
        consent_managed_by=row["consent_managed_by"],
        check_white_list=bool(row["check_white_list"]),
        channel_id=channel_id,
        priority=priority,
    )


__all__ = [
    "MASK",
    "Sender",
    "SenderService",
    "mask_credentials",
    "snapshot",
    "validate_address",
    "visible_to",
]


def shared_sender_validator_lock(session: Session, org_id: str, template_id: str) -> bool:
    """Whether `template_id` is a validator of one of the org's copies of a SHARED sender: those
    validators are the operator's rules for the shared address, so customers may not change them
    (MessageTemplateService.shared_sender_lock)."""
    senders = table_of(SenderIdRecord)
    originals = senders.alias("originals")
    query = (
        select(senders.c.id)
        .join(originals, originals.c.id == senders.c.parent_id)
        .where(
            senders.c.org_id == org_id,
            originals.c.ownership == Ownership.SHARED.value,
            senders.c.message_templates.contains(f",{template_id},", autoescape=True),
        )
        .limit(1)
    )
    return session.execute(query).first() is not None
