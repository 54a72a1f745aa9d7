"""Contacts: validation, create/update/replace/delete, fast access derivation, bulk import.

Every write runs in one transaction with its consequences: fast access values derived, DYNAMIC
groups of the org marked for a recount, static memberships and counts kept, and the
`contact.created|updated|deleted` event appended.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from switchboard.server.contacts import criteria as criteria_language
from switchboard.server.contacts.fast_access import SLOTS, FastAccessService, Rule, derive
from switchboard.server.contacts.models import VoicePreference
from switchboard.server.contacts.repository import ContactRepository, contacts
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.errors import (
    DomainError,
    NotFound,
    UniqueKeyViolated,
    require_version,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks
from switchboard.server.telephony import phone

TEXT_LIMITS = {
    "first_name": 256,
    "last_name": 256,
    "primary_addr_line1": 256,
    "primary_addr_line2": 256,
    "primary_addr_city": 256,
    "primary_addr_zip": 32,
    "primary_addr_state": 256,
    "primary_social_handle": 256,
}
EXTERNAL_ID_MAX = 128
DATE_FIELDS = ("birth_date", "first_acquisition_date", "last_acquisition_date")
JSON_LIST_FIELDS = (
    "address_list",
    "customer_account_list",
    "customer_device_list",
    "interest_list",
    "demographic_list",
)
JSON_TEXT_MAX = 65536
# The writable attributes, in the documented order (also the CSV columns of import/export).
INPUT_FIELDS = (
    "external_id",
    "first_name",
    "last_name",
    "birth_date",
    "first_acquisition_date",
    "last_acquisition_date",
    "primary_mdn",
    "primary_addr_line1",
    "primary_addr_line2",
    "primary_addr_city",
    "primary_addr_zip",
    "primary_addr_state",
    "primary_addr_country",
    "primary_email_addr",
    "primary_social_handle",
    *JSON_LIST_FIELDS,
    "extended_attributes",
    "fast_access",
    "preferred_language",
    "voice_preference",
    "time_zone",
)
# What a replace (PUT) resets the writable columns to.
_CLEARED: dict[str, Any] = {
    **dict.fromkeys(INPUT_FIELDS, ""),
    **dict.fromkeys((*JSON_LIST_FIELDS, "extended_attributes"), None),
    "external_id": None,
    "voice_preference": VoicePreference.NONE.value,
}
del _CLEARED["fast_access"]
FILTER_TIMES = frozenset({"created_date", "last_updated_date"})
FILTER_COLUMNS = {"created_date": "created_at", "last_updated_date": "updated_at"}


@dataclass(frozen=True)
class ContactInput:
    """A validated body: column values to set, plus edits of client-editable fast access slots."""

    columns: dict[str, Any]
    fast_access_edits: dict[str, Any] | None = None  # None: the body had no fast_access


@dataclass
class PendingWrites:
    """Contact writes of a bulk operation, executed together by ContactService.flush."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)


@dataclass(frozen=True)
class RowOutcome:
    """One imported row: the contact it created or updated, or why it was skipped."""

    contact_id: str | None
    created: bool
    error: str | None = None


def _json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def snapshot(row: Row) -> dict[str, Any]:
    """A contacts row as clients see it (proto field names, JSON-safe)."""
    data: dict[str, Any] = {
        "id": row["id"],
        "external_id": row["external_id"] or "",
    }
    for name in INPUT_FIELDS[1:]:
        value = row[name]
        data[name] = _json_text(value) if name in _JSON_COLUMNS else value
    data["voice_preference"] = row["voice_preference"] or VoicePreference.NONE.value
    data["application_id"] = row["application_id"]
    data["created_date"] = iso(row["created_at"])
    data["last_updated_date"] = iso(row["updated_at"])
    data["version_number"] = row["version"]
    return data


_JSON_COLUMNS = frozenset((*JSON_LIST_FIELDS, "extended_attributes", "fast_access"))


def document(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The contact as JSONPath scripts see it: attributes with JSON fields parsed."""
    data = {name: row.get(name) for name in ("id", *INPUT_FIELDS)}
    data["external_id"] = row.get("external_id") or ""
    return data


def validate(values: Mapping[str, Any], checks: Checks) -> ContactInput:
    """Check and normalise the present fields of a contact body (failures land on `checks`)."""
    columns: dict[str, Any] = {}
    for name, value in values.items():
        if not isinstance(value, str):
            continue
        text = value.strip()
        if name == "external_id":
            checks.length(name, text, EXTERNAL_ID_MAX)
            columns[name] = text or None
        elif name in TEXT_LIMITS:
            checks.length(name, text, TEXT_LIMITS[name])
            columns[name] = text
        elif name in DATE_FIELDS:
            if text:
                checks.plain_date(name, text)
            columns[name] = text
        elif name == "primary_mdn":
            columns[name] = _mdn(checks, text)
        elif name == "primary_email_addr":
            if text:
                checks.email(name, text)
            columns[name] = text
        elif name == "primary_addr_country":
            country = text.upper()
            if country and (len(country) != 2 or not country.isalpha()):
                checks.fail(name, "must be an ISO 3166-1 alpha-2 code such as ES", "Format")
            columns[name] = country
        elif name in JSON_LIST_FIELDS or name == "extended_attributes":
            columns[name] = _json_field(checks, name, text)
        elif name == "preferred_language":
            if text:
                checks.language(name, text)
            columns[name] = text
        elif name == "voice_preference":
            choice = checks.choice(name, text or "NONE", VoicePreference)
            columns[name] = choice.value if choice else None
        elif name == "time_zone":
            if text:
                checks.time_zone(name, text)
            columns[name] = text
    edits = None
    if isinstance(values.get("fast_access"), str):
        text = values["fast_access"].strip()
        edits = {}
        if text:
            parsed = checks.json_value("fast_access", text, dict)
            edits = parsed if isinstance(parsed, dict) else {}
    return ContactInput(columns=columns, fast_access_edits=edits)


def _mdn(checks: Checks, text: str) -> str:
    if not text:
        return ""
    if len(text) > 32:
        checks.fail("primary_mdn", "is longer than 32 characters", "Length")
        return text
    try:
        return phone.classify(text).e164
    except phone.InvalidNumber as exc:
        checks.fail("primary_mdn", f"{exc} (use E.164, e.g. +34600111222)", "Format")
        return text


def _json_field(checks: Checks, name: str, text: str) -> Any:
    if not text:
        return None
    if len(text) > JSON_TEXT_MAX:
        checks.fail(name, f"is longer than {JSON_TEXT_MAX} characters", "Length")
        return None
    if name == "extended_attributes":
        return checks.json_value(name, text, dict)
    return checks.json_value(name, text, list)


class ContactService:
    CSV_COLUMNS: ClassVar[list[str]] = ["id", *INPUT_FIELDS]

    def __init__(
        self,
        db: Database,
        events: EventLog,
        clock: Clock,
        fast_access: FastAccessService,
        repository: ContactRepository | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self.rows = OrgTable(
            db=db,
            events=events,
            table=contacts,
            noun="contact",
            event_prefix="contact",
            snapshot=snapshot,
            unique_message="external_id is already used by another contact",
        )
        self._fast_access = fast_access
        self.repository = repository or ContactRepository()

    # -- single-contact writes -----------------------------------------------------------------

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        body = self._validated(values)
        now = self._clock.now()
        return await self.rows.write(
            lambda session: self.insert(session, org_id, application_id, body, now)
        )

    async def update(
        self,
        org_id: str,
        contact_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
        *,
        replace: bool = False,
    ) -> str:
        """POST updates the fields present; PUT (`replace`) also clears the absent ones."""
        body = self._validated(values)
        now = self._clock.now()

        def work(session: Session) -> str:
            current = self.repository.locked(session, org_id, contact_id)
            if current is None:
                raise NotFound(f"contact {contact_id!r} not found")
            require_version(current["version"], expected_version, "contact")
            self.apply_update(session, current, body, now, replace=replace)
            return contact_id

        return await self.rows.write(work)

    async def delete(self, org_id: str, contact_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.repository.locked(session, org_id, contact_id)
            if current is None:
                raise NotFound(f"contact {contact_id!r} not found")
            self.repository.delete(session, org_id, contact_id)
            self.repository.dirty_dynamic_groups(session, org_id)
            self.rows.event(session, "deleted", current, now)

        await self.rows.write(work)

    # -- building blocks, inside a caller's transaction ----------------------------------------

    def insert(
        self, session: Session, org_id: str, application_id: str, body: ContactInput, now: datetime
    ) -> str:
        """Create a contact from a validated body; returns its id."""
        return str(self.insert_row(session, org_id, application_id, body, now)["id"])

    def insert_row(
        self,
        session: Session,
        org_id: str,
        application_id: str,
        body: ContactInput,
        now: datetime,
        rules: Sequence[Rule] | None = None,
        *,
        writes: PendingWrites | None = None,
        external_id_checked: bool = False,
    ) -> dict[str, Any]:
        """Create a contact from a validated body; returns its row. With `writes`, the
        statements are queued there (a bulk caller flushes them), else executed now."""
        external_id = body.columns.get("external_id")
        if external_id and not external_id_checked:
            self._require_free_external_id(session, org_id, external_id, None)
        row: dict[str, Any] = {
            **_CLEARED,
            **body.columns,
            "id": new_id("ct_"),
            "org_id": org_id,
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
            "fast_access": None,
        }
        row |= self._derived(session, org_id, row, body, rules)
        queue = writes or PendingWrites()
        queue.inserts.append(row)
        queue.events.append(self.rows.new_event("created", row, now))
        if writes is None:
            self.flush(session, queue, org_id)
        return row

    def apply_update(
        self,
        session: Session,
        current: Row,
        body: ContactInput,
        now: datetime,
        rules: Sequence[Rule] | None = None,
        *,
        replace: bool = False,
        writes: PendingWrites | None = None,
    ) -> dict[str, Any]:
        """Update a locked contact row from a validated body; returns the new row (queued on
        `writes` when given, like insert_row)."""
        org_id = current["org_id"]
        external_id = body.columns.get("external_id")
        if external_id and external_id != current["external_id"]:
            self._require_free_external_id(session, org_id, external_id, current["id"])
        base = {**dict(current), **_CLEARED} if replace else dict(current)
        row = base | body.columns
        row |= self._derived(session, org_id, row, body, rules)
        row |= {"updated_at": now, "version": current["version"] + 1}
        queue = writes or PendingWrites()
        queue.updates.append({k: v for k, v in row.items() if k not in ("org_id", "created_at")})
        queue.events.append(self.rows.new_event("updated", row, now))
        if writes is None:
            self.flush(session, queue, org_id)
        return row

    def flush(self, session: Session, writes: PendingWrites, org_id: str) -> None:
        """Execute queued writes: one statement per kind, then the org's DYNAMIC groups are
        marked for a recount and the events appended."""
        self.repository.insert_many(session, writes.inserts)
        self.repository.update_many(session, writes.updates)
        if writes.inserts or writes.updates:
            self.repository.dirty_dynamic_groups(session, org_id)
        self._events.append(session, writes.events)
        writes.inserts, writes.updates, writes.events = [], [], []

    def _derived(
        self,
        session: Session,
        org_id: str,
        row: Mapping[str, Any],
        body: ContactInput,
        rules: Sequence[Rule] | None,
    ) -> dict[str, Any]:
        rules = self._fast_access.rules(session, org_id) if rules is None else rules
        edits = body.fast_access_edits or {}
        editable = {r.name for r in rules if not r.script}
        refused = sorted(set(edits) - editable)
        if refused:
            checks = Checks()
            checks.fail(
                "fast_access",
                f"{', '.join(refused)}: not a client-editable fast access attribute "
                "(derived by a rule, or no rule has that name)",
            )
            checks.raise_if_failed()
        return derive(rules, document(row), edits)

    def _require_free_external_id(
        self, session: Session, org_id: str, external_id: str, contact_id: str | None
    ) -> None:
        owner = self.repository.external_id_owner(session, org_id, external_id)
        if owner is not None and owner != contact_id:
            raise UniqueKeyViolated(
                f"external_id {external_id!r} is already used by contact {owner}",
                metadata={"field": "external_id"},
            )

    def _validated(self, values: Mapping[str, Any]) -> ContactInput:
        checks = Checks()
        body = validate(values, checks)
        checks.raise_if_failed()
        return body

    # -- bulk import (inside an import job's transaction) --------------------------------------

    def import_batch(
        self,
        session: Session,
        *,
        org_id: str,
        application_id: str,
        rows: Sequence[Mapping[str, str]],
        group_id: str | None,
        now: datetime,
    ) -> list[RowOutcome]:
        """Create or update (by external_id) one contact per row; invalid rows are reported,
        never raised. Rows map ContactInput names to CSV cells ("" = absent)."""
        rules = self._fast_access.rules(session, org_id)
        bodies: list[ContactInput | str] = []
        ids: list[str] = []  # an `id` column (e.g. an edited export) updates that contact
        for raw in rows:
            checks = Checks()
            valid = validate({k: v for k, v in raw.items() if v != ""}, checks)
            bodies.append(_describe(checks) if checks.violations else valid)
            ids.append(raw.get("id", "").strip())
        wanted = [
            b.columns["external_id"]
            for b in bodies
            if isinstance(b, ContactInput) and b.columns.get("external_id")
        ]
        existing = dict(self.repository.by_external_ids(session, org_id, wanted))
        by_id = self.repository.by_ids(session, org_id, [i for i in ids if i])
        outcomes: list[RowOutcome] = []
        linked: list[str] = []
        writes = PendingWrites()
        for body, given_id in zip(bodies, ids, strict=True):
            if isinstance(body, str):
                outcomes.append(RowOutcome(None, False, body))
                continue
            if given_id and given_id not in by_id:
                outcomes.append(RowOutcome(None, False, f"id: no contact {given_id!r}"))
                continue
            external_id = body.columns.get("external_id")
            target = by_id.get(given_id) if given_id else None
            if target is None and external_id:
                target = existing.get(external_id)
            # insert/apply_update raise only before their first statement: a refused row
            # leaves nothing behind, so no savepoint is needed.
            try:
                if target is not None:
                    row = self.apply_update(session, target, body, now, rules, writes=writes)
                    created = False
                else:
                    # Free: `existing` holds every taken key of the batch, also new ones.
                    row = self.insert_row(
                        session,
                        org_id,
                        application_id,
                        body,
                        now,
                        rules,
                        writes=writes,
                        external_id_checked=True,
                    )
                    created = True
            except DomainError as exc:
                outcomes.append(RowOutcome(None, False, _describe_error(exc)))
                continue
            contact_id = str(row["id"])
            by_id[contact_id] = row  # later rows of the batch see this version
            if row.get("external_id"):
                existing[row["external_id"]] = row
            outcomes.append(RowOutcome(contact_id, created))
            linked.append(contact_id)
        self.flush(session, writes, org_id)
        if group_id:
            self.repository.link(session, group_id, linked, now)
        return outcomes

    def rederive_batch(
        self, session: Session, org_id: str, after_id: str, limit: int, now: datetime
    ) -> str | None:
        """Re-derive fast access values of up to `limit` contacts after `after_id` (by id);
        returns the last id seen, or None when the org's contacts are exhausted."""
        rules = self._fast_access.rules(session, org_id)
        query = (
            select(contacts)
            .where(contacts.c.org_id == org_id, contacts.c.id > after_id)
            .order_by(contacts.c.id)
            .limit(limit)
        )
        rows = list(session.execute(query).mappings())
        for row in rows:
            derived = derive(rules, document(row), {})
            if any(row[k] != v for k, v in derived.items()):
                fresh = dict(row) | derived | {"updated_at": now, "version": row["version"] + 1}
                self.repository.update(
                    session, row["id"], derived | {"updated_at": now, "version": fresh["version"]}
                )
                self.rows.event(session, "updated", fresh, now)
        if rows:
            self.repository.dirty_dynamic_groups(session, org_id)
        return str(rows[-1]["id"]) if len(rows) == limit else None

    @staticmethod
    def csv_row(row: Mapping[str, Any]) -> list[str]:
        """A contacts row as export CSV cells, in CSV_COLUMNS order."""
        data = snapshot(row)
        return [str(data[name]) for name in ContactService.CSV_COLUMNS]

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, org_id: str, contact_id: str) -> dict[str, Any]:
        async with self._db.read() as session:
            row = await self.repository.get(session, org_id, contact_id)
        if row is None:
            raise NotFound(f"contact {contact_id!r} not found")
        return snapshot(row)

    def where(
        self, org_id: str, given: Mapping[str, str], criteria_text: str, checks: Checks
    ) -> list[Any]:
        """WHERE clauses of a contact list: the org, exact filters, optional criteria."""
        mdn = given.get("primary_mdn")
        if mdn is not None and mdn.strip().isdigit():
            # Stored numbers are E.164; an unencoded `+` in the query arrives as a space.
            given = {**given, "primary_mdn": "+" + mdn.strip()}
        clauses = [contacts.c.org_id == org_id]
        clauses += listing.filters(
            checks, contacts, given, columns=FILTER_COLUMNS, times=FILTER_TIMES
        )
        if criteria_text:
            clauses.append(criteria_language.parse(criteria_text).where(contacts))
        return clauses

    async def list_page(
        self,
        org_id: str,
        given: Mapping[str, str],
        criteria_text: str,
        page: listing.Page,
        checks: Checks,
        *,
        source: Table | None = None,
        extra: Sequence[Any] = (),
    ) -> tuple[list[dict[str, Any]], str]:
        clauses = self.where(org_id, given, criteria_text, checks)
        checks.raise_if_failed()
        query = select(contacts)
        if source is not None:
            query = query.select_from(source)
        query = listing.paged(query.where(*clauses, *extra), contacts, page)
        async with self._db.read() as session:
            rows = await self.repository.select_rows(session, query)
        return [snapshot(r) for r in rows[: page.limit]], listing.next_page_token(rows, page)


def _describe(checks: Checks) -> str:
    return "; ".join(f"{v.field}: {v.description}" for v in checks.violations)


def _describe_error(error: DomainError) -> str:
    if error.violations:
        return "; ".join(f"{v.field}: {v.description}" for v in error.violations)
    return error.message


__all__ = ["SLOTS", "ContactInput", "ContactService", "RowOutcome", "snapshot", "validate"]
