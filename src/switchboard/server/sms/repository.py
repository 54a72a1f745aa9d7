"""Persistence of SMS messages. Every read for a client is scoped by org; workers' claims serve
all orgs and never return data to a client.

Hot paths (accepting, dispatching, receipts) use Core statements over many rows at once: one
statement per batch instead of one per message is what keeps the single SQLite writer fast.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Update, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.core.db import table_of
from switchboard.server.core.types import Row
from switchboard.server.sms.models import SmsRecord, SmsStatus

_table = table_of(SmsRecord)
_c = _table.c


_INSERT = insert(_table)
_INSERT_NEW_KEYS = {
    dialect.dialect.name: dialect.insert(_table)
    .on_conflict_do_nothing(index_elements=["org_id", "client_message_id"])
    .returning(_c.id)
    for dialect in (postgresql, sqlite)
}
_BY_CLIENT_IDS = select(_table).where(
    _c.org_id == bindparam("org_id"),
    _c.client_message_id.in_(bindparam("client_ids", expanding=True)),
)
_DUE = (
    select(_c.id)
    .where(_c.status == SmsStatus.ACCEPTED.value)
    .where(or_(_c.lease_until.is_(None), _c.lease_until <= bindparam("now")))
    .order_by(_c.id)
    .limit(bindparam("limit"))
)


def _claim(due: Select[Any]) -> Update:
    return (
        update(_table)
        .where(_c.id.in_(due.scalar_subquery()))
        .values(lease_until=bindparam("lease_until"), attempts=_c.attempts + 1)
        .returning(*_c)
    )


_CLAIM = _claim(_DUE)
_CLAIM_SKIP_LOCKED = _claim(_DUE.with_for_update(skip_locked=True))
_IN_STATUS = select(_table).where(
    _c.id.in_(bindparam("ids", expanding=True)), _c.status == bindparam("status")
)
_IN_STATUS_FOR_UPDATE = _IN_STATUS.with_for_update()


@functools.cache
def _update_statement(columns: tuple[str, ...]) -> Update:
    return (
        update(_table)
        .where(_c.id == bindparam("match_id"), _c.status == bindparam("from_status"))
        .values({column: bindparam(f"new_{column}") for column in columns})
    )


class SmsRepository:
    async def get(self, session: AsyncSession, org_id: str, message_id: str) -> Row | None:
        query = select(_table).where(_c.org_id == org_id, _c.id == message_id)
        return (await session.execute(query)).mappings().one_or_none()

    # Writes run inside the writer's transaction, synchronously (see Database.run_write). Their
    # statements are built once with bind parameters: building and keying a statement per call
    # cost more than executing it.

    def find_by_client_ids(
        self, session: Session, org_id: str, client_ids: Sequence[str]
    ) -> dict[str, Row]:
        params = {"org_id": org_id, "client_ids": list(client_ids)}
        rows = session.connection().execute(_BY_CLIENT_IDS, params).mappings()
        return {row["client_message_id"]: row for row in rows}

    def insert_many(self, session: Session, rows: Sequence[Row]) -> None:
        if rows:
            session.connection().execute(_INSERT, list(rows))

    def insert_unless_key_taken(self, session: Session, rows: Sequence[Row]) -> set[str]:
        """Insert rows that carry a clientMessageId unless another transaction already took the
        key (it may have committed since we looked); returns the ids actually inserted."""
        if not rows:
            return set()
        connection = session.connection()
        statement = _INSERT_NEW_KEYS[connection.dialect.name]
        return set(connection.execute(statement, list(rows)).scalars())

    def claim_due(
        self, session: Session, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[Row]:
        """Lease up to `limit` queued messages to this worker; an expired lease is up for grabs,
        so a worker that died mid-batch hands its work back."""
        connection = session.connection()
        claim = _CLAIM_SKIP_LOCKED if connection.dialect.name == "postgresql" else _CLAIM
        params = {"now": now, "lease_until": lease_until, "limit": limit}
        return list(connection.execute(claim, params).mappings())

    def lock_in_status(self, session: Session, ids: Sequence[str], status: SmsStatus) -> list[Row]:
        """The given messages that are still in `status`, locked until the transaction ends."""
        connection = session.connection()
        query = _IN_STATUS_FOR_UPDATE if connection.dialect.name == "postgresql" else _IN_STATUS
        params = {"ids": list(ids), "status": status.value}
        return list(connection.execute(query, params).mappings())

    def update_many(self, session: Session, from_status: SmsStatus, changes: Sequence[Row]) -> None:
        """Apply per-message `changes` (each with `id` and the same other keys) to messages still
        in `from_status`, in one executemany."""
        if not changes:
            return
        columns = tuple(key for key in changes[0] if key != "id")
        params = [
            {"match_id": c["id"], "from_status": from_status.value}
            | {f"new_{k}": c[k] for k in columns}
            for c in changes
        ]
        session.connection().execute(_update_statement(columns), params)

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
