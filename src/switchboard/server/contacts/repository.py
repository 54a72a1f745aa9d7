"""Persistence of contacts and static group membership. Every query is scoped by org.

Writes are synchronous (they run inside Database.run_write's transaction); reads are async.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.contacts.models import (
    AccessTokenRecord,
    ContactGroupRecord,
    ContactRecord,
    GroupMemberRecord,
    GroupStatus,
    GroupType,
    TokenOwner,
)
from switchboard.server.core.db import for_update, table_of
from switchboard.server.core.types import Row

contacts = table_of(ContactRecord)
groups = table_of(ContactGroupRecord)
members = table_of(GroupMemberRecord)
tokens = table_of(AccessTokenRecord)
_c = contacts.c
_g = groups.c
_m = members.c


class ContactRepository:
    # -- writes (sync) -------------------------------------------------------------------------

    def locked(self, session: Session, org_id: str, contact_id: str) -> Row | None:
        query = select(contacts).where(_c.org_id == org_id, _c.id == contact_id)
        return session.execute(for_update(session, query)).mappings().one_or_none()

    def by_external_ids(
        self, session: Session, org_id: str, external_ids: Sequence[str]
    ) -> dict[str, Row]:
        if not external_ids:
            return {}
        query = select(contacts).where(_c.org_id == org_id, _c.external_id.in_(list(external_ids)))
        rows = session.execute(for_update(session, query)).mappings()
        return {row["external_id"]: row for row in rows}

    def by_ids(self, session: Session, org_id: str, ids: Sequence[str]) -> dict[str, Row]:
        if not ids:
            return {}
        query = select(contacts).where(_c.org_id == org_id, _c.id.in_(list(ids)))
        rows = session.execute(for_update(session, query)).mappings()
        return {row["id"]: row for row in rows}

    def external_id_owner(self, session: Session, org_id: str, external_id: str) -> str | None:
        query = select(_c.id).where(_c.org_id == org_id, _c.external_id == external_id)
        return session.execute(query).scalar()

    def insert_many(self, session: Session, rows: Sequence[Row]) -> None:
        if rows:
            session.execute(insert(contacts), list(rows))

    def update_many(self, session: Session, rows: Sequence[Row]) -> None:
        """Apply full new rows (`id` plus the same columns each) in one executemany."""
        if not rows:
            return
        columns = [k for k in rows[0] if k != "id"]
        statement = (
            update(contacts)
            .where(_c.id == bindparam("match_id"))
            .values({c: bindparam(f"new_{c}") for c in columns})
        )
        params = [{"match_id": r["id"]} | {f"new_{c}": r[c] for c in columns} for r in rows]
        session.connection().execute(statement, params)

    def update(self, session: Session, contact_id: str, values: Row) -> None:
        session.execute(update(contacts).where(_c.id == contact_id).values(dict(values)))

    def delete(self, session: Session, org_id: str, contact_id: str) -> None:
        # Static memberships go first so their groups' counts stay true; tokens owned by the
        # contact go with it (application tokens cascade).
        for group_id in session.execute(
            select(_m.group_id).where(_m.contact_id == contact_id)
        ).scalars():
            session.execute(
                update(groups).where(_g.id == group_id).values(member_count=_g.member_count - 1)
            )
        session.execute(delete(members).where(_m.contact_id == contact_id))
        session.execute(
            delete(tokens).where(
                tokens.c.org_id == org_id,
                tokens.c.owner_type == TokenOwner.CONTACT.value,
                tokens.c.owner_id == contact_id,
            )
        )
        session.execute(delete(contacts).where(_c.org_id == org_id, _c.id == contact_id))

    def clear_slot(self, session: Session, org_id: str, slot: str) -> None:
        session.execute(update(contacts).where(_c.org_id == org_id).values({slot: None}))

    def dirty_dynamic_groups(self, session: Session, org_id: str) -> None:
        """Contacts changed: every DYNAMIC group of the org must be recounted."""
        session.execute(
            update(groups)
            .where(_g.org_id == org_id, _g.type == GroupType.DYNAMIC.value)
            .values(status=GroupStatus.PROCESSING.value, generation=_g.generation + 1)
        )

    def link(self, session: Session, group_id: str, contact_ids: Sequence[str], now: Any) -> int:
        """Add members to a STATIC group (already-members are skipped); returns how many."""
        if not contact_ids:
            return 0
        existing = set(
            session.execute(
                select(_m.contact_id).where(
                    _m.group_id == group_id, _m.contact_id.in_(list(contact_ids))
                )
            ).scalars()
        )
        new = [c for c in dict.fromkeys(contact_ids) if c not in existing]
        if new:
            session.execute(
                insert(members),
                [{"group_id": group_id, "contact_id": c, "created_at": now} for c in new],
            )
            session.execute(
                update(groups)
                .where(_g.id == group_id)
                .values(member_count=_g.member_count + len(new))
            )
        return len(new)

    def unlink(self, session: Session, group_id: str, contact_id: str) -> bool:
        removed = (
            session.connection()
            .execute(delete(members).where(_m.group_id == group_id, _m.contact_id == contact_id))
            .rowcount
        )
        if removed:
            session.execute(
                update(groups).where(_g.id == group_id).values(member_count=_g.member_count - 1)
            )
        return bool(removed)

    # -- reads (async) -------------------------------------------------------------------------

    async def get(self, session: AsyncSession, org_id: str, contact_id: str) -> Row | None:
        query = select(contacts).where(_c.org_id == org_id, _c.id == contact_id)
        return (await session.execute(query)).mappings().one_or_none()

    async def select_rows(self, session: AsyncSession, query: Select[Any]) -> list[Row]:
        return list((await session.execute(query)).mappings())

    async def count(self, session: AsyncSession, org_id: str, where: ColumnElement[bool]) -> int:
        query = select(func.count()).select_from(contacts).where(_c.org_id == org_id, where)
        return int((await session.execute(query)).scalar() or 0)
