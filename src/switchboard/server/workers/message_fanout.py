"""The message request worker: fans requests out into messages, hands TRANSMITTING messages to
the provider layer, records receipts, and expires paused requests.

Fan-out: a request is claimed with a lease (ACCEPTED, or PREPARING whose worker stopped renewing
it: SKIP LOCKED on PostgreSQL) and expanded batch by batch (messaging/fanout.py), each batch one
transaction that also moves the resume point and renews the lease; a restart resumes after the
last committed batch. A cancel wins: the next batch sees the request changed and stops.

Hand-off (sandbox until the delivery engine, issue 6): CREATED messages of TRANSMITTING requests
(and SCHEDULED ones whose time came) are claimed with a lease, EXPIRED when past expiry_time,
phone numbers submitted to the SMS provider (SENT, or FAILED when it refuses them), email
addresses SENT and DELIVERED by the sandbox at once; receipts make SENT messages DELIVERED or
FAILED. Each change is a `message.*` event and recounts its request's counters in the same
transaction. Paused requests whose pause_expiry_time passed expire their PAUSED messages and
complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.messaging.content_common import Row
from switchboard.server.messaging.fanout import Fanout, FanoutLost, FanoutRejected, Plan
from switchboard.server.messaging.message_requests import (
    MessageRequestService,
    RequestState,
    request_event,
    requests_table,
)
from switchboard.server.messaging.messages import (
    FailureCode,
    MessageService,
    MessageState,
    messages_table,
)
from switchboard.server.providers.base import OutboundSms, Receipt, SmsProvider
from switchboard.server.sms.phone import InvalidNumber, classify

log = logging.getLogger("switchboard.messaging.fanout")
_r = requests_table.c
_m = messages_table.c


class MessageRequestWorker:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        fanout: Fanout,
        requests: MessageRequestService,
        messages: MessageService,
        provider: SmsProvider,
        poll_seconds: float = 0.5,
        lease_seconds: float = 30.0,
        dispatch_batch: int = 200,
    ) -> None:
        self._db = db
        self._clock = clock
        self._fanout = fanout
        self._requests = requests
        self._messages = messages
        self._provider = provider
        self._poll = poll_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._dispatch_batch = dispatch_batch
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        requests.on_created(self.wake)

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        self._stopping = False
        await self._provider.start(self._record_receipts)
        await self._resume_sent()
        self._task = asyncio.create_task(self._run(), name="message-requests")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._provider.stop()

    async def _resume_sent(self) -> None:
        """After a restart: tell the provider which SENT messages still await a receipt."""
        after = ""
        while True:
            query = (
                select(_m.id, _m.org_id, _m.to_address, _m.body)
                .where(_m.state == MessageState.SENT.value, _m.id > after)
                .order_by(_m.id)
                .limit(1000)
            )
            async with self._db.read() as session:
                rows = list((await session.execute(query)).mappings())
            pending = []
            for row in rows:
                with contextlib.suppress(InvalidNumber):
                    number = classify(row["to_address"])
                    pending.append(
                        OutboundSms(row["id"], row["org_id"], "sms", number, row["body"])
                    )
            if pending:
                self._provider.resume(pending)
            if len(rows) < 1000:
                return
            after = rows[-1]["id"]

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("message request worker failed; retrying")
                worked = False
            if worked or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll)

    async def run_once(self) -> bool:
        """One round: a fan-out, a dispatch batch, paused expiries. False when idle."""
        fanned = await self.fan_out_one()
        sent = await self.dispatch_once()
        expired = await self.expire_paused()
        return fanned or sent or expired

    # -- fan-out ---------------------------------------------------------------------------------

    async def fan_out_one(self) -> bool:
        request = await self._db.run_write(self._claim)
        if request is None:
            return False
        try:
            plan = await self._fanout.plan(request)
        except FanoutRejected as exc:
            await self._reject(request, str(exc))
            return True
        try:
            await self._expand(plan)
        except FanoutLost:
            log.info("message request changed during fan-out", extra={"id": request["id"]})
        return True

    def _claim(self, session: Session) -> Row | None:
        now = self._clock.now()
        due = (
            select(_r.id)
            .where(
                or_(
                    _r.state == RequestState.ACCEPTED.value,
                    and_(
                        _r.state == RequestState.PREPARING.value,
                        or_(_r.lease_until.is_(None), _r.lease_until <= now),
                    ),
                )
            )
            .order_by(_r.id)
            .limit(1)
        )
        if session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        request_id = session.execute(due).scalar()
        if request_id is None:
            return None
        current = self._requests.current(session, request_id)
        if current["state"] == RequestState.ACCEPTED.value:
            return self._requests.transition(
                session,
                current,
                RequestState.PREPARING,
                now,
                "preparing",
                lease_until=now + self._lease,
            )
        statement = (
            update(requests_table)
            .where(_r.id == request_id)
            .values(lease_until=now + self._lease, version=_r.version + 1)
            .returning(*requests_table.c)
        )
        return session.execute(statement).mappings().one()

    async def _expand(self, plan: Plan) -> None:
        done = False
        while not done:
            if self._stopping:
                await self._hand_back(plan.request)
                return
            recipients, stage, after, done = await self._fanout.read_batch(plan)
            decisions = await self._fanout.decisions(plan, recipients)
            now = self._clock.now()
            rows = self._fanout.message_rows(plan, recipients, decisions, now)
            work = functools.partial(
                self._write_batch,
                plan=plan,
                rows=rows,
                stage=stage,
                after=after,
                final=done,
                now=now,
            )
            plan.request = await self._db.run_write(work)

    def _write_batch(
        self,
        session: Session,
        *,
        plan: Plan,
        rows: list[dict[str, Any]],
        stage: int,
        after: str,
        final: bool,
        now: datetime,
    ) -> Row:
        row = self._fanout.write_batch(
            session, plan.request, rows, stage, after, now, now + self._lease
        )
        if final:
            row = self._fanout.finish(session, row, now)
        return row

    async def _hand_back(self, request: Row) -> None:
        def work(session: Session) -> None:
            session.execute(
                update(requests_table)
                .where(_r.id == request["id"], _r.version == request["version"])
                .values(lease_until=None)
            )

        await self._db.run_write(work)

    async def _reject(self, request: Row, reason: str) -> None:
        log.info("message request rejected: %s", reason, extra={"id": request["id"]})

        def work(session: Session) -> None:
            current = self._requests.current(session, request["id"])
            if current["version"] == request["version"]:
                self._requests.transition(
                    session, current, RequestState.REJECTED, self._clock.now(), "rejected"
                )

        await self._db.run_write(work)

    # -- hand-off to the provider layer ----------------------------------------------------------

    async def dispatch_once(self) -> bool:
        claimed = await self._db.run_write(self._claim_messages)
        if not claimed:
            return False
        now = self._clock.now()
        expired = [m for m in claimed if m["expires_at"] is not None and m["expires_at"] <= now]
        live = [m for m in claimed if m not in expired]
        emails = [m for m in live if "@" in m["to_address"]]
        phones: list[tuple[Row, OutboundSms]] = []
        invalid: list[Row] = []
        for message in live:
            if message in emails:
                continue
            try:
                number = classify(message["to_address"])
            except InvalidNumber:
                invalid.append(message)
                continue
            outbound = OutboundSms(message["id"], message["org_id"], "sms", number, message["body"])
            phones.append((message, outbound))
        results = await self._provider.submit_many([o for _, o in phones]) if phones else []

        def work(session: Session) -> None:
            at = self._clock.now()
            apply = self._messages.apply
            apply(session, expired, {"state": "EXPIRED", "lease_until": None}, at, "expired")
            apply(
                session,
                invalid,
                {
                    "state": MessageState.FAILED.value,
                    "failure_code": FailureCode.INVALID_RECIPIENT.value,
                    "failure_details": "not a phone number",
                    "lease_until": None,
                },
                at,
                "failed",
            )
            accepted = [(m, r) for (m, _), r in zip(phones, results, strict=True) if r.accepted]
            refused = [(m, r) for (m, _), r in zip(phones, results, strict=True) if not r.accepted]
            apply(
                session,
                [m for m, _ in accepted],
                {"state": MessageState.SENT.value, "sent_at": at, "lease_until": None},
                at,
                "sent",
                per_row={
                    m["id"]: {"external_transaction_ids": r.provider_message_id or ""}
                    for m, r in accepted
                },
            )
            apply(
                session,
                [m for m, _ in refused],
                {"state": MessageState.FAILED.value, "lease_until": None},
                at,
                "failed",
                per_row={
                    m["id"]: {
                        "failure_code": FailureCode.INVALID_RECIPIENT.value
                        if r.permanent
                        else FailureCode.OTHER.value,
                        "failure_details": (r.error or "")[:1024],
                    }
                    for m, r in refused
                },
            )
            # the sandbox reaches email addresses at once
            sent = apply(
                session,
                emails,
                {"state": MessageState.SENT.value, "sent_at": at, "lease_until": None},
                at,
                "sent",
            )
            apply(
                session,
                sent,
                {"state": MessageState.DELIVERED.value, "delivered_at": at},
                at,
                "delivered",
            )

        await self._db.run_write(work)
        return True

    def _claim_messages(self, session: Session) -> list[Row]:
        now = self._clock.now()
        query = (
            select(_m.id)
            .join(requests_table, _r.id == _m.message_request_id)
            .where(
                _r.state == RequestState.TRANSMITTING.value,
                or_(
                    _m.state == MessageState.CREATED.value,
                    and_(_m.state == MessageState.SCHEDULED.value, _m.scheduled_at <= now),
                ),
                or_(_m.lease_until.is_(None), _m.lease_until <= now),
            )
            .limit(self._dispatch_batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=messages_table, skip_locked=True)
        ids = list(session.execute(query).scalars())
        if not ids:
            return []
        statement = (
            update(messages_table)
            .where(_m.id.in_(ids))
            .values(lease_until=now + self._lease)
            .returning(*messages_table.c)
        )
        return list(session.execute(statement).mappings())

    async def _record_receipts(self, receipts: Sequence[Receipt]) -> None:
        def work(session: Session) -> None:
            at = self._clock.now()
            ids = [r.message_id for r in receipts]
            rows = {
                r["id"]: r
                for r in session.execute(
                    select(messages_table).where(
                        _m.id.in_(ids), _m.state == MessageState.SENT.value
                    )
                ).mappings()
            }
            delivered = [
                rows[r.message_id] for r in receipts if r.message_id in rows and r.delivered
            ]
            failed = [
                rows[r.message_id] for r in receipts if r.message_id in rows and not r.delivered
            ]
            self._messages.apply(
                session,
                delivered,
                {"state": MessageState.DELIVERED.value, "delivered_at": at},
                at,
                "delivered",
            )
            self._messages.apply(
                session,
                failed,
                {"state": MessageState.FAILED.value, "failure_code": FailureCode.OTHER.value},
                at,
                "failed",
            )

        await self._db.run_write(work)

    # -- paused requests -------------------------------------------------------------------------

    async def expire_paused(self) -> bool:
        now = self._clock.now()
        query = select(_r.id).where(
            _r.state == RequestState.PAUSED.value, _r.pause_expires_at <= now
        )
        async with self._db.read() as session:
            ids = list((await session.execute(query.limit(10))).scalars())
        for request_id in ids:
            await self._db.run_write(
                functools.partial(self._expire, request_id=request_id, now=now)
            )
        return bool(ids)

    def _expire(self, session: Session, *, request_id: str, now: datetime) -> None:
        current = self._requests.current(session, request_id)
        if current["state"] != RequestState.PAUSED.value:
            return
        paused = session.execute(
            select(messages_table).where(
                _m.message_request_id == request_id, _m.state == MessageState.PAUSED.value
            )
        ).mappings()
        row = self._requests.transition(session, current, RequestState.COMPLETED, now, "expired")
        self._messages.apply(
            session, list(paused), {"state": MessageState.EXPIRED.value}, now, "expired"
        )
        del row


__all__ = ["MessageRequestWorker", "request_event"]
