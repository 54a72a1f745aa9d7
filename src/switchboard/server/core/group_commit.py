"""Group commit: many concurrent small writes share one transaction and one fsync.

"Accepted means durable": a caller's `submit` returns only after its item is committed. Instead of
one commit per caller, a single writer task takes everything queued (up to `max_batch`), applies it
with one batch handler in one transaction, commits once and resolves every caller. If the batch
fails, each item is retried alone so one bad item fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.server.core.db import Database

Item = TypeVar("Item")
Result = TypeVar("Result")
BatchHandler = Callable[[AsyncSession, Sequence[Item]], Awaitable[Sequence[Result]]]

log = logging.getLogger("switchboard.group_commit")


class GroupCommitter(Generic[Item, Result]):
    def __init__(
        self,
        name: str,
        db: Database,
        handler: BatchHandler[Item, Result],
        *,
        max_batch: int = 256,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._name = name
        self._db = db
        self._handler = handler
        self._max_batch = max_batch
        self._after_commit = after_commit
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"group-commit-{self._name}")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, item: Item) -> Result:
        if self._task is None:
            raise RuntimeError(f"group committer {self._name} is not running")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        try:
            async with self._db.write() as session:
                results = await self._handler(session, items)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("write failed", extra={"committer": self._name})
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            # One item may be at fault (e.g. a unique key raced by another process): isolate it.
            for single in batch:
                await self._commit_batch([single])
            return
        self._notify()
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a cancelled caller's write stands regardless
                future.set_result(result)

    def _notify(self) -> None:
        if self._after_commit is not None:
            self._after_commit()
