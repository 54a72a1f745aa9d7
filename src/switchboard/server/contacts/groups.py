"""Contact groups: STATIC (explicit members) and DYNAMIC (every contact matching criteria).

DYNAMIC membership is never stored: listing and counting evaluate the criteria in the database,
so groups of any size cost no memory. The stored `member_count` of a DYNAMIC group is refreshed
by ContactMaintenance whenever contacts of the org changed; meanwhile the group shows
`Processing`, then `Ready` once the count matches the contacts it counted (the generation check
below keeps a recount that raced a change from claiming `Ready`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.orm import Session

from switchboard.server.contacts import criteria as criteria_language
from switchboard.server.contacts.models import GroupStatus, GroupType
from switchboard.server.contacts.repository import contacts, groups, members
from switchboard.server.contacts.service import ContactService, validate
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    InvalidCriteria,
    NotFound,
    UniqueKeyViolated,
    require_version,
)
from switchboard.server.core.events import EventLog
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks

_g = groups.c
_m = members.c


def snapshot(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "external_id": row["external_id"] or "",
        "name": row["name"],
        "description": row["description"],
        "type": row["type"],
        "criteria": row["criteria"],
        "status": row["status"],
        "member_count": row["member_count"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def membership(group: Row) -> ColumnElement[bool]:
    """Which contacts (rows of `contacts`) belong to `group`."""
    if group["type"] == GroupType.DYNAMIC.value:
        return criteria_language.parse(group["criteria"]).where(contacts)
    return contacts.c.id.in_(select(_m.contact_id).where(_m.group_id == group["id"]))


class GroupService:
    def __init__(
        self, db: Database, events: EventLog, clock: Clock, contacts_service: ContactService
    ) -> None:
        self._db = db
        self._clock = clock
        self.rows = OrgTable(
            db=db,
            events=events,
            table=groups,
            noun="contact group",
            event_prefix="contact_group",
            snapshot=snapshot,
            unique_message="external_id is already used by another group",
        )
        self._contacts = contacts_service

    # -- the group resource --------------------------------------------------------------------

    def _validate(
        self, values: Mapping[str, Any], current: Row | None, *, replace: bool
    ) -> dict[str, Any]:
        """Column changes for a create (current None), update or replace; 1017 for criteria."""
        checks = Checks()
        changes: dict[str, Any] = {}
        if replace:
            changes = {"external_id": None, "name": "", "description": "", "criteria": ""}
        if "external_id" in values:
            checks.length("external_id", values["external_id"], 128)
            changes["external_id"] = values["external_id"].strip() or None
        if "name" in values:
            checks.length("name", values["name"], 256)
            changes["name"] = values["name"].strip()
        if "description" in values:
            checks.length("description", values["description"], 1024)
            changes["description"] = values["description"]
        group_type = current["type"] if current is not None else GroupType.STATIC.value
        if "type" in values and values["type"].strip():
            chosen = checks.choice("type", values["type"], GroupType)
            if chosen is not None:
                if current is not None and chosen.value != current["type"]:
                    checks.fail("type", "cannot change after creation; create a new group")
                group_type = chosen.value
        changes["type"] = group_type
        if "criteria" in values:
            changes["criteria"] = values["criteria"].strip()
        name = changes.get("name", current["name"] if current is not None else "")
        if not name:
            checks.fail("name", "is required", "Required")
        criteria_text = changes.get("criteria", current["criteria"] if current else "")
        if group_type == GroupType.STATIC.value and criteria_text:
            checks.fail("criteria", "only DYNAMIC groups have criteria; STATIC ones have members")
        checks.raise_if_failed()
        if group_type == GroupType.DYNAMIC.value:
            if not criteria_text:
                raise InvalidCriteria(
                    "a DYNAMIC group needs criteria",
                    violations=[FieldViolation("criteria", "is required for DYNAMIC groups")],
                )
            if "criteria" in changes:
                changes["criteria"] = criteria_language.parse(criteria_text).text
        return changes

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        changes = self._validate(values, None, replace=False)
        now = self._clock.now()
        dynamic = changes["type"] == GroupType.DYNAMIC.value
        row: dict[str, Any] = {
            "external_id": None,
            "name": "",
            "description": "",
            "criteria": "",
            **changes,
            "id": new_id("grp_"),
            "org_id": org_id,
            "status": (GroupStatus.PROCESSING if dynamic else GroupStatus.READY).value,
            "member_count": 0,
            "generation": 1 if dynamic else 0,
            "counted_generation": 0,
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

        def work(session: Session) -> str:
            self._require_free_external_id(session, org_id, row["external_id"], None)
            session.execute(groups.insert().values(row))
            self.rows.event(session, "created", row, now)
            return str(row["id"])

        return await self.rows.write(work)

    async def update(
        self,
        org_id: str,
        group_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
        *,
        replace: bool = False,
    ) -> str:
        now = self._clock.now()

        def work(session: Session) -> str:
            current = self.rows.locked(session, org_id, group_id)
            require_version(current["version"], expected_version, "contact group")
            changes = self._validate(values, current, replace=replace)
            if changes.get("external_id") != current["external_id"]:
                self._require_free_external_id(
                    session, org_id, changes.get("external_id"), group_id
                )
            row = dict(current) | changes | {"updated_at": now, "version": current["version"] + 1}
            if row["criteria"] != current["criteria"]:
                row |= {
                    "status": GroupStatus.PROCESSING.value,
                    "generation": current["generation"] + 1,
                }
            session.execute(
                update(groups)
                .where(_g.id == group_id)
                .values({k: v for k, v in row.items() if k not in ("id", "org_id")})
            )
            self.rows.event(session, "updated", row, now)
            return group_id

        return await self.rows.write(work)

    async def delete(self, org_id: str, group_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, group_id)
            session.execute(delete(members).where(_m.group_id == group_id))
            session.execute(delete(groups).where(_g.id == group_id))
            self.rows.event(session, "deleted", current, now)

        await self._db.run_write(work)

    async def get(self, org_id: str, group_id: str) -> dict[str, Any]:
        return await self.rows.get(org_id, group_id)

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[dict[str, Any]], str]:
        return await self.rows.list_page(org_id, given, page, checks)

    # -- members -------------------------------------------------------------------------------

    async def list_members(
        self,
        org_id: str,
        group_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
    ) -> tuple[list[dict[str, Any]], str]:
        group = await self.rows.row(org_id, group_id)
        return await self._contacts.list_page(
            org_id, given, "", page, checks, extra=[membership(group)]
        )

    async def get_member(self, org_id: str, group_id: str, contact_id: str) -> dict[str, Any]:
        group = await self.rows.row(org_id, group_id)
        checks = Checks()
        found, _ = await self._contacts.list_page(
            org_id,
            {"id": contact_id},
            "",
            listing.Page(limit=1),
            checks,
            extra=[membership(group)],
        )
        if not found:
            raise NotFound(f"contact {contact_id!r} is not a member of group {group_id!r}")
        return found[0]

    async def add_member(
        self, org_id: str, application_id: str, group_id: str, values: Mapping[str, Any]
    ) -> str:
        """Link the contact `id`, or create the contact in the body (or update the one with its
        external_id) and link it. STATIC groups only."""
        contact_id = values.get("id")
        fields = {k: v for k, v in values.items() if k not in ("id", "version_number")}
        if contact_id is not None and fields:
            raise InvalidArgument(
                "give either an existing contact's id or a contact body, not both",
                violations=[FieldViolation("id", "cannot be combined with contact fields")],
            )
        checks = Checks()
        body = validate(fields, checks)
        checks.raise_if_failed()
        now = self._clock.now()

        def work(session: Session) -> str:
            group = self.rows.locked(session, org_id, group_id)
            if group["type"] != GroupType.STATIC.value:
                raise InvalidArgument(
                    "DYNAMIC groups compute their members from criteria; change the criteria "
                    "or the contact instead",
                    violations=[FieldViolation("group_id", "is a DYNAMIC group")],
                )
            repository = self._contacts.repository
            if contact_id is not None:
                if repository.locked(session, org_id, contact_id) is None:
                    raise NotFound(f"contact {contact_id!r} not found")
                member = str(contact_id)
            else:
                external_id = body.columns.get("external_id")
                existing = (
                    repository.by_external_ids(session, org_id, [external_id]).get(external_id)
                    if external_id
                    else None
                )
                if existing is not None:
                    self._contacts.apply_update(session, existing, body, now)
                    member = str(existing["id"])
                else:
                    member = self._contacts.insert(session, org_id, application_id, body, now)
            if repository.link(session, group_id, [member], now):
                self._touch(session, group, now)
            return member

        return await self.rows.write(work)

    async def remove_member(self, org_id: str, group_id: str, contact_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            group = self.rows.locked(session, org_id, group_id)
            if group["type"] != GroupType.STATIC.value:
                raise InvalidArgument(
                    "members of DYNAMIC groups follow from the criteria; they cannot be removed",
                    violations=[FieldViolation("group_id", "is a DYNAMIC group")],
                )
            if not self._contacts.repository.unlink(session, group_id, contact_id):
                raise NotFound(f"contact {contact_id!r} is not a member of group {group_id!r}")
            self._touch(session, group, now)

        await self._db.run_write(work)

    def member_query(self, group: Row) -> Select[Any]:
        """The contacts of `group` (for exports): a SELECT over `contacts`."""
        return select(contacts).where(contacts.c.org_id == group["org_id"], membership(group))

    # -- recounting DYNAMIC groups (ContactMaintenance) ----------------------------------------

    async def stale_groups(self, limit: int = 100) -> list[Row]:
        query = (
            select(groups)
            .where(_g.type == GroupType.DYNAMIC.value, _g.status == GroupStatus.PROCESSING.value)
            .order_by(_g.updated_at)
            .limit(limit)
        )
        async with self._db.read() as session:
            return list((await session.execute(query)).mappings())

    async def recount(self, group: Row) -> bool:
        """Count `group`'s members in the database; Ready unless contacts changed meanwhile."""
        counted = (
            select(func.count())
            .select_from(contacts)
            .where(contacts.c.org_id == group["org_id"], membership(group))
        )
        async with self._db.read() as session:
            total = int((await session.execute(counted)).scalar() or 0)
        now = self._clock.now()

        def work(session: Session) -> bool:
            result = session.connection().execute(
                update(groups)
                .where(_g.id == group["id"], _g.generation == group["generation"])
                .values(
                    member_count=total,
                    status=GroupStatus.READY.value,
                    counted_generation=group["generation"],
                )
            )
            if not result.rowcount:
                return False  # changed meanwhile: still Processing, counted again later
            fresh = dict(group) | {"member_count": total, "status": GroupStatus.READY.value}
            self.rows.event(session, "counted", fresh, now)
            return True

        return await self._db.run_write(work)

    # -- internals -----------------------------------------------------------------------------

    def _touch(self, session: Session, group: Row, now: datetime) -> None:
        """A STATIC group's members changed: its count moved (see ContactRepository.link)."""
        fresh = session.execute(select(groups).where(_g.id == group["id"])).mappings().one()
        self.rows.event(session, "members_changed", fresh, now)

    def _require_free_external_id(
        self, session: Session, org_id: str, external_id: str | None, group_id: str | None
    ) -> None:
        if not external_id:
            return
        query = select(_g.id).where(_g.org_id == org_id, _g.external_id == external_id)
        owner = session.execute(query).scalar()
        if owner is not None and owner != group_id:
            raise UniqueKeyViolated(
                f"external_id {external_id!r} is already used by group {owner}",
                metadata={"field": "external_id"},
            )


__all__ = ["GroupService", "membership", "snapshot"]
