"""The event log: every state change appends here in the same transaction as the change.

Streams read the log from a cursor (the `seq` column), so a subscriber that reconnects with the
last cursor it saw loses nothing. The in-process `EventBus` only wakes readers early; the log is
the truth, and readers also poll it so events committed by other processes arrive too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import EVENTS_APPENDED, Database, table_of
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    StreamClosing,
    StreamLagged,
)
from switchboard.server.core.models import EventRecord

NOTIFY_CHANNEL = "switchboard_events"

log = logging.getLogger(__name__)

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
        """Events of `org_id` after `after`: of `types` or of types with `type_prefixes`."""
        columns = table_of(EventRecord).c
        wanted = or_(
            *([columns.type.in_(types)] if types else []),
            *(columns.type.startswith(p, autoescape=True) for p in type_prefixes),
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


@dataclass(frozen=True)
class StreamNotice(Heartbeat):
    """The last item of a stream that ends abnormally: `type` is `stream.lagged` (the subscriber
    fell behind its buffer) or `stream.closing` (the server is shutting down), and `cursor` the
    last event delivered, where the client resumes with `after` losing nothing. The stream then
    ends with the matching status (StreamLagged, StreamClosing)."""

    type: str = "stream.closing"


LAGGED = "stream.lagged"
CLOSING = "stream.closing"


def type_matcher(types: Sequence[str], type_prefixes: Sequence[str]) -> Callable[[str], bool]:
    """What EventLog.read selects: one of `types` or a type with one of `type_prefixes`."""
    wanted = frozenset(types)
    prefixes = tuple(type_prefixes)
    if not prefixes:
        return wanted.__contains__
    return lambda name: name in wanted or name.startswith(prefixes)


class _Subscriber:
    """One stream's bounded buffer in the hub. The hub only appends (never waits); the stream
    drains it. Past `capacity` unread events the subscriber is marked overflowed and its buffer
    dropped: the stream tells its client it lagged, with the last cursor it delivered."""

    __slots__ = ("capacity", "closing", "floor", "matches", "overflowed", "queue", "ready")

    def __init__(self, capacity: int, floor: int, matches: Callable[[EventRecord], bool]) -> None:
        self.capacity = capacity
        self.floor = floor  # every matching event after this is (or was) put in the queue
        self.matches = matches
        self.queue: deque[EventRecord] = deque()
        self.ready = asyncio.Event()
        self.overflowed = False
        self.closing = False

    def offer(self, record: EventRecord) -> None:
        if self.overflowed or not self.matches(record):
            return
        if len(self.queue) >= self.capacity:
            self.overflowed = True
            self.queue.clear()  # nothing more is held for a stream that must end
        else:
            self.queue.append(record)
        self.ready.set()

    def restart(self, floor: int) -> None:
        """While still catching up from the database: drop the buffer and take events after
        `floor` from now on (the database has every one before)."""
        self.queue.clear()
        self.overflowed = False
        self.floor = floor


class EventHub:
    """One tailer per process: reads the log once per wake-up (every org, in batches) and hands
    each new event to the bounded buffers of the subscribers of its org. A subscriber that reads
    nothing costs the tailer one append and never slows it or the others; 1,000 subscribers cost
    a dictionary lookup and their own filters per event, not 1,000 database reads.

    Cross-process correctness stays with the log: the tailer is woken by the EventBus (this
    process's commits at once, other replicas' through LISTEN/NOTIFY on PostgreSQL) and polls
    every `poll_seconds` besides."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        poll_seconds: float,
        batch: int = 1000,
    ) -> None:
        self._db = db
        self._bus = bus
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._by_org: dict[str, set[_Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._closed = False
        self.cursor = 0  # every event up to here was handed out

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._by_org.values())

    async def _ensure_started(self) -> None:
        # A tailer that ended (its loop closed, or an error escaped it) would leave every stream
        # of this process silent: start another, from where the last one handed out.
        if self._task is None or self._task.done():
            if self._task is not None and not self._task.cancelled() and self._task.exception():
                log.error("event hub: the tailer ended", exc_info=self._task.exception())
            self._started = asyncio.Event()
            self._task = asyncio.create_task(self._tail(), name="event-hub")
        await self._started.wait()

    async def subscribe(
        self, org_id: str, capacity: int, matches: Callable[[EventRecord], bool]
    ) -> _Subscriber:
        await self._ensure_started()
        subscriber = _Subscriber(capacity, self.cursor, matches)
        subscriber.closing = self._closed
        self._by_org.setdefault(org_id, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, org_id: str, subscriber: _Subscriber) -> None:
        subscribers = self._by_org.get(org_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_org[org_id]

    async def close(self) -> None:
        """Server shutdown: every subscriber is told `stream.closing`; the tailer stops."""
        self._closed = True
        for subscribers in self._by_org.values():
            for subscriber in subscribers:
                subscriber.closing = True
                subscriber.ready.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tail(self) -> None:
        columns = table_of(EventRecord).c
        while not self.cursor:  # a restarted tailer goes on from where the last one stopped
            try:
                async with self._db.read() as session:
                    self.cursor = int(
                        (await session.execute(select(func.max(columns.seq)))).scalar() or 0
                    )
                break
            except Exception:  # the database is away: subscribers wait until it is back
                log.exception("event hub: reading the log's end failed")
                await asyncio.sleep(self._poll_seconds)
        self._started.set()
        while True:
            waiter = self._bus.waiter()
            try:
                async with self._db.read() as session:
                    rows = list(
                        (
                            await session.execute(
                                select(EventRecord)
                                .where(columns.seq > self.cursor)
                                .order_by(columns.seq)
                                .limit(self._batch)
                            )
                        ).scalars()
                    )
            except Exception:  # the database is away: the log still has everything; retry
                log.exception("event hub: reading the log failed")
                await asyncio.sleep(self._poll_seconds)
                continue
            for row in rows:
                assert row.seq is not None
                for subscriber in self._by_org.get(row.org_id, ()):
                    subscriber.offer(row)
                self.cursor = row.seq
            if len(rows) == self._batch:
                await asyncio.sleep(0)  # let the streams drain between batches
                continue
            await wait_for(waiter, self._poll_seconds)


class EventFeed:
    """Follows the event log for one subscriber: history from a cursor (from the database), then
    live events from the process's EventHub, through a buffer of `buffer_events`."""

    def __init__(
        self,
        db: Database,
        log: EventLog,
        bus: EventBus,
        clock: Clock,
        poll_seconds: float,
        buffer_events: int = 1000,
        hub: EventHub | None = None,
    ) -> None:
        self._db = db
        self._log = log
        self._bus = bus
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._buffer_events = buffer_events
        self.hub = hub or EventHub(db, bus, poll_seconds)

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

        A subscriber first catches up from the database, up to the hub's cursor when it
        subscribed, then takes the hub's events after it: no gap, no duplicate (by cursor). If
        its buffer overflows while live it gets a `stream.lagged` StreamNotice with the last
        cursor it was given, then StreamLagged is raised; on shutdown `stream.closing` and
        StreamClosing.
        """
        if started is not None:
            await started(())  # no metadata of its own: just the headers, now
        type_ok = type_matcher(types, type_prefixes)
        wanted_ids = frozenset(resource_ids)

        def matches(record: EventRecord) -> bool:
            return type_ok(record.type) and (not wanted_ids or record.resource_id in wanted_ids)

        subscriber = await self.hub.subscribe(org_id, self._buffer_events, matches)
        try:
            cursor = after
            loop = asyncio.get_running_loop()
            next_beat = loop.time() + heartbeat_seconds
            # Catch up from the log, up to where the hub's buffer takes over (its floor).
            while not subscriber.closing:
                floor = subscriber.floor
                if cursor >= floor:
                    if subscriber.overflowed:
                        # Fell behind while catching up: the log still has it all.
                        subscriber.restart(self.hub.cursor)
                        continue
                    break
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
                    if row.seq > floor:
                        cursor = floor  # the buffer has this one and the rest
                        break
                    cursor = row.seq
                    yield row
                else:
                    if len(rows) < batch:
                        cursor = floor  # nothing more up to the floor
            # Live: what the hub hands over.
            delivered = cursor
            while True:
                if subscriber.closing:
                    yield StreamNotice(cursor=delivered, at=self._clock.now(), type=CLOSING)
                    raise StreamClosing(
                        f"the server is shutting down; resume with after={delivered}",
                        metadata={"cursor": str(delivered)},
                    )
                if subscriber.overflowed:
                    yield StreamNotice(cursor=delivered, at=self._clock.now(), type=LAGGED)
                    raise StreamLagged(
                        f"the subscriber fell more than {self._buffer_events} events behind;"
                        f" resume with after={delivered}",
                        metadata={"cursor": str(delivered)},
                    )
                queue = subscriber.queue
                if queue:
                    record = queue.popleft()
                    assert record.seq is not None
                    if record.seq > delivered:
                        delivered = record.seq
                        yield record
                    continue
                subscriber.ready.clear()
                now = loop.time()
                if now >= next_beat:
                    yield Heartbeat(cursor=delivered, at=self._clock.now())
                    next_beat = loop.time() + heartbeat_seconds
                    continue
                await wait_for(subscriber.ready, next_beat - now)
        finally:
            self.hub.unsubscribe(org_id, subscriber)
