"""The delivery engine: one dispatcher for the messages of every API.

Each round claims a batch of due queue rows with a lease (SKIP LOCKED on PostgreSQL), most urgent
first, in the same transaction as their ledgers load what to send. Then, per row and in this
order, without touching the database:

1. the message left the sendable states (canceled, paused, deleted) → it leaves the queue;
2. past its `expires_at` → EXPIRED;
3. outside its delivery window (recipient's local time, holidays) → SCHEDULED for the next
   opening (EXPIRED if that is past its expiry; FAILED if the window never opens);
4. over its sender class's throughput → waits as long as the buckets say (not an attempt);
5. its route's provider is down → the first healthy fallback route, else waits (not an attempt);
6. otherwise it is submitted, all of a provider's share in one `submit_many`.

Every outcome is recorded in one transaction: the ledger of each API moves its own message and
appends its events, the queue row is updated or removed, and the daily counts grow. A crash
anywhere loses nothing: unrecorded work is handed back when the lease runs out, so a message is
submitted again at most once per lease of lost work (the SMSC may see that as a duplicate).
Transient provider failures retry with exponential backoff up to `max_attempts`; permanent ones
fail at once. Receipts (from any provider) find their row by message id while it is SENT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, wait_for
from switchboard.server.core.types import Row, T
from switchboard.server.core.writer import Writer
from switchboard.server.delivery import queue
from switchboard.server.delivery.models import QueueState
from switchboard.server.delivery.outbox import Outbox, OutboxEntry
from switchboard.server.delivery.policies import Policies
from switchboard.server.delivery.throughput import Throughput
from switchboard.server.delivery.windows import next_opening
from switchboard.server.providers.base import (
    ChannelProvider,
    InboundSink,
    Outbound,
    Receipt,
    SubmitResult,
)

log = logging.getLogger("switchboard.delivery")

_MAX_BACKOFF = timedelta(seconds=300)
_POLICY_RETRY = timedelta(seconds=0.2)
_MAX_EARLY = 100_000  # early receipts held at once (each is a few hundred bytes)


@dataclass(frozen=True)
class Prepared:
    """What a ledger says about a claimed row: send `outbound`, fail with `failure`, or (both
    empty) drop it because the message is no longer meant to go."""

    outbound: Outbound | None = None
    failure: str = ""
    shown: str | None = None  # what the dev outbox shows instead of the content (masked)


DROP = Prepared()


class FailureKind(StrEnum):
    REFUSED = "REFUSED"  # the provider refused the message (permanent)
    GAVE_UP = "GAVE_UP"  # transient failures until max_attempts
    NO_ROUTE = "NO_ROUTE"  # no provider serves its route
    NEVER_OPENS = "NEVER_OPENS"  # its delivery window never opens
    UNREADABLE = "UNREADABLE"  # its content cannot be prepared


@dataclass(frozen=True)
class Failure:
    row: Row
    kind: FailureKind
    error: str


class Ledger(Protocol):
    """One API's side of delivery: its messages' content and state changes (with events and
    counters), each in the engine's transaction."""

    kind: str

    def prepare(self, session: Session, rows: Sequence[Row]) -> dict[str, Prepared]:
        """For each claimed row id: what to send (rows missing from the answer are dropped)."""
        ...

    def scheduled(self, session: Session, rows: Sequence[Row], now: datetime) -> None:
        """Rows deferred to a window's opening (`due_at` is the new time)."""
        ...

    def sent(
        self, session: Session, results: Sequence[tuple[Row, SubmitResult]], now: datetime
    ) -> None: ...

    def failed(self, session: Session, failures: Sequence[Failure], now: datetime) -> None: ...

    def expired(self, session: Session, rows: Sequence[Row], now: datetime) -> None: ...

    def receipted(
        self, session: Session, receipts: Sequence[tuple[Row, Receipt]], now: datetime
    ) -> None:
        """Delivery receipts (delivered or failed) for SENT rows."""
        ...


@dataclass
class _Round:
    """One claimed batch's decisions, recorded together."""

    drop: list[Row] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    expired: list[Row] = field(default_factory=list)
    scheduled: list[Row] = field(default_factory=list)  # due_at = the window's opening
    deferred: list[Row] = field(default_factory=list)  # due_at = when to look again
    ready: dict[str, list[tuple[Row, Outbound]]] = field(default_factory=dict)  # by route
    shown: dict[str, str] = field(default_factory=dict)  # dev outbox text, by row id
    results: list[tuple[Row, SubmitResult]] = field(default_factory=list)


class DeliveryEngine:
    def __init__(
        self,
        *,
        db: Database,
        writer: Writer,
        bus: EventBus,
        clock: Clock,
        policies: Policies,
        routes: Mapping[str, ChannelProvider],
        ledgers: Sequence[Ledger],
        poll_seconds: float,
        inbound: InboundSink | None = None,
        batch_size: int = 200,
        lease: timedelta = timedelta(seconds=30),
        max_attempts: int = 5,
        retry_base_seconds: float = 2.0,
        outage_retry_seconds: float = 5.0,
        min_claim_interval: float = 0.01,
    ) -> None:
        self._db = db
        self._bus = bus
        self._clock = clock
        self._policies = policies
        self.routes = dict(routes)
        self._ledgers = {ledger.kind: ledger for ledger in ledgers}
        self._poll_seconds = poll_seconds
        self._inbound = inbound
        self._batch_size = batch_size
        self._lease = lease
        self._max_attempts = max_attempts
        self._retry_base_seconds = retry_base_seconds
        self._outage_retry = timedelta(seconds=outage_retry_seconds)
        self._min_claim_interval = min_claim_interval
        self.throughput = Throughput()
        self.outbox = Outbox()
        # Writes share the process writer's transactions (and group commits) with accepts.
        self._claims = writer.channel("delivery-claim", self._claim)
        self._outcomes = writer.channel("delivery-outcomes", self._record)
        self._receipts = writer.channel("delivery-receipts", self._apply_receipts)
        self._early: dict[str, Receipt] = {}  # receipts that overtook their submit's outcome
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _providers(self) -> list[ChannelProvider]:
        unique: dict[int, ChannelProvider] = {}
        for provider in self.routes.values():
            unique.setdefault(id(provider), provider)
        return list(unique.values())

    async def start(self) -> None:
        for provider in self._providers():
            await provider.start(self._on_receipts, self._inbound)
        await self._resume_sent()
        day = self._clock.now().date().isoformat()
        self.throughput.load_daily(day, await queue.daily_counts(self._db, day))
        await self._policies.refresh(force=True)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="delivery-engine")

    async def stop(self) -> None:
        """Finish the batch in hand (a cancelled transaction could leave SQLite locked), then
        stop the providers."""
        if self._task is not None:
            self._stopping = True
            self._bus.notify()
            await self._task
            self._task = None
        for provider in self._providers():
            await provider.stop()

    async def _resume_sent(self) -> None:
        """Rows SENT before a restart still await receipts: re-arm their providers."""
        for route, provider in self.routes.items():
            after = ""
            while rows := await queue.awaiting_receipts(self._db, route, after, 1000):
                provider.resume([_pending(row) for row in rows])
                after = rows[-1]["id"]

    async def _run(self) -> None:
        while not self._stopping:
            waiter = self._bus.waiter()
            try:
                handled = await self.dispatch_once()
            except Exception:
                log.exception("delivery round failed; retrying")
                handled = 0
            if handled < self._batch_size and not self._stopping:
                await wait_for(waiter, self._poll_seconds)
                # Under load every accept wakes us: pausing briefly lets a batch build up, so a
                # message costs a share of one claim and one update instead of its own.
                await asyncio.sleep(self._min_claim_interval)

    async def dispatch_once(self) -> int:
        """Claim a batch, decide, submit, record. Returns how many rows were claimed."""
        claimed: list[tuple[Row, Prepared]] = await self._claims.submit(self._batch_size)
        if not claimed:
            return 0
        await self._policies.refresh()
        now = self._clock.now()
        work = _Round()
        for row, prepared in claimed:
            try:
                self._decide(row, prepared, now, work)
            except Exception:  # one bad row must not hold up the batch
                log.exception("delivery decision failed", extra={"id": row["id"]})
                work.deferred.append({**row, "due_at": now + self._outage_retry})
        work.results = await self._submit(work.ready)
        self._to_outbox(work)
        await self._outcomes.submit(work)
        return len(claimed)

    # -- deciding --------------------------------------------------------------------------------

    def _decide(self, row: Row, prepared: Prepared, now: datetime, work: _Round) -> None:
        if prepared.outbound is None:
            if prepared.failure:
                work.failures.append(Failure(row, FailureKind.UNREADABLE, prepared.failure))
            else:
                work.drop.append(row)
            return
        expires = row["expires_at"]
        if expires is not None and expires <= now:
            work.expired.append(row)
            return
        if not self._policies.known(row):  # reference data not loaded yet: look again soon
            work.deferred.append({**row, "due_at": now + _POLICY_RETRY})
            return
        window = self._policies.window(row["window"])
        if window is not None:
            zones = [ZoneInfo(z) for z in row["zones"].split(",") if z]
            opening = next_opening(window, now, country=row["country"], zones=zones)
            if opening is None:
                failure = Failure(row, FailureKind.NEVER_OPENS, "the delivery window never opens")
                work.failures.append(failure)
                return
            if opening > now:
                if expires is not None and opening >= expires:
                    work.expired.append(row)
                else:
                    work.scheduled.append({**row, "due_at": opening})
                return
        limits = self._policies.limits(row["class_id"])
        wait = self.throughput.reserve(
            limits,
            org_id=row["org_id"],
            class_id=row["class_id"],
            sender=row["sender"],
            country=row["country"],
            now=now,
        )
        if wait > 0:
            work.deferred.append({**row, "due_at": now + timedelta(seconds=wait)})
            return
        # The route, then the fallbacks (`route` or `route|sender address`, in order).
        chain = [(row["route"], "")]
        chain += [_fallback(entry) for entry in row["fallback_routes"].split(",") if entry]
        known = [(route, sender) for route, sender in chain if route in self.routes]
        if not known:
            failure = Failure(row, FailureKind.NO_ROUTE, f"no provider serves {row['route']!r}")
            work.failures.append(failure)
            return
        healthy = next(((r, s) for r, s in known if self.routes[r].healthy()), None)
        if healthy is None:
            work.deferred.append({**row, "due_at": now + self._outage_retry})
            return
        route, sender = healthy
        outbound = prepared.outbound
        if sender:  # another sender of the channel: it sends from its own address
            outbound = replace(outbound, sender=sender)
        taken = {**row, "route": route, "sender": outbound.sender}  # what the ledger records
        work.ready.setdefault(route, []).append((taken, outbound))
        if prepared.shown is not None:
            work.shown[row["id"]] = prepared.shown

    async def _submit(
        self, ready: Mapping[str, list[tuple[Row, Outbound]]]
    ) -> list[tuple[Row, SubmitResult]]:
        async def one(route: str, items: list[tuple[Row, Outbound]]) -> list[SubmitResult]:
            provider = self.routes[route]
            try:
                return await provider.submit_many([outbound for _, outbound in items])
            except Exception as exc:
                log.exception("provider submit crashed", extra={"provider": provider.name})
                error = f"provider error: {type(exc).__name__}"
                return [SubmitResult(error=error, permanent=False)] * len(items)

        routes = list(ready)
        answers = await asyncio.gather(*(one(route, ready[route]) for route in routes))
        results: list[tuple[Row, SubmitResult]] = []
        for route, answer in zip(routes, answers, strict=True):
            results.extend(
                (row, result) for (row, _), result in zip(ready[route], answer, strict=True)
            )
        return results

    def _to_outbox(self, work: _Round) -> None:
        """Sandbox routes' accepted messages, for the dev outbox."""
        sandboxes = {r for r in work.ready if getattr(self.routes[r], "sandbox", False)}
        if not sandboxes:
            return
        outbound = {row["id"]: message for r in sandboxes for row, message in work.ready[r]}
        now = self._clock.now()
        for row, result in work.results:
            message = outbound.get(row["id"])
            if message is None or not result.accepted:
                continue
            self.outbox.add(
                OutboxEntry(
                    org_id=row["org_id"],
                    message_id=row["id"],
                    kind=row["kind"],
                    channel=row["channel"],
                    route=row["route"],
                    to=message.to,
                    sender=message.sender,
                    subject=message.subject,
                    content=work.shown.get(row["id"], message.content),
                    handed_at=now,
                )
            )

    # -- recording -------------------------------------------------------------------------------

    def _claim(self, session: Session, limits: Sequence[int]) -> list[list[tuple[Row, Prepared]]]:
        now = self._clock.now()
        batches = []
        for limit in limits:
            rows = queue.claim(session, now=now, lease_until=now + self._lease, limit=limit)
            prepared: dict[str, Prepared] = {}
            for kind, mine in _by_kind(rows).items():
                ledger = self._ledgers.get(kind)
                if ledger is not None:
                    prepared.update(ledger.prepare(session, mine))
            batches.append([(row, prepared.get(row["id"], DROP)) for row in rows])
        return batches

    def _record(self, session: Session, rounds: Sequence[_Round]) -> list[None]:
        now = self._clock.now()
        for work in rounds:
            self._record_round(session, work, now)
        day, used = self.throughput.drain_used()
        queue.add_daily(session, day, used)
        return [None] * len(rounds)

    def _record_round(self, session: Session, work: _Round, now: datetime) -> None:
        failures = list(work.failures)
        sent: list[tuple[Row, SubmitResult]] = []
        changes: list[dict[str, Any]] = []
        for row, result in work.results:
            if result.accepted:
                sent.append((row, result))
                changes.append(
                    {
                        "id": row["id"],
                        "state": QueueState.SENT.value,
                        "provider_message_id": (result.provider_message_id or "")[:1024],
                        "route": row["route"],
                        "lease_until": None,
                    }
                )
            elif result.permanent:
                failures.append(Failure(row, FailureKind.REFUSED, result.error or "refused"))
            elif row["attempts"] >= self._max_attempts:
                failures.append(Failure(row, FailureKind.GAVE_UP, result.error or "unavailable"))
            else:
                # Transient: back in the queue after an exponential backoff.
                delay = timedelta(seconds=self._retry_base_seconds * 2 ** (row["attempts"] - 1))
                changes.append(
                    {"id": row["id"], "due_at": now + min(delay, _MAX_BACKOFF), "lease_until": None}
                )
        for row in (*work.scheduled, *work.deferred):
            # Waiting for a window, a token or a provider is not an attempt.
            changes.append(
                {
                    "id": row["id"],
                    "due_at": row["due_at"],
                    "lease_until": None,
                    "attempts": max(0, row["attempts"] - 1),
                }
            )
        queue.update_rows(session, changes)
        finished = [r["id"] for r in (*work.drop, *work.expired)] + [f.row["id"] for f in failures]
        queue.remove(session, finished)
        for kind, rows in _by_kind(work.scheduled).items():
            self._ledger(kind).scheduled(session, rows, now)
        for kind, rows in _by_kind(work.expired).items():
            self._ledger(kind).expired(session, rows, now)
        for kind, items in _group(failures, lambda f: f.row["kind"]).items():
            self._ledger(kind).failed(session, items, now)
        for kind, pairs in _group(sent, lambda pair: pair[0]["kind"]).items():
            self._ledger(kind).sent(session, pairs, now)
        early = [(row, self._early.pop(row["id"])) for row, _ in sent if row["id"] in self._early]
        self._finish(session, early, now)

    def _ledger(self, kind: str) -> Ledger:
        return self._ledgers[kind]

    async def _on_receipts(self, receipts: Sequence[Receipt]) -> None:
        await self._receipts.submit(list(receipts))

    def _apply_receipts(self, session: Session, batches: Sequence[Sequence[Receipt]]) -> list[None]:
        """SENT rows take receipts; duplicates and receipts of finished messages change nothing.
        A receipt can overtake the submit's own outcome (the provider answered and reported
        before that outcome was recorded): it waits in memory for the row to become SENT."""
        receipts = [receipt for batch in batches for receipt in batch]
        rows = {r["id"]: r for r in queue.rows_by_id(session, [r.message_id for r in receipts])}
        matched: list[tuple[Row, Receipt]] = []
        for receipt in receipts:
            row = rows.pop(receipt.message_id, None)  # popped: a repeat is ignored
            if row is None:
                continue
            if row["state"] == QueueState.SENT.value:
                matched.append((row, receipt))
            elif len(self._early) < _MAX_EARLY:
                self._early[receipt.message_id] = receipt
        self._finish(session, matched, self._clock.now())
        return [None] * len(batches)

    def _finish(
        self, session: Session, matched: Sequence[tuple[Row, Receipt]], now: datetime
    ) -> None:
        queue.remove(session, [row["id"] for row, _ in matched])
        for kind, pairs in _group(matched, lambda pair: pair[0]["kind"]).items():
            self._ledger(kind).receipted(session, pairs, now)


def _fallback(entry: str) -> tuple[str, str]:
    route, _, sender = entry.partition("|")
    return route, sender


def _by_kind(rows: Sequence[Row]) -> dict[str, list[Row]]:
    return _group(rows, lambda row: row["kind"])


def _group(items: Sequence[T], key: Any) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _pending(row: Row) -> Outbound:
    """A SENT row as its provider needs it after a restart: ids and address, no content."""
    return Outbound(
        delivery_id=row["id"],
        org_id=row["org_id"],
        channel=row["channel"],
        to=row["destination"],
        to_type="",
        sender=row["sender"],
        subject="",
        content="",
        provider_message_id=row["provider_message_id"],
    )


__all__ = [
    "DROP",
    "DeliveryEngine",
    "Failure",
    "FailureKind",
    "Ledger",
    "Prepared",
]
