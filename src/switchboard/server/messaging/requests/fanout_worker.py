"""The message request worker: fans requests out into messages and expires paused requests.

Fan-out: a request is claimed with a lease (ACCEPTED, or PREPARING whose worker stopped renewing
it: SKIP LOCKED on PostgreSQL) and expanded batch by batch (messaging/fanout.py), each batch one
transaction that writes the messages with their HELD delivery-queue rows, moves the resume point
and renews the lease; a restart resumes after the last committed batch. A cancel wins: the next
batch sees the request changed and stops. When the last batch is in, the request TRANSMITS and
its queue rows are released to the delivery engine (delivery/engine.py, with the messages'
ledger in messaging/ledger.py), which sends them and records every state change.

Paused requests whose pause_expiry_time passed expire their PAUSED messages (and their queue
rows) and complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from switchboard.server.communications.short_urls import NewShortUrl
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update
from switchboard.server.core.types import Row
from switchboard.server.delivery import queue
from switchboard.server.messaging.requests.fanout import Fanout, FanoutLost, FanoutRejected, Plan
from switchboard.server.messaging.requests.message_requests import (
    MessageRequestService,
    request_event,
    requests_table,
)
from switchboard.server.messaging.requests.messages import (
    MessageService,
    messages_table,
)
from switchboard.server.messaging.requests.models import MessageState, RequestState

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
        poll_seconds: float = 0.5,
        lease_seconds: float = 30.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._fanout = fanout
        self._requests = requests
        self._messages = messages
        self._poll = poll_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        requests.on_created(self.wake)

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="message-requests")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

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
        """One round: a fan-out and paused expiries. False when idle."""
        fanned = await self.fan_out_one()
        expired = await self.expire_paused()
        return fanned or expired

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
        due = for_update(session, due, skip_locked=True)
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
            links = self._fanout.track(plan, rows)
            queued = self._fanout.queue_rows(plan, rows, recipients)
            work = functools.partial(
                self._write_batch,
                plan=plan,
                rows=rows,
                queued=queued,
                links=links,
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
        queued: list[dict[str, Any]],
        links: list[NewShortUrl],
        stage: int,
        after: str,
        final: bool,
        now: datetime,
    ) -> Row:
        row = self._fanout.write_batch(
            session, plan.request, rows, stage, after, now, now + self._lease, queued, links
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
        queue.discard(session, self._requests.message_ids(request_id, [MessageState.EXPIRED.value]))
        del row


__all__ = ["MessageRequestWorker", "request_event"]
