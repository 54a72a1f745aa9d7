"""Database engine and sessions: SQLite (WAL, busy timeout) by default, PostgreSQL via asyncpg."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import BigInteger, DateTime, Table, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import GenerativeSelect
from sqlalchemy.types import TypeDecorator, TypeEngine

from switchboard.server.core.types import T

Query = TypeVar("Query", bound=GenerativeSelect)
# Session.info key set by EventLog.append: the transaction carries events for readers.
EVENTS_APPENDED = "switchboard.events_appended"


def normalize_url(url: str) -> URL:
    """Accept plain `postgresql://` and `sqlite://` URLs and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    mode = synchronous.upper()
    if mode not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"invalid SQLite synchronous mode {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers (streams, dispatcher) run beside the single writer; the busy
        # timeout makes a writer of another process wait instead of failing.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA synchronous={mode}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_engine(url: str, *, sqlite_synchronous: str = "FULL") -> AsyncEngine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Every write transaction ends in an explicit commit or rollback, so the pool's rollback
        # on return would only be one more round trip to the database thread per transaction.
        engine = create_async_engine(
            parsed, connect_args={"timeout": 30}, pool_reset_on_return=None
        )
        _sqlite_pragmas(engine.sync_engine, sqlite_synchronous)
        return engine
    return create_async_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_writer_engine(engine: AsyncEngine, sqlite_synchronous: str) -> Engine:
    """A synchronous engine on the same SQLite file, for the writer thread."""
    url = engine.url.set(drivername="sqlite+pysqlite")
    sync = create_sync_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None)
    _sqlite_pragmas(sync, sqlite_synchronous)
    return sync


class Database:
    """The engine and the ways to use it: `read()` sessions, `write()` transactions, and
    `run_write()` for the hot, batched writes of the process's writer.

    SQLite allows one writer at a time. Writers of one process queue on an asyncio lock here
    instead of colliding inside SQLite, whose busy handler sleeps for up to 100 ms per retry and
    would cap throughput at a few commits a second. PostgreSQL needs no such gate.
    """

    def __init__(self, engine: AsyncEngine, *, sqlite_synchronous: str = "FULL") -> None:
        self.engine = engine
        # Called after every commit that appended events (see EVENTS_APPENDED): the event bus
        # wakes the streams and workers reading them.
        self.on_events_committed: Callable[[], None] | None = None
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._write_gate = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._writer_engine: Engine | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._writer_engine = _sqlite_writer_engine(engine, sqlite_synchronous)
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def read(self) -> AsyncSession:
        """A session for reads (WAL lets them run beside the writer)."""
        return self.sessions()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction committed on success and rolled back on any error."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_gate is not None:
                await stack.enter_async_context(self._write_gate)
            session = await stack.enter_async_context(self.sessions())
            await stack.enter_async_context(session.begin())
            yield session

    async def run_write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one transaction, committed if it returns.

        On SQLite the whole transaction runs on a dedicated thread with a synchronous connection:
        through aiosqlite every statement is a round trip to the event loop, and a busy loop made
        each of those cost milliseconds while the write lock was held. On PostgreSQL it runs on
        an async session (`run_sync` bridges the same synchronous code to asyncpg).
        """
        if self._writer_thread is None:
            async with self.write() as session:
                result = await session.run_sync(work)
                appended = bool(session.info.get(EVENTS_APPENDED))
        else:
            assert self._write_gate is not None
            async with self._write_gate:  # async writers of this process wait, SQLite never does
                loop = asyncio.get_running_loop()
                result, appended = await loop.run_in_executor(
                    self._writer_thread, self._run_sync, work
                )
        if appended and self.on_events_committed is not None:
            self.on_events_committed()
        return result

    def _run_sync(self, work: Callable[[Session], T]) -> tuple[T, bool]:
        assert self._writer_engine is not None
        with Session(self._writer_engine, expire_on_commit=False) as session:
            with session.begin():
                result = work(session)
            return result, bool(session.info.get(EVENTS_APPENDED))

    async def dispose(self) -> None:
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=True)
            self._writer_thread = None
        if self._writer_engine is not None:
            self._writer_engine.dispose()
        await self.engine.dispose()


def for_update(session: Session, query: Query, *, skip_locked: bool = False) -> Query:
    """`query` FOR UPDATE on PostgreSQL; as it is on SQLite, whose single writer needs no row
    locks. `skip_locked` passes over rows another transaction holds (claims of due work)."""
    if session.get_bind().dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=skip_locked)


def table_of(record: type[Any]) -> Table:
    """The table of a SQLModel `table=True` class, typed (SQLModel does not declare `__table__`)."""
    table = record.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{record.__name__} is not mapped to a table")
    return table


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores `timestamptz`. SQLite has no time type: SQLAlchemy's default stores text and
    parses it back with a regular expression, which showed up in profiles of every hot path, so
    SQLite stores integer microseconds since the epoch instead (ordering and comparisons hold).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if dialect.name == "sqlite":
            return (value - _EPOCH) // _MICROSECOND
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return _EPOCH + timedelta(microseconds=value)
        result: datetime = value.astimezone(UTC)
        return result
