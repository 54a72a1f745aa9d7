"""The contacts directory: the queries other domains make about an org's contacts and groups.

Messaging resolves a request's `to` entries and reads its recipients here; calling dials a
contact's number. They declare the part they use as a Protocol (messaging's `ContactLookup` and
`ContactReader`, calling's `ContactNumbers`), so contacts' tables stay contacts' own: values
cross as `ContactAddresses` and `KnownIds`, never as rows.

Every query is scoped by org and reads in its own session (reads are async). Recipients are
read a page at a time in keyset order (`id > after`), so a group of any size is streamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select

from switchboard.server.contacts import criteria as criteria_language
from switchboard.server.contacts.groups import membership
from switchboard.server.contacts.repository import contacts, groups
from switchboard.server.core.db import Database

_c = contacts.c
_g = groups.c


@dataclass(frozen=True, slots=True)
class ContactAddresses:
    """How a contact is reached: its primary number and email (empty when it has none) and its
    IANA time zone (empty when unknown)."""

    id: str
    primary_mdn: str
    primary_email_addr: str
    time_zone: str


@dataclass(frozen=True)
class KnownIds:
    """Which of a set of ids are the org's contact groups and which its contacts."""

    group_ids: frozenset[str]
    contact_ids: frozenset[str]


class ContactDirectory:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def resolve_targets(self, org_id: str, ids: Sequence[str]) -> KnownIds:
        """Which of `ids` name a group of the org, and which a contact of it."""
        async with self._db.read() as session:
            group_ids = frozenset(
                (
                    await session.execute(select(_g.id).where(_g.org_id == org_id, _g.id.in_(ids)))
                ).scalars()
            )
            contact_ids = frozenset(
                (
                    await session.execute(select(_c.id).where(_c.org_id == org_id, _c.id.in_(ids)))
                ).scalars()
            )
        return KnownIds(group_ids, contact_ids)

    async def addresses(
        self, org_id: str, contact_ids: Sequence[str]
    ) -> dict[str, ContactAddresses]:
        """The org's contacts among `contact_ids`, by id (an unknown id is left out)."""
        query = select(_c.id, _c.primary_mdn, _c.primary_email_addr, _c.time_zone).where(
            _c.org_id == org_id, _c.id.in_(contact_ids)
        )
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        return {row[0]: ContactAddresses(*row) for row in rows}

    async def group_page(
        self, org_id: str, group_id: str, after: str, limit: int
    ) -> list[ContactAddresses] | None:
        """Up to `limit` members of the group (by its STATIC membership or DYNAMIC criteria) with
        ids after `after`, in id order; None when the org has no such group (it was deleted)."""
        async with self._db.read() as session:
            group = (
                (
                    await session.execute(
                        select(groups).where(_g.id == group_id, _g.org_id == org_id)
                    )
                )
                .mappings()
                .one_or_none()
            )
        if group is None:
            return None
        return await self._page(org_id, membership(group), after, limit)

    async def criteria_page(
        self, org_id: str, criteria: str, after: str, limit: int
    ) -> list[ContactAddresses]:
        """Up to `limit` contacts matching `criteria` with ids after `after`, in id order."""
        clause = criteria_language.parse(criteria).where(contacts)
        return await self._page(org_id, clause, after, limit)

    async def _page(
        self, org_id: str, clause: ColumnElement[bool], after: str, limit: int
    ) -> list[ContactAddresses]:
        query = (
            select(_c.id, _c.primary_mdn, _c.primary_email_addr, _c.time_zone)
            .where(_c.org_id == org_id, clause, _c.id > after)
            .order_by(_c.id)
            .limit(limit)
        )
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        return [ContactAddresses(*row) for row in rows]

    async def mdn_of(self, org_id: str, contact_id: str) -> str | None:
        """The contact's primary number (None for no such contact, empty when it has none)."""
        query = select(_c.primary_mdn).where(_c.org_id == org_id, _c.id == contact_id)
        async with self._db.read() as session:
            mdn = (await session.execute(query)).scalar()
        return None if mdn is None else str(mdn)
