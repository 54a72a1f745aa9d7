"""Keeps the attachment directory in step with the database (see attachments/files.py).

At start and then every `attachment_sweep_seconds`, files that no attachment row names and that
are older than that same period are removed: what a crash between a file write and its commit,
or between a commit and the removal of a replaced file, left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from switchboard.server.attachments.store import AttachmentStore

log = logging.getLogger(__name__)


class AttachmentSweeper:
    def __init__(self, store: AttachmentStore, *, period_seconds: float) -> None:
        self._store = store
        self._period = period_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="attachment-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._store.sweep_files(older_than_seconds=self._period)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("attachment sweep failed; retrying next period")
            await asyncio.sleep(self._period)
