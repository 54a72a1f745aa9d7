"""Keeps derived contact data true after changes: DYNAMIC group counts and fast access slots.

Contact writes mark the org's DYNAMIC groups `Processing`; this worker recounts them in the
database and marks them `Ready`. A changed fast access rule is flagged `reapply_pending`; this
worker re-derives the org's contacts in batches, then clears the flag. Both markers are stored,
so work interrupted by a restart is picked up again by the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from switchboard.server.contacts.fast_access import FastAccessService
from switchboard.server.contacts.groups import GroupService
from switchboard.server.contacts.service import ContactService
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, wait_for

log = logging.getLogger("switchboard.contacts.maintenance")

REDERIVE_BATCH = 1000


class ContactMaintenance:
    def __init__(
        self,
        *,
        db: Database,
        bus: EventBus,
        clock: Clock,
        contacts: ContactService,
        groups: GroupService,
        fast_access: FastAccessService,
        poll_seconds: float,
        settle_seconds: float = 0.2,
    ) -> None:
        self._db = db
        self._bus = bus
        self._clock = clock
        self._contacts = contacts
        self._groups = groups
        self._fast_access = fast_access
        self._poll_seconds = poll_seconds
        # After a wake-up, wait a moment: a burst of writes (an import) then costs one recount.
        self._settle_seconds = settle_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="contact-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            waiter = self._bus.waiter()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("contact maintenance pass failed; retrying")
            if await wait_for(waiter, self._poll_seconds):
                await asyncio.sleep(self._settle_seconds)

    async def run_once(self) -> None:
        """One pass: re-derive flagged rules' orgs, then recount stale DYNAMIC groups."""
        for org_id, rule_id, mark in await self._fast_access.pending():
            await self._rederive(org_id)
            await self._fast_access.mark_applied(rule_id, mark)
        for group in await self._groups.stale_groups():
            await self._groups.recount(group)

    async def _rederive(self, org_id: str) -> None:
        after: str | None = ""
        while after is not None:
            after = await self._db.run_write(
                functools.partial(
                    self._contacts.rederive_batch,
                    org_id=org_id,
                    after_id=after,
                    limit=REDERIVE_BATCH,
                    now=self._clock.now(),
                )
            )
