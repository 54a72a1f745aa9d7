"""Persistence of SMS messages. Every read is scoped by org; workers' claims are not (they serve
all orgs) and never return data to a client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.server.sms.models import SmsRecord, SmsStatus

_c = SmsRecord.__table__.c  # type: ignore[attr-defined]


class SmsRepository:
    async def get(self, session: AsyncSession, org_id: str, message_id: str) -> SmsRecord | None:
        query = select(SmsRecord).where(_c.org_id == org_id, _c.id == message_id)
        return (await session.execute(query)).scalar_one_or_none()

    async def find_by_client_ids(
        self, session: AsyncSession, org_id: str, client_ids: Sequence[str]
    ) -> dict[str, SmsRecord]:
        query = select(SmsRecord).where(
            _c.org_id == org_id, _c.client_message_id.in_(list(client_ids))
        )
        rows = (await session.execute(query)).scalars()
        return {row.client_message_id: row for row in rows if row.client_message_id}

    async def insert_many(self, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await session.execute(insert(SmsRecord), list(rows))

    async def claim_due(
        self, session: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[SmsRecord]:
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
            update(SmsRecord)
            .where(_c.id.in_(due.scalar_subquery()))
            .values(lease_until=lease_until, attempts=_c.attempts + 1)
            .returning(SmsRecord)
        )
        return list((await session.execute(claim)).scalars())

    async def transition(
        self,
        session: AsyncSession,
        message_id: str,
        *,
        from_statuses: Sequence[SmsStatus],
        values: dict[str, Any],
    ) -> SmsRecord | None:
        """Apply `values` only if the message is still in one of `from_statuses` (so duplicate or
        late receipts change nothing); returns the updated row or None."""
        statement = (
            update(SmsRecord)
            .where(_c.id == message_id, _c.status.in_([s.value for s in from_statuses]))
            .values(**values)
            .returning(SmsRecord)
        )
        return (await session.execute(statement)).scalar_one_or_none()

    async def in_status(
        self, session: AsyncSession, status: SmsStatus, channels: Sequence[str], limit: int
    ) -> list[SmsRecord]:
        query = (
            select(SmsRecord)
            .where(_c.status == status.value, _c.channel.in_(list(channels)))
            .order_by(_c.id)
            .limit(limit)
        )
        return list((await session.execute(query)).scalars())
