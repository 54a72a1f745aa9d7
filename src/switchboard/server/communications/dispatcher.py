"""The communications dispatcher: hands due channels to their providers and records what comes
back, each state change with its `communication.*` event in the same transaction.

A delivery is due when it is ACCEPTED or SCHEDULED and its `due_at` has come. Work is claimed
with a lease (SKIP LOCKED on PostgreSQL) so replicas share the queue and a crash hands work back
when the lease runs out; real-time types (`realTimeRequired`) are claimed first. Scheduled work
is found by polling (every `poll_seconds`) as well as on wake-ups, so nothing waits longer than
that past its due time. The sealed rendering is opened only here, just before the hand-off,
and dropped once the delivery is SENT or FAILED.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.orm import Session

from switchboard.server.communications import qr
from switchboard.server.communications.delivery import (
    ChannelProvider,
    EmailParts,
    InlinePart,
    Outbound,
    build_email,
)
from switchboard.server.communications.models import ChannelName, DeliveryRecord, DeliveryStatus
from switchboard.server.communications.sealing import Sealer
from switchboard.server.communications.service import delivery_event
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventLog, NewEvent, wait_for
from switchboard.server.providers.base import Receipt, SubmitResult

log = logging.getLogger("switchboard.communications.dispatcher")

Row = Mapping[Any, Any]
_table: Table = DeliveryRecord.__table__  # type: ignore[attr-defined]
_c = _table.c
_WAITING = (DeliveryStatus.ACCEPTED.value, DeliveryStatus.SCHEDULED.value)
_DUE = (
    select(_c.id)
    .where(_c.status.in_(_WAITING))
    .where(_c.due_at <= bindparam("now"))
    .where(or_(_c.lease_until.is_(None), _c.lease_until <= bindparam("now")))
    .order_by(_c.priority.desc(), _c.due_at)
    .limit(bindparam("limit"))
)


def _claim_statement(skip_locked: bool) -> Any:
    due = _DUE.with_for_update(skip_locked=True) if skip_locked else _DUE
    return (
        update(_table)
        .where(_c.id.in_(due.scalar_subquery()))
        .values(lease_until=bindparam("lease_until"), attempts=_c.attempts + 1)
        .returning(*_c)
    )


_CLAIM = _claim_statement(False)
_CLAIM_SKIP_LOCKED = _claim_statement(True)


class CommunicationDispatcher:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        bus: EventBus,
        clock: Clock,
        sealer: Sealer,
        providers: Mapping[str, ChannelProvider],
        email_from: str,
        poll_seconds: float,
        batch_size: int = 100,
        lease: timedelta = timedelta(seconds=30),
        max_attempts: int = 5,
        retry_base_seconds: float = 2.0,
    ) -> None:
        self._db = db
        self._events = events
        self._bus = bus
        self._clock = clock
        self._sealer = sealer
        self.providers = providers  # channel → provider
        self._email_from = email_from
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._lease = lease
        self._max_attempts = max_attempts
        self._retry_base_seconds = retry_base_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        for provider in set(self.providers.values()):
            await provider.start(self._record_receipts)
        await self._resume_sent()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="communications-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._bus.notify()
            await self._task
            self._task = None
        for provider in set(self.providers.values()):
            await provider.stop()

    async def _resume_sent(self) -> None:
        """Hand-offs made before a restart still await receipts: re-arm them."""
        query = select(_c.id, _c.org_id, _c.destination, _c.channel).where(
            _c.status == DeliveryStatus.SENT.value
        )
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        for channel, provider in self.providers.items():
            mine = [
                (r["id"], r["org_id"], r["destination"]) for r in rows if r["channel"] == channel
            ]
            if mine:
                provider.resume(mine)

    async def _run(self) -> None:
        while not self._stopping:
            waiter = self._bus.waiter()
            try:
                handled = await self.dispatch_once()
            except Exception:
                log.exception("communications dispatch failed; retrying")
                handled = 0
            if handled < self._batch_size and not self._stopping:
                await wait_for(waiter, self._poll_seconds)

    async def dispatch_once(self) -> int:
        """Claim due deliveries, hand them over, record the outcomes; returns how many."""
        claimed = await self._db.run_write(self._claim)
        if not claimed:
            return 0
        outcomes: list[tuple[Row, SubmitResult]] = []
        ready: list[tuple[Row, Outbound]] = []
        for row in claimed:
            try:
                ready.append((row, self._outbound(row)))
            except (InvalidToken, ValueError, KeyError) as exc:
                log.warning(
                    "sealed content unreadable", extra={"delivery": row["id"], "error": repr(exc)}
                )
                problem = "the sealed content cannot be opened (was the secret changed?)"
                outcomes.append((row, SubmitResult(error=problem, permanent=True)))
        outcomes.extend(await self._submit(ready))
        await self._db.run_write(lambda session: self._apply_outcomes(session, outcomes))
        return len(claimed)

    def _claim(self, session: Session) -> list[Row]:
        now = self._clock.now()
        connection = session.connection()
        statement = _CLAIM_SKIP_LOCKED if connection.dialect.name == "postgresql" else _CLAIM
        params = {"now": now, "lease_until": now + self._lease, "limit": self._batch_size}
        return [dict(r) for r in connection.execute(statement, params).mappings()]

    def _outbound(self, row: Row) -> Outbound:
        sealed = self._sealer.unseal(row["sealed"] or "")
        base = {
            "delivery_id": row["id"],
            "org_id": row["org_id"],
            "channel": row["channel"],
            "to": row["destination"],
            "to_type": row["destination_type"],
            "sender": row["sender_info"],
            "subject": sealed.get("subject", ""),
            "content": sealed["content"],
        }
        if row["channel"] != ChannelName.EMAIL:
            return Outbound(**base)
        inline: list[InlinePart] = []
        attachments: list[InlinePart] = []
        for file in sealed.get("files", []):
            part = InlinePart(
                file["name"], file["content_type"], base64.b64decode(file["content"]), file["cid"]
            )
            (inline if part.content_id else attachments).append(part)
        code = sealed.get("qr")
        if code:
            inline.append(InlinePart("qr.png", "image/png", qr.png(code["text"]), code["cid"]))
        cc = tuple(sealed.get("cc", ()))
        sender = row["sender_info"]
        address = sender if "@" in sender else self._email_from
        mime = build_email(
            EmailParts(
                sender_name="" if "@" in sender else sender,
                sender_address=address,
                to=row["destination"],
                cc=cc,
                reply_to=sealed.get("reply_to", ""),
                subject=base["subject"],
                html=base["content"],
                inline=inline,
                attachments=attachments,
            )
        )
        recipients = (row["destination"], *cc, *sealed.get("bcc", ()))
        return Outbound(**base, recipients=recipients, mime=mime)

    async def _submit(
        self, ready: Sequence[tuple[Row, Outbound]]
    ) -> list[tuple[Row, SubmitResult]]:
        by_channel: dict[str, list[tuple[Row, Outbound]]] = {}
        results: list[tuple[Row, SubmitResult]] = []
        for row, message in ready:
            if message.channel in self.providers:
                by_channel.setdefault(message.channel, []).append((row, message))
            else:
                problem = f"no provider serves channel {message.channel!r}"
                results.append((row, SubmitResult(error=problem)))
        for channel, items in by_channel.items():
            provider = self.providers[channel]
            try:
                answers = await provider.submit_many([m for _, m in items])
            except Exception as exc:
                log.exception("provider submit crashed", extra={"provider": provider.name})
                error = f"provider error: {type(exc).__name__}"
                answers = [SubmitResult(error=error, permanent=False)] * len(items)
            results.extend((row, answer) for (row, _), answer in zip(items, answers, strict=True))
        return results

    def _apply_outcomes(
        self, session: Session, outcomes: Sequence[tuple[Row, SubmitResult]]
    ) -> None:
        now = self._clock.now()
        events: list[NewEvent] = []
        connection = session.connection()
        for row, result in outcomes:
            if result.accepted:
                change: dict[str, Any] = {
                    "status": DeliveryStatus.SENT.value,
                    "provider_message_id": result.provider_message_id or "",
                    "sent_at": now,
                    "error": "",
                }
            elif result.permanent or row["attempts"] >= self._max_attempts:
                change = {"status": DeliveryStatus.FAILED.value, "error": result.error or ""}
            else:
                # Transient: it stays queued, and the lease doubles as the backoff timer.
                delay = self._retry_base_seconds * 2 ** (row["attempts"] - 1)
                backoff = timedelta(seconds=min(delay, 300))
                connection.execute(
                    update(_table)
                    .where(_c.id == row["id"], _c.status == row["status"])
                    .values(error=result.error or "", lease_until=now + backoff)
                )
                continue
            change.update(sealed=None, lease_until=None, updated_at=now)
            done = connection.execute(
                update(_table).where(_c.id == row["id"], _c.status == row["status"]).values(change)
            )
            if done.rowcount:
                events.append(delivery_event({**row, **change}))
        self._events.append(session, events)

    async def _record_receipts(self, receipts: Sequence[Receipt]) -> None:
        await self._db.run_write(lambda session: self._apply_receipts(session, receipts))

    def _apply_receipts(self, session: Session, receipts: Sequence[Receipt]) -> None:
        """Only SENT deliveries take receipts: duplicates and late ones change nothing."""
        now = self._clock.now()
        connection = session.connection()
        ids = list({r.message_id for r in receipts})
        query = select(_table).where(_c.id.in_(ids), _c.status == DeliveryStatus.SENT.value)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        awaiting = {r["id"]: dict(r) for r in connection.execute(query).mappings()}
        events: list[NewEvent] = []
        for receipt in receipts:
            row = awaiting.pop(receipt.message_id, None)
            if row is None:
                continue
            change: dict[str, Any] = {"updated_at": now}
            if receipt.delivered:
                change.update(status=DeliveryStatus.DELIVERED.value, delivered_at=now)
            else:
                change.update(status=DeliveryStatus.FAILED.value, error=receipt.error or "")
            connection.execute(
                update(_table)
                .where(_c.id == row["id"], _c.status == DeliveryStatus.SENT.value)
                .values(change)
            )
            events.append(delivery_event({**row, **change}))
        self._events.append(session, events)
