"""Persistence of SMS messages. Every read for a client is scoped by org; workers' claims serve
all orgs and never return data to a client.

Hot paths (accepting, dispatching, receipts) use Core statements over many rows at once: one
statement per batch instead of one per message is what keeps the single SQLite writer fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.sms.models import SmsRecord, SmsStatus

Row = Mapping[Any, Any]  # a row of sms_messages by column name (RowMapping or dict)
_table: Table = SmsRecord.__table__  # type: ignore[attr-defined]
_c = _table.c


class SmsRepository:
    async def get(self, session: AsyncSession, org_id: str, message_id: str) -> Row | None:
        query = select(_table).where(_c.org_id == org_id, _c.id == message_id)
        return (await session.execute(query)).mappings().one_or_none()

    # Writes run inside the writer's transaction, synchronously (see Database.run_write).

    def find_by_client_ids(
        self, session: Session, org_id: str, client_ids: Sequence[str]
    ) -> dict[str, Row]:
        query = select(_table).where(
            _c.org_id == org_id, _c.client_message_id.in_(list(client_ids))
        )
        rows = session.connection().execute(query).mappings()
        return {row["client_message_id"]: row for row in rows}

    def insert_many(self, session: Session, rows: Sequence[Row]) -> None:
        if rows:
            session.connection().execute(insert(_table), list(rows))  # Core: no ORM per row

    def claim_due(
        self, session: Session, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[Row]:
        """Lease up to `limit` queued messages to this worker; an expired lease is up for grabs,
        so a worker that died mid-batch hands its work back."""
        due = (
            select(_c.id)
            .where(_c.status == SmsStatus.ACCEPTED.value)
            .where(or_(_c.lease_until.is_(None), _c.lease_until <= now))
            .order_by(_c.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claim = (
            update(_table)
            .where(_c.id.in_(due.scalar_subquery()))
            .values(lease_until=lease_until, attempts=_c.attempts + 1)
            .returning(*_c)
        )
        return list(session.connection().execute(claim).mappings())

    def lock_in_status(self, session: Session, ids: Sequence[str], status: SmsStatus) -> list[Row]:
        """The given messages that are still in `status`, locked until the transaction ends."""
        query = select(_table).where(_c.id.in_(list(ids)), _c.status == status.value)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        return list(session.connection().execute(query).mappings())

    def update_many(self, session: Session, from_status: SmsStatus, changes: Sequence[Row]) -> None:
        """Apply per-message `changes` (each with `id` and the same other keys) to messages still
        in `from_status`, in one executemany."""
        if not changes:
            return
        columns = [key for key in changes[0] if key != "id"]
        statement = (
            update(_table)
            .where(_c.id == bindparam("match_id"), _c.status == from_status.value)
            .values({column: bindparam(f"new_{column}") for column in columns})
        )
        params = [
            {"match_id": change["id"], **{f"new_{k}": change[k] for k in columns}}
            for change in changes
        ]
        session.connection().execute(statement, params)

    async def in_status(
        self, session: AsyncSession, status: SmsStatus, channels: Sequence[str], limit: int
    ) -> list[Row]:
        query = (
            select(_table)
            .where(_c.status == status.value, _c.channel.in_(list(channels)))
            .order_by(_c.id)
            .limit(limit)
        )
        return list((await session.execute(query)).mappings())
