"""The event log: every state change appends here in the same transaction as the change.

Streams read the log from a cursor (the `seq` column), so a subscriber that reconnects with the
last cursor it saw loses nothing. The in-process `EventBus` only wakes readers early; the log is
the truth, and readers also poll it so events committed by other processes arrive too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import EVENTS_APPENDED, Database, table_of
from switchboard.server.core.errors import FieldViolation, InvalidArgument
from switchboard.server.core.models import EventRecord

NOTIFY_CHANNEL = "switchboard_events"

# PostgreSQL hands out sequence numbers before commit, so two writers could commit out of order
# and a reader at cursor N could skip N-1. Event writers take this transaction-scoped advisory
# lock, which makes commit order equal sequence order. SQLite serialises writers already.
_EVENT_LOCK_KEY = 0x5357_4254  # "SWBT"


_INSERT_EVENTS = insert(table_of(EventRecord))  # built once


@dataclass(frozen=True)
class NewEvent:
    org_id: str
    type: str
    resource_id: str
    payload: dict[str, Any]
    occurred_at: datetime


class EventLog:
    def append(self, session: Session, events: Sequence[NewEvent]) -> None:
        """Inside the writer's transaction (synchronous: see Database.run_write)."""
        if not events:
            return
        session.info[EVENTS_APPENDED] = True  # readers are woken only after such commits
        # Core on the session's connection: no ORM bookkeeping on the hottest write path.
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _EVENT_LOCK_KEY})
            # Delivered at commit to every replica's EventBus.listen_postgres.
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
        connection.execute(
            _INSERT_EVENTS,
            [
                {
                    "org_id": e.org_id,
                    "type": e.type,
                    "resource_id": e.resource_id,
                    "payload": e.payload,
                    "occurred_at": e.occurred_at,
                }
                for e in events
            ],
        )

    async def read(
        self,
        session: AsyncSession,
        *,
        org_id: str,
        after: int,
        types: Sequence[str],
        resource_ids: Sequence[str] = (),
        limit: int = 500,
        type_prefixes: Sequence[str] = (),
    ) -> list[EventRecord]:
        """Events of `org_id` after `after`: of `types`, or else of types with `type_prefixes`."""
        columns = table_of(EventRecord).c
        wanted = (
            columns.type.in_(types)
            if types
            else or_(*(columns.type.startswith(p, autoescape=True) for p in type_prefixes))
        )
        query = (
            select(EventRecord)
            .where(columns.org_id == org_id, columns.seq > after, wanted)
            .order_by(columns.seq)
            .limit(limit)
        )
        if resource_ids:
            query = query.where(columns.resource_id.in_(resource_ids))
        return list((await session.execute(query)).scalars())

    async def last_seq(self, session: AsyncSession) -> int:
        value = (await session.execute(select(func.max(EventRecord.seq)))).scalar()
        return int(value or 0)


# The largest sequence number the log can hold (a signed 64-bit column on both databases).
MAX_CURSOR = 2**63 - 1
_CURSOR = re.compile(r"[0-9]+")


def parse_cursor(after: str) -> int:
    """A client's resume cursor: ASCII decimal digits (so not `²` or `٣`, which `str.isdigit`
    accepts), at most MAX_CURSOR. A larger number was never an event's cursor and would
    overflow the query, so it is refused like any malformed cursor rather than clamped: a
    client holding one has a bug, and waiting silently past the end of time would hide it."""
    if not _CURSOR.fullmatch(after):
        raise InvalidArgument(
            "after must be a cursor from a previous event",
            violations=[FieldViolation("after", "must be a decimal event cursor", "Format")],
        )
    digits = after.lstrip("0") or "0"
    # The length first: int() refuses strings of over 4300 digits.
    if len(digits) > len(str(MAX_CURSOR)) or int(digits) > MAX_CURSOR:
        raise InvalidArgument(
            "after is not a cursor this server issued",
            violations=[FieldViolation("after", f"must be at most {MAX_CURSOR}", "Range")],
        )
    return int(digits)


class EventBus:
    """Wakes readers when new events were committed: at once for this process's commits, and on
    PostgreSQL for every replica's too (LISTEN/NOTIFY). Readers still poll the log now and then,
    so a lost notification delays an event but never loses it."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._listener: AsyncConnection | None = None

    async def listen_postgres(self, engine: AsyncEngine) -> None:
        """Hold one connection that LISTENs for other replicas' commits."""
        connection = await engine.connect()
        raw = await connection.get_raw_connection()
        await raw.driver_connection.add_listener(  # type: ignore[union-attr]
            NOTIFY_CHANNEL, lambda *_: self.notify()
        )
        self._listener = connection

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        """Take this before reading the log, then wait on it: no commit can slip in between."""
        return self._changed


async def wait_for(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


@dataclass(frozen=True)
class Heartbeat:
    """Sent when a stream had nothing to say for a while; carries the stream's cursor."""

    cursor: int
    at: datetime


class EventFeed:
    """Follows the event log for one subscriber: history from a cursor, then live events."""

    def __init__(
        self,
        db: Database,
        log: EventLog,
        bus: EventBus,
        clock: Clock,
        poll_seconds: float,
    ) -> None:
        self._db = db
        self._log = log
        self._bus = bus
        self._clock = clock
        self._poll_seconds = poll_seconds

    async def start_cursor(self, after: str) -> int:
        """`after` as sent by a client: empty means "from now on"."""
        if not after:
            async with self._db.read() as session:
                return await self._log.last_seq(session)
        return parse_cursor(after)

    async def follow(
        self,
        *,
        org_id: str,
        after: int,
        types: Sequence[str],
        resource_ids: Sequence[str],
        heartbeat_seconds: float,
        batch: int = 500,
        type_prefixes: Sequence[str] = (),
        started: Callable[[tuple[()]], Awaitable[object]] | None = None,
    ) -> AsyncIterator[EventRecord | Heartbeat]:
        """Events after `after`, then live ones, with a heartbeat when quiet.

        `started` is awaited once (with no metadata), before the first read: a stream's servicer
        passes its context's send_initial_metadata, so that a subscriber (and, through Envoy, an
        SSE client) gets the response headers at once, not with the first event or heartbeat.
        Requests are validated before, so a refused one still fails with its own HTTP status.
        """
        if started is not None:
            await started(())  # no metadata of its own: just the headers, now
        cursor = after
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + heartbeat_seconds
        while True:
            waiter = self._bus.waiter()
            async with self._db.read() as session:
                rows = await self._log.read(
                    session,
                    org_id=org_id,
                    after=cursor,
                    types=types,
                    type_prefixes=type_prefixes,
                    resource_ids=resource_ids,
                    limit=batch,
                )
            for row in rows:
                assert row.seq is not None
                cursor = row.seq
                yield row
            if len(rows) == batch:
                continue
            now = loop.time()
            if now >= next_beat:
                yield Heartbeat(cursor=cursor, at=self._clock.now())
                next_beat = now + heartbeat_seconds
            await wait_for(waiter, max(0.0, min(self._poll_seconds, next_beat - now)))
