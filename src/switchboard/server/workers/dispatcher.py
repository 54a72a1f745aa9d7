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

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import transaction
from switchboard.server.core.events import EventBus, EventLog, NewEvent, wait_for
from switchboard.server.core.group_commit import GroupCommitter
from switchboard.server.providers.base import OutboundSms, Receipt, SmsProvider, SubmitResult
from switchboard.server.sms.models import SmsRecord, SmsStatus
from switchboard.server.sms.repository import SmsRepository
from switchboard.server.sms.service import status_event

log = logging.getLogger("switchboard.dispatcher")


class SmsDispatcher:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
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
        self._sessions = sessions
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
        self._receipts: GroupCommitter[Receipt, None] = GroupCommitter(
            "sms-receipts", sessions, self._apply_receipts, after_commit=after_commit
        )
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._receipts.start()
        for provider in set(self._providers.values()):
            await provider.start(self._on_receipt)
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
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._receipts.stop()

    async def _resume_sent(self) -> None:
        """Messages handed over before a restart still await receipts: re-arm them."""
        for channel, provider in self._providers.items():
            async with self._sessions() as session:
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
        now = self._clock.now()
        async with transaction(self._sessions) as session:
            claimed = await self._repository.claim_due(
                session, now=now, lease_until=now + self._lease, limit=self._batch_size
            )
        if not claimed:
            return 0
        results = await asyncio.gather(*(self._submit(record) for record in claimed))
        async with transaction(self._sessions) as session:
            events = []
            for record, result in zip(claimed, results, strict=True):
                updated = await self._record_submit(session, record, result)
                if updated is not None:
                    events.append(status_event(updated))
            await self._events.append(session, events)
        self._after_commit()
        return len(claimed)

    async def _submit(self, record: SmsRecord) -> SubmitResult:
        provider = self._providers.get(record.channel)
        if provider is None:
            return SubmitResult(error=f"no provider serves channel {record.channel!r}")
        try:
            return await provider.submit(_outbound(record))
        except Exception as exc:
            log.exception("provider submit crashed", extra={"provider": provider.name})
            return SubmitResult(error=f"provider error: {type(exc).__name__}", permanent=False)

    async def _record_submit(
        self, session: AsyncSession, record: SmsRecord, result: SubmitResult
    ) -> SmsRecord | None:
        now = self._clock.now()
        if result.accepted:
            values: dict[str, object] = {
                "status": SmsStatus.SENT.value,
                "provider_message_id": result.provider_message_id,
                "lease_until": None,
                "updated_at": now,
            }
        elif result.permanent or record.attempts >= self._max_attempts:
            values = {
                "status": SmsStatus.FAILED.value,
                "error": result.error,
                "lease_until": None,
                "updated_at": now,
            }
        else:
            # Transient: leave it queued; the lease doubles as the backoff timer.
            backoff = timedelta(seconds=min(2**record.attempts, 300))
            await self._repository.transition(
                session,
                record.id,
                from_statuses=[SmsStatus.ACCEPTED],
                values={"lease_until": now + backoff, "error": result.error},
            )
            return None
        return await self._repository.transition(
            session, record.id, from_statuses=[SmsStatus.ACCEPTED], values=values
        )

    def _on_receipt(self, receipt: Receipt) -> None:
        task = asyncio.create_task(self._receipts.submit(receipt))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _apply_receipts(
        self, session: AsyncSession, receipts: Sequence[Receipt]
    ) -> list[None]:
        now = self._clock.now()
        events: list[NewEvent] = []
        for receipt in receipts:
            status = SmsStatus.DELIVERED if receipt.delivered else SmsStatus.FAILED
            # Only SENT messages take receipts: duplicates and late ones change nothing.
            updated = await self._repository.transition(
                session,
                receipt.message_id,
                from_statuses=[SmsStatus.SENT],
                values={"status": status.value, "error": receipt.error, "updated_at": now},
            )
            if updated is not None:
                events.append(status_event(updated))
        await self._events.append(session, events)
        return [None] * len(receipts)


def _outbound(record: SmsRecord) -> OutboundSms:
    return OutboundSms(
        message_id=record.id,
        org_id=record.org_id,
        channel=record.channel,
        to=record.destination,
        content=record.content,
    )
