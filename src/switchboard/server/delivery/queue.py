"""Persistence of the delivery queue (delivery/models.py): enqueue, claim with a lease, update,
remove, and the daily counts. Synchronous functions take the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.types import Row
from switchboard.server.delivery.models import DailyCountRecord, DeliveryQueueRecord, QueueState

queue_table = table_of(DeliveryQueueRecord)
daily_table = table_of(DailyCountRecord)
_q = queue_table.c
_d = daily_table.c

_DUE = (
    select(_q.id)
    .where(_q.state == QueueState.QUEUED.value)
    .where(_q.due_at <= bindparam("now"))
    .where(or_(_q.lease_until.is_(None), _q.lease_until <= bindparam("now")))
    .order_by(_q.priority.desc(), _q.due_at)
    .limit(bindparam("limit"))
)


def _claim_statement(skip_locked: bool) -> Any:
    due = _DUE.with_for_update(skip_locked=True) if skip_locked else _DUE
    return (
        update(queue_table)
        .where(_q.id.in_(due.scalar_subquery()))
        .values(lease_until=bindparam("lease_until"), attempts=_q.attempts + 1)
        .returning(*_q)
    )


_CLAIM = _claim_statement(False)
_CLAIM_SKIP_LOCKED = _claim_statement(True)


def enqueue(session: Session, rows: Sequence[Row]) -> None:
    """Queue rows (see DeliveryQueueRecord for the columns); a row already queued is kept."""
    if not rows:
        return
    connection = session.connection()
    module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = module.insert(queue_table).on_conflict_do_nothing()
    defaults = {
        "fallback_routes": "",
        "sender": "",
        "country": "",
        "zones": "",
        "window": "",
        "class_id": "",
        "state": QueueState.QUEUED.value,
        "expires_at": None,
        "lease_until": None,
        "attempts": 0,
        "provider_message_id": "",
    }
    connection.execute(statement, [defaults | dict(row) for row in rows])


def claim(session: Session, *, now: datetime, lease_until: datetime, limit: int) -> list[Row]:
    """Lease up to `limit` due QUEUED rows, most urgent first (SKIP LOCKED on PostgreSQL, so
    several dispatchers share the queue); each claim counts as an attempt."""
    connection = session.connection()
    statement = _CLAIM_SKIP_LOCKED if connection.dialect.name == "postgresql" else _CLAIM
    params = {"now": now, "lease_until": lease_until, "limit": limit}
    return [dict(r) for r in connection.execute(statement, params).mappings()]


def update_rows(session: Session, changes: Sequence[Row]) -> None:
    """Apply per-row changes (each a dict with `id` and the columns to set)."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change in changes:
        columns = tuple(sorted(k for k in change if k != "id"))
        by_columns.setdefault(columns, []).append({"_id": change["id"], **change})
    connection = session.connection()
    for columns, params in by_columns.items():
        statement = (
            update(queue_table)
            .where(_q.id == bindparam("_id"))
            .values({c: bindparam(c) for c in columns})
        )
        connection.execute(statement.execution_options(synchronize_session=False), params)


def remove(session: Session, ids: Sequence[str]) -> None:
    if ids:
        session.connection().execute(delete(queue_table).where(_q.id.in_(list(ids))))


def release(session: Session, ids: Any) -> None:
    """HELD rows among `ids` (a list or a SELECT of ids) become QUEUED: their request started
    transmitting or was resumed."""
    session.connection().execute(
        update(queue_table)
        .where(_q.state == QueueState.HELD.value, _q.id.in_(ids))
        .values(state=QueueState.QUEUED.value)
    )


def discard(session: Session, ids: Any) -> None:
    """Remove the rows among `ids` (a list or a SELECT of ids) that are not SENT: their messages
    were canceled or expired before going out."""
    session.connection().execute(
        delete(queue_table).where(_q.state != QueueState.SENT.value, _q.id.in_(ids))
    )


def rows_by_id(session: Session, ids: Sequence[str]) -> list[Row]:
    """The queue rows among `ids`, whatever their state (locked on PostgreSQL)."""
    query = select(queue_table).where(_q.id.in_(list(ids)))
    query = for_update(session, query)
    return [dict(r) for r in session.connection().execute(query).mappings()]


async def awaiting_receipts(db: Database, route: str, after: str, limit: int) -> list[Row]:
    """SENT rows of `route` after id `after` (for re-arming providers after a restart)."""
    query = (
        select(queue_table)
        .where(_q.route == route, _q.state == QueueState.SENT.value, _q.id > after)
        .order_by(_q.id)
        .limit(limit)
    )
    async with db.read() as session:
        return [dict(r) for r in (await session.execute(query)).mappings()]


def add_daily(session: Session, day: str, counts: Mapping[str, int]) -> None:
    """Add `counts` to the stored daily counts of `day` (an upsert: replicas may race)."""
    if not counts:
        return
    connection = session.connection()
    module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = module.insert(daily_table)
    statement = statement.on_conflict_do_update(
        index_elements=[_d.key, _d.day], set_={"count": _d.count + statement.excluded.count}
    )
    connection.execute(
        statement, [{"key": key, "day": day, "count": count} for key, count in counts.items()]
    )


async def daily_counts(db: Database, day: str) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(select(_d.key, _d.count).where(_d.day == day))
        return {str(key): int(count) for key, count in rows}


__all__ = [
    "add_daily",
    "awaiting_receipts",
    "claim",
    "daily_counts",
    "discard",
    "enqueue",
    "queue_table",
    "release",
    "remove",
    "rows_by_id",
    "update_rows",
]
