"""The process's single writer: group commit across every kind of write.

"Accepted means durable": a caller's `submit` returns only after its item is committed. Instead of
one transaction per caller, one writer task takes everything queued — accepted messages, receipts,
dispatch outcomes, claims — applies each kind with its batch handler inside one transaction,
commits once and answers every caller. Under load a transaction carries hundreds of items; each
statement costs a trip to the database thread, so batching by kind (one INSERT for all accepted
messages) is where throughput comes from. If a batch fails, each item is retried alone so one bad
item fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from switchboard.server.core.db import Database

Item = TypeVar("Item")
Result = TypeVar("Result")
# Handlers are synchronous: a batch's whole transaction runs without returning to the event loop
# (see Database.run_write).
BatchHandler = Callable[[Session, Sequence[Item]], Sequence[Result]]

log = logging.getLogger("switchboard.writer")

_BUSY_WINDOW = 0.02  # seconds: a batch this soon after the previous one means we are under load
_LINGER = 0.002  # seconds a batch waits for company under load


class WriteChannel(Generic[Item, Result]):
    """One kind of write: items of a batch reach `handler` together, in submission order."""

    def __init__(self, writer: Writer, name: str, handler: BatchHandler[Item, Result]) -> None:
        self.writer = writer
        self.name = name
        self.handler = handler

    async def submit(self, item: Item) -> Result:
        result: Result = await self.writer.submit(self, item)
        return result


@dataclass
class _Entry:
    channel: WriteChannel[Any, Any]
    item: Any
    future: asyncio.Future[Any] = field(repr=False)


class Writer:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def channel(self, name: str, handler: BatchHandler[Item, Result]) -> WriteChannel[Item, Result]:
        return WriteChannel(self, name, handler)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop. Stop the producers first."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, channel: WriteChannel[Any, Any], item: Any) -> Any:
        if self._task is None:
            raise RuntimeError("the writer is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Entry(channel, item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_batch = float("-inf")
        while True:
            batch = [await self._queue.get()]
            now = loop.time()
            if now - last_batch < _BUSY_WINDOW and self._queue.empty():
                # Busy, yet this write came alone: requests arrive one loop turn apart, and
                # committing each alone would cost a transaction apiece. Linger a moment so they
                # share one. When idle (no batch in the last window), or when company has already
                # arrived, the batch is committed at once.
                await asyncio.sleep(_LINGER)
            last_batch = now
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Entry]) -> None:
        by_channel: dict[WriteChannel[Any, Any], list[_Entry]] = {}
        for entry in batch:
            by_channel.setdefault(entry.channel, []).append(entry)

        def work(session: Session) -> list[tuple[_Entry, Any]]:
            answers: list[tuple[_Entry, Any]] = []
            for channel, entries in by_channel.items():
                results = channel.handler(session, [e.item for e in entries])
                answers.extend(zip(entries, results, strict=True))
            return answers

        try:
            # Commits that appended events wake their readers (Database.on_events_committed);
            # an empty claim does not set the dispatcher and every stream polling again.
            answers = await self._db.run_write(work)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("write failed", extra={"channel": batch[0].channel.name})
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # One item may be at fault (e.g. a unique key raced by another process): isolate it.
            for entry in batch:
                await self._commit([entry])
            return
        for entry, result in answers:
            if not entry.future.done():  # a cancelled caller's write stands regardless
                entry.future.set_result(result)
