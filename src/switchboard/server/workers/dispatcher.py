"""The SMS dispatcher: moves accepted messages to their provider and records what comes back.

Work is claimed from the database with a lease (SKIP LOCKED on PostgreSQL), so several processes
can share the queue and a crash mid-batch hands the work back when the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventLog, NewEvent, wait_for
from switchboard.server.core.writer import Writer
from switchboard.server.providers.base import OutboundSms, Receipt, SmsProvider, SubmitResult
from switchboard.server.sms.models import SmsStatus
from switchboard.server.sms.phone import PhoneNumber
from switchboard.server.sms.repository import Row, SmsRepository
from switchboard.server.sms.service import status_event

log = logging.getLogger("switchboard.dispatcher")


class SmsDispatcher:
    def __init__(
        self,
        *,
        db: Database,
        writer: Writer,
        repository: SmsRepository,
        events: EventLog,
        bus: EventBus,
        clock: Clock,
        providers: Mapping[str, SmsProvider],
        poll_seconds: float,
        batch_size: int = 200,
        min_claim_interval: float = 0.01,
        lease: timedelta = timedelta(seconds=30),
        max_attempts: int = 5,
        retry_base_seconds: float = 2.0,
    ) -> None:
        self._db = db
        self._repository = repository
        self._events = events
        self._bus = bus
        self._clock = clock
        self._providers = providers  # channel → provider
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._min_claim_interval = min_claim_interval
        self._lease = lease
        self._max_attempts = max_attempts
        self._retry_base_seconds = retry_base_seconds
        # Every write goes through the process's writer, sharing its transactions with accepts.
        self._claims = writer.channel("sms-claim", self._claim)
        self._outcomes = writer.channel("sms-submitted", self._apply_outcomes)
        self._receipts = writer.channel("sms-receipts", self._apply_receipts)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        for provider in set(self._providers.values()):
            await provider.start(self._record_receipts)
        await self._resume_sent()
        self._task = asyncio.create_task(self._run(), name="sms-dispatcher")

    async def stop(self) -> None:
        """Finish the batch in hand (a cancelled transaction could leave SQLite locked), then
        stop providers and flush receipts that already arrived."""
        if self._task is not None:
            self._stopping = True
            self._bus.notify()
            await self._task
            self._task = None
        for provider in set(self._providers.values()):
            await provider.stop()

    async def _resume_sent(self) -> None:
        """Messages handed over before a restart still await receipts: re-arm them."""
        for channel, provider in self._providers.items():
            async with self._db.read() as session:
                sent = await self._repository.in_status(session, SmsStatus.SENT, [channel], 100_000)
            provider.resume([_outbound(r) for r in sent])

    async def _run(self) -> None:
        while not self._stopping:
            waiter = self._bus.waiter()
            try:
                handled = await self.dispatch_once()
            except Exception:
                log.exception("dispatch failed; retrying")
                handled = 0
            if handled < self._batch_size and not self._stopping:
                await wait_for(waiter, self._poll_seconds)
                # Under load every accept wakes us: pausing briefly lets a batch build up, so a
                # message costs a share of one claim and one update instead of its own (at the
                # price of at most this much queueing delay).
                await asyncio.sleep(self._min_claim_interval)

    async def dispatch_once(self) -> int:
        """Claim a batch, hand it to the providers, record every outcome. Returns how many
        messages were claimed."""
        claimed = await self._claims.submit(self._batch_size)
        if not claimed:
            return 0
        results = await self._submit(claimed)
        await self._outcomes.submit(list(zip(claimed, results, strict=True)))
        return len(claimed)

    def _claim(self, session: Session, limits: Sequence[int]) -> list[list[Row]]:
        now = self._clock.now()
        return [
            self._repository.claim_due(session, now=now, lease_until=now + self._lease, limit=limit)
            for limit in limits
        ]

    def _apply_outcomes(
        self, session: Session, batches: Sequence[Sequence[tuple[Row, SubmitResult]]]
    ) -> list[None]:
        now = self._clock.now()
        sent: list[Row] = []
        failed: list[Row] = []
        retry: list[Row] = []
        events: list[NewEvent] = []
        for row, result in (pair for batch in batches for pair in batch):
            if result.accepted:
                change: Row = {
                    "id": row["id"],
                    "status": SmsStatus.SENT.value,
                    "provider_message_id": result.provider_message_id,
                    "lease_until": None,
                    "updated_at": now,
                }
                sent.append(change)
            elif result.permanent or row["attempts"] >= self._max_attempts:
                change = {
                    "id": row["id"],
                    "status": SmsStatus.FAILED.value,
                    "error": result.error,
                    "lease_until": None,
                    "updated_at": now,
                }
                failed.append(change)
            else:
                # Transient: it stays queued, and the lease doubles as the backoff timer.
                delay = self._retry_base_seconds * 2 ** (row["attempts"] - 1)
                backoff = timedelta(seconds=min(delay, 300))
                retry.append({"id": row["id"], "error": result.error, "lease_until": now + backoff})
                continue
            events.append(status_event({**row, **change}))
        for changes in (sent, failed, retry):
            self._repository.update_many(session, SmsStatus.ACCEPTED, changes)
        self._events.append(session, events)
        return [None] * len(batches)

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

    def _apply_receipts(self, session: Session, batches: Sequence[Sequence[Receipt]]) -> list[None]:
        """Only SENT messages take receipts: duplicates and late ones change nothing."""
        receipts = [receipt for batch in batches for receipt in batch]
        now = self._clock.now()
        awaiting = {
            row["id"]: row
            for row in self._repository.lock_in_status(
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
        self._repository.update_many(session, SmsStatus.SENT, changes)
        self._events.append(session, events)
        return [None] * len(batches)


def _outbound(row: Row) -> OutboundSms:
    return OutboundSms(
        message_id=row["id"],
        org_id=row["org_id"],
        channel=row["channel"],
        to=PhoneNumber(row["destination"], row["destination_type"]),
        content=row["content"],
    )
