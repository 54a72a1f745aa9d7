"""What the content area's resources (message templates, keywords, attachments) share: an
org-scoped table read, listed, locked and evented the same way as the contacts domain's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.server.core import listing
from switchboard.server.core.db import Database, for_update
from switchboard.server.core.errors import NotFound, UniqueKeyViolated
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.types import Row, Snapshot, T
from switchboard.server.core.validation import Checks

TIME_COLUMNS = {"created_date": "created_at", "last_updated_date": "updated_at"}


class OrgTable:
    """CRUD plumbing of one org-scoped table; overriding `scope` widens reads (e.g. global rows).
    Events carry `event_payload(row)`, by default the snapshot the API shows."""

    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        table: Table,
        noun: str,
        event_prefix: str,
        snapshot: Callable[[Row], Snapshot],
        unique_message: str | None = None,
        unique_field: str | None = None,
        event_payload: Callable[[Row], Snapshot] | None = None,
    ) -> None:
        self.db = db
        self.events = events
        self.table = table
        self.noun = noun
        self.event_prefix = event_prefix
        self.snapshot = snapshot
        self.unique_message = unique_message
        self.unique_metadata = {"field": unique_field} if unique_field else {}
        self.event_payload = event_payload or snapshot

    def scope(self, org_id: str) -> ColumnElement[bool]:
        return self.table.c.org_id == org_id

    def locked(self, session: Session, org_id: str, item_id: str) -> Row:
        query = select(self.table).where(self.scope(org_id), self.table.c.id == item_id)
        query = for_update(session, query)
        row = session.execute(query).mappings().one_or_none()
        if row is None:
            raise NotFound(f"{self.noun} {item_id!r} not found")
        return row

    async def row(self, org_id: str, item_id: str) -> Row:
        async with self.db.read() as session:
            query = select(self.table).where(self.scope(org_id), self.table.c.id == item_id)
            row = (await session.execute(query)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"{self.noun} {item_id!r} not found")
        return row

    async def get(self, org_id: str, item_id: str) -> Snapshot:
        return self.snapshot(await self.row(org_id, item_id))

    async def list_page(
        self,
        org_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
        *,
        columns: Mapping[str, str] | None = None,
        times: frozenset[str] = frozenset({"created_date", "last_updated_date"}),
        integers: frozenset[str] = frozenset(),
        extra: tuple[ColumnElement[bool], ...] = (),
    ) -> tuple[list[Snapshot], str]:
        clauses = listing.filters(
            checks,
            self.table,
            given,
            columns={**TIME_COLUMNS, **(columns or {})},
            times=times,
            integers=integers,
        )
        checks.raise_if_failed()
        query = listing.paged(
            select(self.table).where(self.scope(org_id), *extra, *clauses), self.table, page
        )
        async with self.db.read() as session:
            rows = list((await session.execute(query)).mappings())
        return [self.snapshot(r) for r in rows[: page.limit]], listing.next_page_token(rows, page)

    async def write(self, work: Callable[[Session], T]) -> T:
        """`work` in one transaction; a unique key taken meanwhile is `unique_message` (409,
        naming `unique_field`), or the IntegrityError itself where the table has no message."""
        try:
            return await self.db.run_write(work)
        except IntegrityError as exc:  # a concurrent writer took the unique key
            if self.unique_message is None:
                raise
            raise UniqueKeyViolated(self.unique_message, metadata=self.unique_metadata) from exc

    def new_event(self, what: str, row: Row, now: datetime) -> NewEvent:
        """The event `<event_prefix>.<what>` of `row`, for a caller that appends in bulk."""
        payload = self.event_payload(row)
        return NewEvent(row["org_id"], f"{self.event_prefix}.{what}", row["id"], payload, now)

    def event(self, session: Session, what: str, row: Row, now: datetime) -> None:
        self.events.append(session, [self.new_event(what, row, now)])
