"""The SMS dispatcher: moves accepted messages to their provider and records what comes back.

Work is claimed from the database with a lease (SKIP LOCKED on PostgreSQL), so several processes
can share the queue and a crash mid-batch hands the work back when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventLog, NewEvent, wait_for
from switchboard.server.core.group_commit import GroupCommitter
from switchboard.server.providers.base import OutboundSms, Receipt, SmsProvider, SubmitResult
from switchboard.server.sms.models import SmsStatus
from switchboard.server.sms.repository import Row, SmsRepository
from switchboard.server.sms.service import status_event

log = logging.getLogger("switchboard.dispatcher")


class SmsDispatcher:
    def __init__(
        self,
        *,
        db: Database,
        repository: SmsRepository,
        events: EventLog,
        bus: EventBus,
        clock: Clock,
        providers: Mapping[str, SmsProvider],
        poll_seconds: float,
        after_commit: Callable[[], None],
        batch_size: int = 200,
        lease: timedelta = timedelta(seconds=30),
        max_attempts: int = 5,
    ) -> None:
        self._db = db
        self._repository = repository
        self._events = events
        self._bus = bus
        self._clock = clock
        self._providers = providers  # channel → provider
        self._poll_seconds = poll_seconds
        self._after_commit = after_commit
        self._batch_size = batch_size
        self._lease = lease
        self._max_attempts = max_attempts
        self._receipts: GroupCommitter[Sequence[Receipt], None] = GroupCommitter(
            "sms-receipts", db, self._apply_receipts, after_commit=after_commit
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._receipts.start()
        for provider in set(self._providers.values()):
            await provider.start(self._record_receipts)
        await self._resume_sent()
        self._task = asyncio.create_task(self._run(), name="sms-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for provider in set(self._providers.values()):
            await provider.stop()
        await self._receipts.stop()

    async def _resume_sent(self) -> None:
        """Messages handed over before a restart still await receipts: re-arm them."""
        for channel, provider in self._providers.items():
            async with self._db.read() as session:
                sent = await self._repository.in_status(session, SmsStatus.SENT, [channel], 100_000)
            provider.resume([_outbound(r) for r in sent])

    async def _run(self) -> None:
        while True:
            waiter = self._bus.waiter()
            try:
                handled = await self.dispatch_once()
            except Exception:
                log.exception("dispatch failed; retrying")
                handled = 0
            if handled < self._batch_size:
                await wait_for(waiter, self._poll_seconds)

    async def dispatch_once(self) -> int:
        """Claim a batch, hand it to the providers concurrently, record every outcome in one
        transaction. Returns how many messages were claimed."""
        now = self._clock.now()
        async with self._db.write() as session:
            claimed = await self._repository.claim_due(
                session, now=now, lease_until=now + self._lease, limit=self._batch_size
            )
        if not claimed:
            return 0
        results = await self._submit(claimed)
        now = self._clock.now()
        sent: list[Row] = []
        failed: list[Row] = []
        retry: list[Row] = []
        for row, result in zip(claimed, results, strict=True):
            if result.accepted:
                sent.append(
                    {
                        "id": row["id"],
                        "status": SmsStatus.SENT.value,
                        "provider_message_id": result.provider_message_id,
                        "lease_until": None,
                        "updated_at": now,
                    }
                )
            elif result.permanent or row["attempts"] >= self._max_attempts:
                failed.append(
                    {
                        "id": row["id"],
                        "status": SmsStatus.FAILED.value,
                        "error": result.error,
                        "lease_until": None,
                        "updated_at": now,
                    }
                )
            else:
                # Transient: it stays queued, and the lease doubles as the backoff timer.
                backoff = timedelta(seconds=min(2 ** row["attempts"], 300))
                retry.append({"id": row["id"], "error": result.error, "lease_until": now + backoff})
        async with self._db.write() as session:
            for changes in (sent, failed, retry):
                await self._repository.update_many(session, SmsStatus.ACCEPTED, changes)
            by_id = {row["id"]: row for row in claimed}
            events = [status_event({**by_id[c["id"]], **c}) for c in (*sent, *failed)]
            await self._events.append(session, events)
        self._after_commit()
        return len(claimed)

    async def _submit(self, rows: Sequence[Row]) -> list[SubmitResult]:
        """Hand each provider its share of the batch at once; results come back in row order."""
        by_provider: dict[str, list[int]] = {}
        results: list[SubmitResult] = [
            SubmitResult(error=f"no provider serves channel {row['channel']!r}") for row in rows
        ]
        for index, row in enumerate(rows):
            if row["channel"] in self._providers:
                by_provider.setdefault(row["channel"], []).append(index)
        for channel, indexes in by_provider.items():
            provider = self._providers[channel]
            try:
                answers = await provider.submit_many([_outbound(rows[i]) for i in indexes])
            except Exception as exc:
                log.exception("provider submit crashed", extra={"provider": provider.name})
                error = f"provider error: {type(exc).__name__}"
                answers = [SubmitResult(error=error, permanent=False)] * len(indexes)
            for index, answer in zip(indexes, answers, strict=True):
                results[index] = answer
        return results

    async def _record_receipts(self, receipts: Sequence[Receipt]) -> None:
        await self._receipts.submit(receipts)

    async def _apply_receipts(
        self, session: AsyncSession, batches: Sequence[Sequence[Receipt]]
    ) -> list[None]:
        """Only SENT messages take receipts: duplicates and late ones change nothing."""
        receipts = [receipt for batch in batches for receipt in batch]
        now = self._clock.now()
        awaiting = {
            row["id"]: row
            for row in await self._repository.lock_in_status(
                session, [r.message_id for r in receipts], SmsStatus.SENT
            )
        }
        changes: list[Row] = []
        events: list[NewEvent] = []
        for receipt in receipts:
            row = awaiting.pop(receipt.message_id, None)  # popped: a repeat in the batch is ignored
            if row is None:
                continue
            status = SmsStatus.DELIVERED if receipt.delivered else SmsStatus.FAILED
            change = {
                "id": receipt.message_id,
                "status": status.value,
                "error": receipt.error,
                "updated_at": now,
            }
            changes.append(change)
            events.append(status_event({**row, **change}))
        await self._repository.update_many(session, SmsStatus.SENT, changes)
        await self._events.append(session, events)
        return [None] * len(batches)


def _outbound(row: Row) -> OutboundSms:
    return OutboundSms(
        message_id=row["id"],
        org_id=row["org_id"],
        channel=row["channel"],
        to=row["destination"],
        content=row["content"],
    )
