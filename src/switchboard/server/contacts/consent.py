"""Consent: per-org address statuses, their append-only history, and the one "may we send?" rule.

A consent status is keyed by (org, address type, address, sender id); sender id "" means every
sender of the org. Statuses change from three sources:

- COMPANY: the customer, through this API (create, the POST update, delete, and the
  Communications API's blacklist removal). The only source that lifts BLACKLIST or WHITELIST.
- MESSAGE: an end-user keyword (messaging calls `record_keyword`). Moves between NONE, OPTIN and
  OPTOUT; never overwrites BLACKLIST or WHITELIST (the keyword is still recorded in the history).
- CARRIER: a carrier's blacklist file (`record_carrier_blacklist`): sets BLACKLIST.

Every change, and every detected keyword, appends a history record in the same transaction; every
change of a status also appends a `contact_address_status.created|updated|deleted` event whose
payload is the status as it became (as it was, for deletions).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Table, and_, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.server.contacts.models import (
    AddressHistoryRecord,
    AddressStatusRecord,
    AddressType,
    ConsentSource,
    ConsentStatus,
)
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.errors import (
    NotFound,
    UniqueKeyViolated,
    require_version,
)
from switchboard.server.core.events import EventLog
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.telephony import phone

ADDRESS_MAX = 320
SENDER_ID_MAX = 64
KEYWORD_MAX = 64
_BATCH = 500  # addresses per query of may_send_many

_statuses = table_of(AddressStatusRecord)
_history = table_of(AddressHistoryRecord)
_s = _statuses.c
_h = _history.c

_STICKY = frozenset({ConsentStatus.BLACKLIST.value, ConsentStatus.WHITELIST.value})
_DIGITS = re.compile(r"^[0-9]{6,15}$")

STATUS_FILTER_COLUMNS = {"created_date": "created_at", "last_updated_date": "updated_at"}
STATUS_FILTER_TIMES = frozenset({"created_date", "last_updated_date"})
HISTORY_FILTER_COLUMNS = {"created_date": "created_at"}
HISTORY_FILTER_TIMES = frozenset({"created_date"})


class ConsentRequirement(StrEnum):
    """What a message needs from its recipient's consent (messaging's `consent_requirement`)."""

    OPT_IN = "OPT_IN"  # send only to addresses explicitly opted in (OPTIN or WHITELIST)
    OPT_OUT = "OPT_OUT"  # send unless explicitly opted out (OPTOUT or BLACKLIST)
    NONE = "NONE"  # send irrespective of consent, except to BLACKLIST


@dataclass(frozen=True)
class ConsentDecision:
    allowed: bool
    status: ConsentStatus  # the status that decided (NONE when the address has no record)
    reason: str


def decide(
    sender_status: str | None, all_senders_status: str | None, requirement: ConsentRequirement
) -> ConsentDecision:
    """May a sender send to an address, given the address's status towards that sender id and
    towards all senders (None: no record, i.e. NONE)?

    1. BLACKLIST, towards the sender or towards all senders: refused, whatever the requirement.
    2. WHITELIST, towards the sender or towards all senders: allowed.
    3. Otherwise the effective status is the sender-specific one unless it is NONE (or missing),
       else the all-senders one:
       - requirement NONE: allowed (only BLACKLIST refuses);
       - OPTOUT: refused under OPT_IN and OPT_OUT;
       - OPTIN: allowed;
       - NONE: allowed under OPT_OUT, refused under OPT_IN.
    """
    blacklist = ConsentStatus.BLACKLIST.value
    whitelist = ConsentStatus.WHITELIST.value
    if blacklist in (sender_status, all_senders_status):
        scope = "this sender id" if sender_status == blacklist else "all sender ids"
        return ConsentDecision(
            False, ConsentStatus.BLACKLIST, f"address is blacklisted for {scope}"
        )
    if whitelist in (sender_status, all_senders_status):
        return ConsentDecision(True, ConsentStatus.WHITELIST, "address is whitelisted")
    if sender_status and sender_status != ConsentStatus.NONE.value:
        effective, scope = ConsentStatus(sender_status), "this sender id"
    else:
        effective, scope = ConsentStatus(all_senders_status or "NONE"), "all sender ids"
    if requirement == ConsentRequirement.NONE:
        return ConsentDecision(True, effective, "consent is not required")
    if effective == ConsentStatus.OPTOUT:
        return ConsentDecision(False, effective, f"address opted out of {scope}")
    if effective == ConsentStatus.OPTIN:
        return ConsentDecision(True, effective, f"address opted in to {scope}")
    if requirement == ConsentRequirement.OPT_IN:
        return ConsentDecision(False, effective, "address has not opted in")
    return ConsentDecision(True, effective, "address has not opted out")


class InvalidAddress(ValueError):
    """The address is not valid for its type; the message says why in a client's words."""


def normalise_address(
    address_type: AddressType, raw: str, default_region: str | None = None
) -> str:
    """MDNs as E.164, emails lower-cased; other types trimmed. Raises InvalidAddress."""
    text = raw.strip()
    if not text:
        raise InvalidAddress("is required")
    if address_type == AddressType.MDN:
        try:
            return phone.classify(text, default_region).e164
        except phone.InvalidNumber as exc:
            raise InvalidAddress(str(exc)) from exc
    if address_type == AddressType.EMAIL:
        checks = Checks()
        checks.email("address", text)
        if checks.violations:
            raise InvalidAddress(f"{text!r} is not an email address")
        return text.lower()
    return text


def status_snapshot(row: Row) -> Snapshot:
    """A consent status as clients see it (proto field names, JSON-safe)."""
    return {
        "id": row["id"],
        "address_type": row["address_type"],
        "address": row["address"],
        "sender_id": row["sender_id"],
        "consent_status": row["consent_status"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def history_snapshot(row: Row) -> Snapshot:
    """A history record as clients see it; records never change, so version_number is 1."""
    return {
        "id": row["id"],
        "msisdn": row["msisdn"],
        "address_type": row["address_type"],
        "sender_id": row["sender_id"],
        "source": row["source"],
        "status": row["status"],
        "timestamp": iso(row["timestamp"]),
        "message": row["message"],
        "keyword": row["keyword"],
        "address_status_id": row["address_status_id"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["created_at"]),
        "version_number": 1,
    }


# History is listed in id order, which must be the order of the changes: ids from core.ids only
# order by millisecond, so this process's history ids also strictly increase within one.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_HISTORY_PREFIX = "cah_"
_history_id_lock = threading.Lock()
_last_history_id = ""


def _successor(identifier: str) -> str:
    body = list(identifier[len(_HISTORY_PREFIX) :])
    for i in range(len(body) - 1, -1, -1):
        digit = _CROCKFORD.index(body[i])
        if digit < len(_CROCKFORD) - 1:
            body[i] = _CROCKFORD[digit + 1]
            break
        body[i] = _CROCKFORD[0]
    return _HISTORY_PREFIX + "".join(body)


def _history_id() -> str:
    global _last_history_id
    with _history_id_lock:
        candidate = new_id(_HISTORY_PREFIX)
        if candidate <= _last_history_id:
            candidate = _successor(_last_history_id)
        _last_history_id = candidate
        return candidate


_INSERT_NEW = {
    dialect.dialect.name: dialect.insert(_statuses)
    .on_conflict_do_nothing(index_elements=["org_id", "address_type", "address", "sender_id"])
    .returning(_s.id)
    for dialect in (postgresql, sqlite)
}


class ConsentService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        default_region: str | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._region = default_region
        # Statuses say "does not exist" where OrgTable says "not found": only events go through it.
        self.statuses = OrgTable(
            db=db,
            events=events,
            table=_statuses,
            noun="consent status",
            event_prefix="contact_address_status",
            snapshot=status_snapshot,
        )

    # ---- reads ----------------------------------------------------------------------------

    async def list_statuses(
        self, org_id: str, given: Mapping[str, str], *, limit: int, offset: int, page_token: str
    ) -> tuple[list[Snapshot], str]:
        rows, token = await self._list(
            _statuses,
            org_id,
            given,
            limit,
            offset,
            page_token,
            STATUS_FILTER_COLUMNS,
            STATUS_FILTER_TIMES,
        )
        return [status_snapshot(r) for r in rows], token

    async def get_status(self, org_id: str, status_id: str) -> Snapshot:
        async with self._db.read() as session:
            query = select(_statuses).where(_s.org_id == org_id, _s.id == status_id)
            row = (await session.execute(query)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"consent status {status_id!r} does not exist")
        return status_snapshot(row)

    async def list_history(
        self, org_id: str, given: Mapping[str, str], *, limit: int, offset: int, page_token: str
    ) -> tuple[list[Snapshot], str]:
        """Oldest first: history ids increase with time."""
        rows, token = await self._list(
            _history,
            org_id,
            given,
            limit,
            offset,
            page_token,
            HISTORY_FILTER_COLUMNS,
            HISTORY_FILTER_TIMES,
        )
        return [history_snapshot(r) for r in rows], token

    async def _list(
        self,
        table: Table,
        org_id: str,
        given: Mapping[str, str],
        limit: int,
        offset: int,
        page_token: str,
        columns: Mapping[str, str],
        times: frozenset[str],
    ) -> tuple[list[Row], str]:
        checks = Checks()
        page = listing.page(checks, limit, offset, page_token)
        clauses = listing.filters(checks, table, given, columns=columns, times=times)
        checks.raise_if_failed()
        query = listing.paged(select(table).where(table.c.org_id == org_id, *clauses), table, page)
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        return rows[: page.limit], listing.next_page_token(rows, page)

    async def may_send(
        self,
        org_id: str,
        sender_id: str,
        address_type: AddressType | str,
        address: str,
        requirement: ConsentRequirement | str,
    ) -> ConsentDecision:
        """May `sender_id` send to `address` under `requirement`? See `decide` for the rules."""
        decisions = await self.may_send_many(
            org_id, sender_id, address_type, [address], requirement
        )
        return decisions[address]

    async def may_send_many(
        self,
        org_id: str,
        sender_id: str,
        address_type: AddressType | str,
        addresses: Iterable[str],
        requirement: ConsentRequirement | str,
    ) -> dict[str, ConsentDecision]:
        """`may_send` for many addresses of one type at once (keyed by the addresses as given);
        one query per 500 addresses."""
        kind = AddressType(address_type)
        needed = ConsentRequirement(requirement)
        wanted = {raw: self._lenient(kind, raw) for raw in addresses}
        found: dict[tuple[str, str], str] = {}
        unique = sorted(set(wanted.values()))
        async with self._db.read() as session:
            for start in range(0, len(unique), _BATCH):
                query = select(_s.address, _s.sender_id, _s.consent_status).where(
                    _s.org_id == org_id,
                    _s.address_type == kind.value,
                    _s.address.in_(unique[start : start + _BATCH]),
                    _s.sender_id.in_(sorted({sender_id, ""})),
                )
                for row in (await session.execute(query)).mappings():
                    found[(row["address"], row["sender_id"])] = row["consent_status"]
        return {
            raw: decide(found.get((address, sender_id)), found.get((address, "")), needed)
            for raw, address in wanted.items()
        }

    def _lenient(self, address_type: AddressType, raw: str) -> str:
        """The stored form of an address we are asked about; as given if it does not parse."""
        try:
            return normalise_address(address_type, raw, self._region)
        except InvalidAddress:
            return raw.strip()

    # ---- COMPANY changes (the API) --------------------------------------------------------

    def _checked_type(self, checks: Checks, value: Any, *, required: bool) -> AddressType | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                checks.fail("address_type", "is required", "Required")
            return None
        return checks.choice("address_type", str(value), AddressType)

    def _checked_status(
        self, checks: Checks, value: Any, *, required: bool
    ) -> ConsentStatus | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                checks.fail("consent_status", "is required", "Required")
            return None
        return checks.choice("consent_status", str(value), ConsentStatus)

    def _checked_address(
        self, checks: Checks, address_type: AddressType | None, value: Any
    ) -> str | None:
        if not checks.ok("address") or address_type is None or value is None:
            return None
        try:
            return normalise_address(address_type, str(value), self._region)
        except InvalidAddress as exc:
            reason = "Required" if not str(value).strip() else "Format"
            checks.fail("address", str(exc), reason)
            return None

    async def create_status(
        self, org_id: str, application_id: str, fields: Mapping[str, Any]
    ) -> str:
        """Records the consent of an address; one record per (address type, address, sender id)
        of the org, else 409 / 1011."""
        checks = Checks()
        checks.lengths(dict(fields), {"address": ADDRESS_MAX, "sender_id": SENDER_ID_MAX})
        address_type = self._checked_type(checks, fields.get("address_type"), required=True)
        consent = self._checked_status(checks, fields.get("consent_status"), required=True)
        address = None
        if checks.ok("address") and checks.required("address", fields.get("address")):
            address = self._checked_address(checks, address_type, fields.get("address"))
        sender_id = str(fields.get("sender_id") or "").strip()
        checks.raise_if_failed()
        assert address_type is not None and consent is not None and address is not None
        key = f"{address_type.value} {address!r} and sender id {sender_id!r}"

        def work(session: Session) -> str:
            now = self._clock.now()
            row = {
                "id": new_id("cas_"),
                "org_id": org_id,
                "address_type": address_type.value,
                "address": address,
                "sender_id": sender_id,
                "consent_status": consent.value,
                "application_id": application_id,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            connection = session.connection()
            inserted = connection.execute(_INSERT_NEW[connection.dialect.name], row).first()
            if inserted is None:
                existing = self._find(session, org_id, address_type.value, address, sender_id)
                raise UniqueKeyViolated(
                    f"a consent status for {key} already exists",
                    metadata={"id": existing["id"]} if existing else {},
                )
            self._record(session, row, ConsentSource.COMPANY, now, application_id=application_id)
            self.statuses.event(session, "created", row, now)
            return str(row["id"])

        try:
            status_id = await self._db.run_write(work)
        except IntegrityError as exc:  # a concurrent create of the same key won the race
            raise UniqueKeyViolated(f"a consent status for {key} already exists") from exc
        return status_id

    async def update_status(
        self,
        org_id: str,
        application_id: str,
        status_id: str,
        fields: Mapping[str, Any],
        expected_version: int | None,
    ) -> str:
        """The explicit change of consent (source COMPANY), the only way to lift BLACKLIST or
        WHITELIST. address_type, address and sender_id identify the record: if given, they
        must be the record's."""
        checks = Checks()
        checks.lengths(dict(fields), {"address": ADDRESS_MAX, "sender_id": SENDER_ID_MAX})
        address_type = self._checked_type(checks, fields.get("address_type"), required=False)
        consent = self._checked_status(checks, fields.get("consent_status"), required=False)
        checks.raise_if_failed()

        def work(session: Session) -> None:
            row = self._get_for_update(session, org_id, status_id)
            checks = Checks()
            if address_type is not None and address_type.value != row["address_type"]:
                checks.fail("address_type", "cannot change; create a new consent status instead")
            if fields.get("address") is not None:
                address = self._checked_address(
                    checks, AddressType(row["address_type"]), fields["address"]
                )
                if address is not None and address != row["address"]:
                    checks.fail("address", "cannot change; create a new consent status instead")
            sender_id = fields.get("sender_id")
            if sender_id is not None and str(sender_id).strip() != row["sender_id"]:
                checks.fail("sender_id", "cannot change; create a new consent status instead")
            checks.raise_if_failed()
            require_version(row["version"], expected_version, "consent status")
            if consent is None:
                return  # nothing to change
            self._change(
                session, row, consent, ConsentSource.COMPANY, application_id=application_id
            )

        await self._db.run_write(work)
        return status_id

    async def delete_status(
        self, org_id: str, application_id: str, status_id: str, expected_version: int | None
    ) -> None:
        """Deletes the status; its history stays, and gains a record saying the address is back to
        NONE (no record means no consent either way)."""

        def work(session: Session) -> None:
            row = self._get_for_update(session, org_id, status_id)
            require_version(row["version"], expected_version, "consent status")
            session.connection().execute(delete(_statuses).where(_s.id == row["id"]))
            now = self._clock.now()
            self._record(
                session,
                row,
                ConsentSource.COMPANY,
                now,
                status=ConsentStatus.NONE.value,
                application_id=application_id,
            )
            self.statuses.event(session, "deleted", row, now)

        await self._db.run_write(work)

    def blacklist_candidates(self, raw: str) -> tuple[str, list[tuple[str, str]]]:
        """The normalised form of a path's address and the (type, address) keys it may be stored
        under: a phone number (E.164, also without its `+`) is an MDN, anything else an EMAIL
        (lower-cased) or, verbatim, a SOCIAL or PUSH address."""
        text = unquote(raw).strip()
        checks = Checks()
        if checks.required("address", text):
            checks.length("address", text, ADDRESS_MAX)
        checks.raise_if_failed()
        for attempt in (text, "+" + text) if _DIGITS.match(text) else (text,):
            try:
                e164 = normalise_address(AddressType.MDN, attempt, self._region)
            except InvalidAddress:
                continue
            return e164, [(AddressType.MDN.value, e164)]
        lowered = text.lower()
        keys = [(AddressType.EMAIL.value, lowered)]
        keys += [(t.value, text) for t in (AddressType.SOCIAL, AddressType.PUSH)]
        return (lowered if "@" in text else text), keys

    async def remove_blacklist(
        self, org_id: str, application_id: str, raw_address: str
    ) -> tuple[str, int]:
        """Moves every BLACKLIST status of the address (any sender id) to NONE, source COMPANY.
        Returns the normalised address and how many statuses changed; 404 when none was."""
        address, keys = self.blacklist_candidates(raw_address)

        def work(session: Session) -> int:
            query = select(_statuses).where(
                _s.org_id == org_id,
                _s.consent_status == ConsentStatus.BLACKLIST.value,
                or_(*(and_(_s.address_type == t, _s.address == a) for t, a in keys)),
            )
            rows = list(session.connection().execute(for_update(session, query)).mappings())
            if not rows:
                raise NotFound(f"{address} is not on the blacklist")
            for row in sorted(rows, key=lambda r: str(r["id"])):
                self._change(
                    session,
                    row,
                    ConsentStatus.NONE,
                    ConsentSource.COMPANY,
                    application_id=application_id,
                )
            return len(rows)

        count = await self._db.run_write(work)
        return address, count

    # ---- MESSAGE and CARRIER changes (messaging, carrier files) ---------------------------

    def apply_keyword(
        self,
        session: Session,
        *,
        org_id: str,
        address_type: AddressType | str,
        address: str,
        sender_id: str,
        keyword: str,
        new_status: ConsentStatus | str | None,
        message: str = "",
        received_at: datetime | None = None,
        source: ConsentSource = ConsentSource.MESSAGE,
    ) -> Snapshot | None:
        """An end-user keyword, inside the caller's write transaction (synchronous, like every
        `Database.run_write` body). `new_status` is OPTIN, OPTOUT or NONE, or None for a keyword
        with no consent action. Creates the status if missing; a MESSAGE never overwrites
        BLACKLIST or WHITELIST, but the history records the keyword either way. Returns the
        status as it is afterwards (None if the address still has none). Raises InvalidAddress.
        """
        target = None if new_status is None else ConsentStatus(new_status)
        if source == ConsentSource.MESSAGE and target is not None and target.value in _STICKY:
            raise ValueError("an end-user keyword cannot blacklist or whitelist an address")
        snapshot, _ = self._apply(
            session,
            org_id=org_id,
            address_type=AddressType(address_type),
            address=address,
            sender_id=sender_id,
            new_status=target,
            source=source,
            keyword=keyword,
            message=message,
            received_at=received_at,
        )
        return snapshot

    async def record_keyword(
        self,
        *,
        org_id: str,
        address_type: AddressType | str,
        address: str,
        sender_id: str,
        keyword: str,
        new_status: ConsentStatus | str | None,
        message: str = "",
        received_at: datetime | None = None,
        source: ConsentSource = ConsentSource.MESSAGE,
    ) -> Snapshot | None:
        """`apply_keyword` in a transaction of its own."""

        def work(session: Session) -> Snapshot | None:
            return self.apply_keyword(
                session,
                org_id=org_id,
                address_type=address_type,
                address=address,
                sender_id=sender_id,
                keyword=keyword,
                new_status=new_status,
                message=message,
                received_at=received_at,
                source=source,
            )

        result = await self._db.run_write(work)
        return result

    def apply_carrier_blacklist(
        self,
        session: Session,
        *,
        org_id: str,
        address_type: AddressType | str,
        addresses: Sequence[str],
        sender_id: str = "",
        received_at: datetime | None = None,
    ) -> int:
        """A carrier's blacklist (source CARRIER), inside the caller's transaction: every address
        becomes BLACKLIST (created if missing). Returns how many statuses changed."""
        changed = 0
        for address in addresses:
            _, did_change = self._apply(
                session,
                org_id=org_id,
                address_type=AddressType(address_type),
                address=address,
                sender_id=sender_id,
                new_status=ConsentStatus.BLACKLIST,
                source=ConsentSource.CARRIER,
                keyword="",
                message="",
                received_at=received_at,
            )
            changed += did_change
        return changed

    async def record_carrier_blacklist(
        self,
        *,
        org_id: str,
        address_type: AddressType | str,
        addresses: Sequence[str],
        sender_id: str = "",
        received_at: datetime | None = None,
    ) -> int:
        """`apply_carrier_blacklist` in a transaction of its own."""

        def work(session: Session) -> int:
            return self.apply_carrier_blacklist(
                session,
                org_id=org_id,
                address_type=address_type,
                addresses=addresses,
                sender_id=sender_id,
                received_at=received_at,
            )

        changed = await self._db.run_write(work)
        return changed

    def _apply(
        self,
        session: Session,
        *,
        org_id: str,
        address_type: AddressType,
        address: str,
        sender_id: str,
        new_status: ConsentStatus | None,
        source: ConsentSource,
        keyword: str,
        message: str,
        received_at: datetime | None,
    ) -> tuple[Snapshot | None, bool]:
        """Applies one MESSAGE or CARRIER input; returns the status afterwards and whether it
        changed (or was created)."""
        normalised = normalise_address(address_type, address, self._region)
        sender_id = sender_id.strip()
        if len(normalised) > ADDRESS_MAX or len(sender_id) > SENDER_ID_MAX:
            raise InvalidAddress("address or sender id is too long")
        keyword = keyword.strip()[:KEYWORD_MAX]
        now = self._clock.now()
        at = received_at or now
        row = self._find(session, org_id, address_type.value, normalised, sender_id, lock=True)
        if row is None and new_status is not None:
            fresh = {
                "id": new_id("cas_"),
                "org_id": org_id,
                "address_type": address_type.value,
                "address": normalised,
                "sender_id": sender_id,
                "consent_status": new_status.value,
                "application_id": "",
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            connection = session.connection()
            if connection.execute(_INSERT_NEW[connection.dialect.name], fresh).first() is not None:
                self._record(
                    session, fresh, source, at, keyword=keyword, message=message, created_at=now
                )
                self.statuses.event(session, "created", fresh, now)
                return status_snapshot(fresh), True
            # Another transaction created it since we looked (and has committed): carry on.
            row = self._find(session, org_id, address_type.value, normalised, sender_id, lock=True)
        if row is None:  # a keyword without consent action, from an address with no status
            history_key = {
                "id": "",
                "org_id": org_id,
                "address_type": address_type.value,
                "address": normalised,
                "sender_id": sender_id,
                "consent_status": ConsentStatus.NONE.value,
            }
            self._record(
                session, history_key, source, at, keyword=keyword, message=message, created_at=now
            )
            return None, False
        sticky = row["consent_status"] in _STICKY and source == ConsentSource.MESSAGE
        if new_status is None or sticky or row["consent_status"] == new_status.value:
            self._record(session, row, source, at, keyword=keyword, message=message, created_at=now)
            return status_snapshot(row), False
        after = self._change(
            session, row, new_status, source, at=at, keyword=keyword, message=message
        )
        return after, True

    # ---- shared write steps -----------------------------------------------------------------

    def _find(
        self,
        session: Session,
        org_id: str,
        address_type: str,
        address: str,
        sender_id: str,
        *,
        lock: bool = False,
    ) -> Row | None:
        query = select(_statuses).where(
            _s.org_id == org_id,
            _s.address_type == address_type,
            _s.address == address,
            _s.sender_id == sender_id,
        )
        if lock:
            query = for_update(session, query)
        return session.connection().execute(query).mappings().one_or_none()

    def _get_for_update(self, session: Session, org_id: str, status_id: str) -> Row:
        query = select(_statuses).where(_s.org_id == org_id, _s.id == status_id)
        row = session.connection().execute(for_update(session, query)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"consent status {status_id!r} does not exist")
        return row

    def _change(
        self,
        session: Session,
        row: Row,
        status: ConsentStatus,
        source: ConsentSource,
        *,
        application_id: str = "",
        at: datetime | None = None,
        keyword: str = "",
        message: str = "",
    ) -> Snapshot:
        """Sets a status (version + 1) with its history record and event."""
        now = self._clock.now()
        changes = {"consent_status": status.value, "updated_at": now, "version": row["version"] + 1}
        session.connection().execute(update(_statuses).where(_s.id == row["id"]).values(changes))
        after = {**row, **changes}
        self._record(
            session,
            after,
            source,
            at or now,
            keyword=keyword,
            message=message,
            application_id=application_id,
            created_at=now,
        )
        self.statuses.event(session, "updated", after, now)
        return status_snapshot(after)

    def _record(
        self,
        session: Session,
        row: Row,
        source: ConsentSource,
        timestamp: datetime,
        *,
        status: str | None = None,
        keyword: str = "",
        message: str = "",
        application_id: str = "",
        created_at: datetime | None = None,
    ) -> None:
        """Appends one history record about the status `row` (its current status unless
        `status` is given)."""
        session.connection().execute(
            insert(_history),
            {
                "id": _history_id(),
                "org_id": row["org_id"],
                "address_status_id": row["id"],
                "address_type": row["address_type"],
                "msisdn": row["address"],
                "sender_id": row["sender_id"],
                "source": source.value,
                "status": status or row["consent_status"],
                "message": message,
                "keyword": keyword,
                "timestamp": timestamp,
                "application_id": application_id,
                "created_at": created_at or timestamp,
            },
        )
