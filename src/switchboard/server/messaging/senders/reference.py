"""Sender ID classes and types: reference data, read-only to customers.

They are seeded at start-up from `data/reference_data.json`, once per data-file `version` (the
versions applied are recorded, so restarts and replicas seed nothing twice; a new version
upserts the rows it lists and leaves other rows alone), and managed by operators through the
Admin-only Put RPCs. The file also carries the operator's SHARED and PREPROVISIONED senders,
inserted when absent.

The `OTHER` country rule: a class whose applicable_countries holds `OTHER` applies to every
country that no class lists explicitly; for a country some class lists, the OTHER classes are
not available (see `class_applies`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from importlib import resources
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import NotFound, require_version
from switchboard.server.core.ids import new_id
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks
from switchboard.server.delivery.policies import ClassPolicy
from switchboard.server.messaging.senders.common import list_filters, pack, split_items, unpack
from switchboard.server.messaging.senders.models import (
    SYSTEM_ORG,
    AddressFormat,
    ReferenceDataVersionRecord,
    SenderIdClassRecord,
    SenderIdRecord,
    SenderIdTypeRecord,
)

log = logging.getLogger(__name__)
classes = table_of(SenderIdClassRecord)
types = table_of(SenderIdTypeRecord)
versions = table_of(ReferenceDataVersionRecord)
senders = table_of(SenderIdRecord)

OTHER = "OTHER"
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_WEEKDAYS = frozenset({"MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN", "HOL", "OTH"})
_WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$")
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/([a-z0-9][a-z0-9!#$&^_.+-]*|\*)$")
_DATA_FILE = "reference_data.json"


def class_snapshot(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "designation": row["designation"],
        "applicable_countries": unpack(row["applicable_countries"]),
        "country_peak_throughput": row["country_peak_throughput"],
        "country_peak_total_throughput": row["country_peak_total_throughput"],
        "country_daily_throughput": row["country_daily_throughput"],
        "delivery_window": row["delivery_window"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def type_snapshot(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "capabilities": row["capabilities"],
        "allowed_mime_types": row["allowed_mime_types"],
        "blocked_mime_types": row["blocked_mime_types"],
        "gateway_id": row["gateway_id"],
        "credential_parameter_list": unpack(row["credential_parameter_list"]),
        "address_format": row["address_format"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def mime_allowed(type_row: Row, mime_type: str) -> bool:
    """Whether content of `mime_type` may go out on senders of this type: not blocked (exact or
    `type/*`), and listed when the allowed list is not empty."""
    mime = mime_type.split(";")[0].strip().lower()
    family = mime.split("/")[0] + "/*"

    def listed(text: str) -> bool:
        entries = {e.strip().lower() for e in text.split(",") if e.strip()}
        return mime in entries or family in entries or "*/*" in entries

    if listed(type_row["blocked_mime_types"]):
        return False
    return not type_row["allowed_mime_types"].strip() or listed(type_row["allowed_mime_types"])


def credential_parameters(type_row: Row) -> dict[str, list[str]]:
    """Provider → the keys its credentials object needs (from `PROVIDER:a,b` entries)."""
    result: dict[str, list[str]] = {}
    for entry in unpack(type_row["credential_parameter_list"]):
        provider, _, params = entry.partition(":")
        result[provider] = [p for p in params.split(";") if p]
    return result


def _validate_window(checks: Checks, text: str) -> str:
    parsed = checks.json_value("delivery_window", text, dict)
    if parsed is None:
        return text
    for country, days in parsed.items():
        if country != "DEFAULT" and not _COUNTRY.match(country):
            checks.fail("delivery_window", f"{country!r} is not DEFAULT or an ISO country code")
            continue
        if not isinstance(days, dict):
            checks.fail("delivery_window", f"{country}: must map weekdays to window lists")
            continue
        for day, windows in days.items():
            if day not in _WEEKDAYS:
                checks.fail("delivery_window", f"{country}.{day}: not MON…SUN, HOL or OTH")
            elif not isinstance(windows, list) or not all(
                isinstance(w, str) and _WINDOW.match(w) and w[:5] < w[6:] for w in windows
            ):
                checks.fail("delivery_window", f"{country}.{day}: windows are HH:MM-HH:MM")
    return json.dumps(parsed, separators=(",", ":"))


def _mime_list(checks: Checks, field: str, text: str) -> str:
    entries = split_items([text.lower()])
    for entry in entries:
        if not _MIME.match(entry) and entry != "*/*":
            checks.fail(field, f"{entry!r} is not a MIME type", "Format")
    return ",".join(entries)


def class_changes(class_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Columns of a class from a Put body (absent fields take their defaults)."""
    checks = Checks()
    if not _ID.match(class_id):
        checks.fail("class_id", "must be 1-64 lower-case letters, digits, _ . -", "Format")
    for field, limit in (("name", 256), ("description", 1024), ("designation", 64)):
        checks.length(field, values.get(field), limit)
    if not (values.get("name") or "").strip():
        checks.fail("name", "is required", "Required")
    countries = split_items(values.get("applicable_countries", []), upper=True)
    for country in countries:
        if country != OTHER and not _COUNTRY.match(country):
            checks.fail("applicable_countries", f"{country!r} is not OTHER or an ISO country code")
    if not countries:
        checks.fail("applicable_countries", "is required (OTHER for any country)", "Required")
    numbers = {}
    for field in (
        "country_peak_throughput",
        "country_peak_total_throughput",
        "country_daily_throughput",
    ):
        number = float(values.get(field, 0.0))
        if number < 0:
            checks.fail(field, "must not be negative", "Range")
        numbers[field] = number
    window = values.get("delivery_window") or ""
    if window:
        window = _validate_window(checks, window)
    checks.raise_if_failed()
    return {
        "name": values["name"].strip(),
        "description": values.get("description", ""),
        "designation": (values.get("designation") or "").strip(),
        "applicable_countries": pack(countries),
        **numbers,
        "delivery_window": window,
    }


def type_changes(type_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Columns of a type from a Put body (absent fields take their defaults)."""
    checks = Checks()
    if not _ID.match(type_id):
        checks.fail("type_id", "must be 1-64 lower-case letters, digits, _ . -", "Format")
    for field, limit in (
        ("name", 256),
        ("description", 1024),
        ("capabilities", 256),
        ("allowed_mime_types", 2048),
        ("blocked_mime_types", 2048),
        ("gateway_id", 128),
    ):
        checks.length(field, values.get(field), limit)
    if not (values.get("name") or "").strip():
        checks.fail("name", "is required", "Required")
    capabilities = split_items([values.get("capabilities", "")], upper=True)
    if not capabilities:
        checks.fail("capabilities", "is required (SMS, MMS, EMAIL, WHATSAPP…)", "Required")
    address_format = AddressFormat.ANY
    if values.get("address_format"):
        address_format = (
            checks.choice("address_format", values["address_format"], AddressFormat)
            or address_format
        )
    parameters = []
    for entry in values.get("credential_parameter_list", []):
        provider, sep, params = entry.partition(":")
        names = split_items([params])
        if not sep or not provider.strip() or not names:
            checks.fail("credential_parameter_list", f"{entry!r} is not PROVIDER:param1,param2")
            continue
        parameters.append(f"{provider.strip()}:{';'.join(names)}")
    allowed = _mime_list(checks, "allowed_mime_types", values.get("allowed_mime_types", ""))
    blocked = _mime_list(checks, "blocked_mime_types", values.get("blocked_mime_types", ""))
    checks.raise_if_failed()
    return {
        "name": values["name"].strip(),
        "description": values.get("description", ""),
        "capabilities": ",".join(capabilities),
        "allowed_mime_types": allowed,
        "blocked_mime_types": blocked,
        "gateway_id": (values.get("gateway_id") or "").strip(),
        "credential_parameter_list": pack(parameters),
        "address_format": address_format.value,
    }


def class_applies(session: Session, class_row: Row, country: str) -> bool:
    """The OTHER rule: whether senders sending to `country` may use this class."""
    listed = unpack(class_row["applicable_countries"])
    if not country or country in listed:
        return True
    if OTHER not in listed:
        return False
    query = select(classes.c.id).where(classes.c.applicable_countries.like(f"%,{country},%"))
    return session.execute(query.limit(1)).first() is None


class ReferenceService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # -- reads ---------------------------------------------------------------------------------

    async def list_classes(
        self, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[dict[str, Any]], str]:
        plain = {k: v for k, v in given.items() if "throughput" not in k}
        if "applicable_countries" in plain:
            plain["applicable_countries"] = plain["applicable_countries"].upper()
        clauses = list_filters(checks, classes, plain, contains=frozenset({"applicable_countries"}))
        for name in ("country_peak_throughput", "country_daily_throughput"):
            if name in given:
                try:
                    clauses.append(classes.c[name] == float(given[name]))
                except ValueError:
                    checks.fail(name, "must be a number", "Format")
        return await self._list(classes, clauses, page, checks, class_snapshot)

    async def class_policies(self) -> list[ClassPolicy]:
        """Every class's window and caps, for the delivery engine (its `ClassLoader`)."""
        async with self._db.read() as session:
            rows = list((await session.execute(select(classes))).mappings())
        return [
            ClassPolicy(
                class_id=row["id"],
                delivery_window=row["delivery_window"] or "",
                peak=float(row["country_peak_throughput"] or 0),
                peak_total=float(row["country_peak_total_throughput"] or 0),
                daily=int(row["country_daily_throughput"] or 0),
            )
            for row in rows
        ]

    async def get_class(self, class_id: str) -> dict[str, Any]:
        return class_snapshot(await self._get(classes, class_id, "sender ID class"))

    async def list_types(
        self, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[dict[str, Any]], str]:
        clauses = list_filters(
            checks,
            types,
            given,
            contains=frozenset({"credential_parameter_list"}),
            integers=frozenset({"version_number"}),
        )
        return await self._list(types, clauses, page, checks, type_snapshot)

    async def get_type(self, type_id: str) -> dict[str, Any]:
        return type_snapshot(await self._get(types, type_id, "sender ID type"))

    # -- Admin writes --------------------------------------------------------------------------

    async def put_class(
        self, class_id: str, values: Mapping[str, Any], expected_version: int | None
    ) -> None:
        changes = class_changes(class_id, values)
        await self._db.run_write(
            lambda s: self._upsert(s, classes, class_id, changes, expected_version, "class")
        )

    async def put_type(
        self, type_id: str, values: Mapping[str, Any], expected_version: int | None
    ) -> None:
        changes = type_changes(type_id, values)
        await self._db.run_write(
            lambda s: self._upsert(s, types, type_id, changes, expected_version, "type")
        )

    # -- seeding -------------------------------------------------------------------------------

    async def seed(self, data: Mapping[str, Any] | None = None) -> bool:
        """Apply the reference data file (or `data`) unless its version was applied already."""
        if data is None:
            text = resources.files(__package__).joinpath("data", _DATA_FILE).read_text("utf-8")
            data = json.loads(text)
        version = str(data["version"])
        prepared_classes = [
            (c["id"], class_changes(c["id"], _as_input(c))) for c in data["sender_id_classes"]
        ]
        prepared_types = [
            (t["id"], type_changes(t["id"], _as_input(t))) for t in data["sender_id_types"]
        ]
        now = self._clock.now()

        def work(session: Session) -> bool:
            if session.execute(select(versions).where(versions.c.version == version)).first():
                return False
            session.execute(insert(versions).values(version=version, applied_at=now))
            for class_id, changes in prepared_classes:
                self._upsert(session, classes, class_id, changes, None, "class")
            for type_id, changes in prepared_types:
                self._upsert(session, types, type_id, changes, None, "type")
            for sender in data.get("system_sender_ids", []):
                self._seed_sender(session, sender, now)
            return True

        try:
            applied = await self._db.run_write(work)
        except IntegrityError:
            return False  # another replica applied this version at the same moment
        if applied:
            log.info("messaging reference data version %s applied", version)
        return applied

    def _seed_sender(self, session: Session, sender: Mapping[str, Any], now: datetime) -> None:
        sender_id = sender.get("id") or new_id("sid_")
        if session.execute(select(senders.c.id).where(senders.c.id == sender_id)).first():
            return
        type_row = session.execute(select(types).where(types.c.id == sender["type_id"])).one()
        session.execute(
            insert(senders).values(
                id=sender_id,
                org_id=SYSTEM_ORG,
                parent_id=None,
                name=sender.get("name", ""),
                ownership=sender["ownership"],
                class_id=sender["class_id"],
                type_id=sender["type_id"],
                state=sender.get("state", "ACTIVE"),
                address=sender["address"],
                content_type=sender.get("content_type", ""),
                message_templates="",
                country=sender.get("country", ""),
                operators=pack(sender.get("operators", [])),
                credentials="",
                two_way_required=sender.get("two_way_required", "NO"),
                keep_sender_address="NO",
                dr_required=sender.get("dr_required", "YES"),
                consent_managed_by="USER",
                capabilities=pack(split_items([type_row.capabilities])),
                check_white_list=False,
                billing=sender.get("billing", ""),
                application_id="operator",
                created_at=now,
                updated_at=now,
                version=1,
            )
        )

    # -- internals -----------------------------------------------------------------------------

    def _upsert(
        self,
        session: Session,
        table: Table,
        row_id: str,
        changes: Mapping[str, Any],
        expected_version: int | None,
        what: str,
    ) -> None:
        now = self._clock.now()
        current = session.execute(select(table).where(table.c.id == row_id)).mappings().first()
        if current is None:
            if expected_version is not None:
                raise NotFound(f"sender ID {what} {row_id!r} not found (a version was expected)")
            values = {**changes, "id": row_id, "created_at": now, "updated_at": now, "version": 1}
            session.execute(insert(table).values(values))
            return
        require_version(current["version"], expected_version, f"sender ID {what}")
        if all(current[k] == v for k, v in changes.items()):
            return
        session.execute(
            update(table)
            .where(table.c.id == row_id)
            .values({**changes, "updated_at": now, "version": current["version"] + 1})
        )

    async def _get(self, table: Table, row_id: str, what: str) -> Row:
        async with self._db.read() as session:
            row = (
                (await session.execute(select(table).where(table.c.id == row_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound(f"{what} {row_id!r} not found")
        return row

    async def _list(
        self, table: Table, clauses: list[Any], page: listing.Page, checks: Checks, snap: Any
    ) -> tuple[list[dict[str, Any]], str]:
        checks.raise_if_failed()
        query = listing.paged(select(table).where(*clauses), table, page)
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        return [snap(r) for r in rows[: page.limit]], listing.next_page_token(rows, page)


def _as_input(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A data-file entry as a Put body (delivery windows are objects in the file)."""
    values = {k: v for k, v in entry.items() if k != "id"}
    window = values.get("delivery_window")
    if isinstance(window, dict):
        values["delivery_window"] = json.dumps(window, separators=(",", ":"))
    return values


class ReferenceSeeder:
    """Applies the reference data file when the server starts (a BackgroundWorker), then any
    other seeds (the RESERVED keywords, which inbound matching needs from the first MO on)."""

    def __init__(self, reference: ReferenceService, *also: Callable[[], Awaitable[None]]) -> None:
        self._reference = reference
        self._also = also

    async def start(self) -> None:
        await self._reference.seed()
        for seed in self._also:
            await seed()

    async def stop(self) -> None:
        return None


__all__ = [
    "OTHER",
    "ReferenceSeeder",
    "ReferenceService",
    "class_applies",
    "class_snapshot",
    "credential_parameters",
    "mime_allowed",
    "type_snapshot",
]
