"""The webhook dispatcher: a background worker that turns the event log into signed HTTP POSTs.

Three loops, all driven by the database so several server processes (on PostgreSQL) share the
work and a restart loses nothing:

- **match**: under a lock on the deployment's cursor row, read the next batch of events after
  the cursor, match them to the ACTIVE handlers of their orgs (type patterns, channel and
  application scopes) and insert one delivery per (handler, event) (unique), then advance the
  cursor — all in one transaction. The new deliveries this process has room for are inserted
  already leased, and their attempts start when the transaction commits.
- **send**: record finished attempts in batches and, when due work may be waiting unclaimed
  (the poll, for retries; what a match or replay left), claim it with a lease (FOR UPDATE SKIP
  LOCKED on PostgreSQL): at most `claimed_per_handler` per handler and `max_claimed` in all
  are held by this process (a handler at its cap is not claimed for). Attempts run at most
  `per_handler` at a time per handler and `max_in_flight` in all (semaphores, the handler's
  taken first), so a slow receiver holds only its own slots and its own claimed rows. Each
  attempt dials an address of the URL's host that was resolved and checked (urls.py) at most
  RESOLVE_TTL ago, never follows redirects, and is cut at `attempt_timeout`.
- **replay**: RUNNING replay jobs are leased and walked in batches, re-queuing the range's
  deliveries (the same delivery row, so the same webhook-id).

Never in the message delivery path: message sends only append events; this worker reads them.
Ordering: at least once; no order across events; per handler, due attempts are claimed in
(due time, cursor) order, which keeps cursor order only while nothing is retried and the
handler keeps up (a fresh event claimed at match time can pass older unclaimed ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import certifi
from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.events import EventBus, EventLog, NewEvent, wait_for
from switchboard.server.core.ids import new_id
from switchboard.server.core.models import EventRecord
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.event_handlers import patterns, signing
from switchboard.server.event_handlers.models import DispatchCursorRecord
from switchboard.server.event_handlers.service import (
    DeliveryState,
    HandlerState,
    ReplayState,
    attempts_table,
    deliveries_table,
    handlers_table,
    replays_table,
    snapshot,
)
from switchboard.server.event_handlers.signing import SecretBox
from switchboard.server.event_handlers.urls import RefusedUrl, Target, resolve

log = logging.getLogger("switchboard.event_handlers")

cursor_table = table_of(DispatchCursorRecord)
events_table = table_of(EventRecord)
_c = cursor_table.c
_e = events_table.c
_h = handlers_table.c
_d = deliveries_table.c
_r = replays_table.c

CURSOR_NAME = "webhooks"
EXCERPT_BYTES = 1024
USER_AGENT = "Switchboard-Webhooks/1"
MAX_CLIENTS = 256  # idle per-handler connection pools kept
# A URL's resolved and checked address is reused this long (seconds): a lookup per attempt
# went through the default thread pool. A refusal is never cached.
RESOLVE_TTL = 30.0


@dataclass(frozen=True)
class DispatchSettings:
    allow_private_urls: bool = False
    attempt_timeout: float = 15.0
    # Delay before each attempt: the first is immediate (Svix's schedule).
    schedule: Sequence[float] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    jitter: float = 0.1
    disable_after: float = 5 * 86400.0
    max_in_flight: int = 256
    per_handler: int = 16
    # Deliveries one process holds claimed (leased), per handler and in all: bounded memory,
    # and enough work queued per handler that claiming is not one transaction per attempt
    # (at 64 a busy handler drained its claim in a few ms and then waited for the next round).
    # 0: 16 attempts' worth per slot, so the lease below stays 17 attempt timeouts long.
    per_handler_claimed: int = 0
    max_claimed: int = 2048
    match_batch: int = 500
    replay_batch: int = 500
    poll_seconds: float = 1.0
    lease_margin: float = 30.0
    # After a wake-up, wait this long so that one transaction matches (or records) what a burst
    # of commits (or finished attempts) brought, instead of one transaction each.
    coalesce_seconds: float = 0.02

    @property
    def claimed_per_handler(self) -> int:
        return self.per_handler_claimed or 16 * self.per_handler


@dataclass
class _Outcome:
    delivery: Row
    handler_id: str
    org_id: str
    at: datetime
    status: int
    latency_ms: int
    excerpt: str
    error: str

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class _Matched:
    """What one match transaction did: whether the batch was full, the deliveries it claimed
    (with the events and handlers to attempt them) and how many it left for the sender."""

    full: bool
    claimed: list[Row] = field(default_factory=list)
    unclaimed: int = 0
    events: dict[int, Row] = field(default_factory=dict)
    handlers: dict[str, Row] = field(default_factory=dict)


@dataclass
class _Claimed:
    """What this process holds claimed: counts, and each handler's attempt semaphore."""

    total: int = 0
    per_handler: dict[str, int] = field(default_factory=dict)
    gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)


def envelope(event: Row) -> bytes:
    """The JSON body of a webhook: the event as streams show it (payloads are masked already)."""
    cursor = str(event["seq"])
    return json.dumps(
        {
            "type": event["type"],
            "id": cursor,
            "cursor": cursor,
            "time": iso(event["occurred_at"]),
            "org": event["org_id"],
            "resource_id": event["resource_id"],
            "data": event["payload"],
        },
        separators=(",", ":"),
    ).encode()


class WebhookDispatcher:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        bus: EventBus,
        clock: Clock,
        box: SecretBox,
        settings: DispatchSettings,
        channel_scope: patterns.ChannelScope | None = None,
    ) -> None:
        self._db = db
        self._channel_scope = channel_scope
        self._events = events
        self._bus = bus
        self._clock = clock
        self._box = box
        self.settings = settings
        # One small client (connection pool of `per_handler` connections) per handler, so no
        # connection (and its TLS name) is shared between handlers. aiohttp, not httpx: its
        # per-request CPU is about a fifth of httpx's, which was most of the event loop's time
        # under load. Least recently used first; bounded.
        self._clients: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        self._tls: ssl.SSLContext | None = None  # one, shared: loading CAs takes ~20 ms
        self._tasks: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Task[None]] = set()
        self._outcomes: list[_Outcome] = []
        self._wake_sender = asyncio.Event()
        self._claimed = _Claimed()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._secrets: dict[str, str] = {}  # sealed -> opened (never logged)
        self._targets: dict[str, tuple[Target, datetime]] = {}  # url -> (checked, until)
        # Due deliveries may be waiting unclaimed (left by a match or a replay, or a claim cut
        # short): the sender claims on every round while so, else only on the poll.
        self._backlog = True
        self._last_claim = datetime.min.replace(tzinfo=UTC)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._tls = await asyncio.to_thread(ssl.create_default_context, cafile=certifi.where())
        await self._db.run_write(self._ensure_cursor)
        self._tasks = [
            asyncio.create_task(self._loop(self._match_once), name="webhooks-match"),
            asyncio.create_task(self._send_loop(), name="webhooks-send"),
            asyncio.create_task(self._loop(self._replay_once), name="webhooks-replay"),
        ]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._attempts]:
            task.cancel()
        for task in [*self._tasks, *self._attempts]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._attempts.clear()
        if self._outcomes:  # attempts that finished: keep their results
            with contextlib.suppress(Exception):
                await self._db.run_write(lambda s: self._apply(s, self._take_outcomes()))
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.close()

    async def _loop(self, once: Any) -> None:
        while True:
            waiter = self._bus.waiter()
            try:
                busy = await once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook dispatcher step failed")
                busy = False
            if not busy and await wait_for(waiter, self.settings.poll_seconds):
                await asyncio.sleep(self.settings.coalesce_seconds)

    # -- matching --------------------------------------------------------------------------

    def _ensure_cursor(self, session: Session) -> None:
        found = session.execute(select(_c.seq).where(_c.name == CURSOR_NAME)).first()
        if found is not None:
            return
        last = session.execute(select(_e.seq).order_by(_e.seq.desc()).limit(1)).scalar() or 0
        module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(
            module.insert(cursor_table)
            .values(name=CURSOR_NAME, seq=last, updated_at=self._clock.now())
            .on_conflict_do_nothing()
        )

    async def _match_once(self) -> bool:
        """One batch; True when the log had a full batch (more may be waiting)."""
        # What this process may still claim, reserved before the transaction: the claims it
        # makes there are counted in full, never beyond the caps.
        room = self.settings.max_claimed - self._claimed.total
        counts = dict(self._claimed.per_handler)
        matched = await self._db.run_write(lambda session: self._match(session, room, counts))
        if matched.claimed:
            self._start(matched.claimed, matched.handlers, matched.events)
        if matched.unclaimed:
            self._backlog = True
            self._wake_sender.set()
        return matched.full

    def _scopes(self, session: Session) -> Callable[[Row], patterns.ChannelPredicate | None]:
        """Each handler's channel predicate, read once per (org, channel) in this transaction."""
        known: dict[tuple[str, str], patterns.ChannelPredicate] = {}

        def of(handler: Row) -> patterns.ChannelPredicate | None:
            channel_id = handler["channel_id"]
            if not channel_id:
                return None
            key = (handler["org_id"], channel_id)
            if key not in known:
                known[key] = (
                    self._channel_scope(session, *key)
                    if self._channel_scope is not None
                    else patterns.own_events_only(channel_id)
                )
            return known[key]

        return of

    def _match(self, session: Session, room: int, counts: dict[str, int]) -> _Matched:
        """Match the next batch and claim (lease) at once the new deliveries this process has
        room for, so a fresh event's first attempt starts when this transaction commits,
        without a claim transaction and a read of its own; the rest wait for the sender."""
        s = self.settings
        query = for_update(session, select(_c.seq).where(_c.name == CURSOR_NAME))
        cursor = int(session.execute(query).scalar() or 0)
        # The batch without payloads first: most events match no handler's types, and their
        # payloads (JSON) need not be read and decoded.
        heads = session.execute(
            select(_e.seq, _e.org_id, _e.type)
            .where(_e.seq > cursor)
            .order_by(_e.seq)
            .limit(s.match_batch)
        ).all()
        full = len(heads) == s.match_batch
        if not heads:
            return _Matched(full=False)
        last = heads[-1].seq
        by_org: dict[str, list[dict[str, Any]]] = {}
        for r in session.execute(
            select(handlers_table).where(
                _h.org_id.in_({h.org_id for h in heads}), _h.state == HandlerState.ACTIVE.value
            )
        ).mappings():
            handler = dict(r) | {"_types": patterns.split(r["event_types"])}
            by_org.setdefault(r["org_id"], []).append(handler)
        wanted = [
            h.seq
            for h in heads
            if any(patterns.type_matches(x["_types"], h.type) for x in by_org.get(h.org_id, ()))
        ]
        events = (
            [
                dict(r)
                for r in session.execute(
                    select(events_table).where(_e.seq.in_(wanted)).order_by(_e.seq)
                ).mappings()
            ]
            if wanted
            else []
        )
        handlers = [h for group in by_org.values() for h in group]
        scopes = self._scopes(session)
        now = self._clock.now()
        lease = self._lease_until(now)
        rows = []
        leased: dict[str, dict[str, Any]] = {}
        for event in events:
            for handler in by_org.get(event["org_id"], ()):
                # A handler hears of what happens after it exists (a replay reaches further).
                if event["occurred_at"] >= handler["created_at"] and _matches(
                    handler, event, scopes(handler)
                ):
                    row = _new_delivery(handler, event, now)
                    hid = handler["id"]
                    if len(leased) < room and counts.get(hid, 0) < s.claimed_per_handler:
                        counts[hid] = counts.get(hid, 0) + 1
                        row["lease_until"] = lease
                        leased[row["id"]] = row
                    rows.append(row)
        claimed: list[Row] = []
        if rows:
            inserted = _insert_deliveries(session, rows)
            # A replay may have queued a delivery of the same (handler, event) first: that row
            # was not inserted, and the sender claims the replay's like any other.
            claimed = [row for key, row in leased.items() if key in inserted]
        session.execute(
            update(cursor_table).where(_c.name == CURSOR_NAME).values(seq=last, updated_at=now)
        )
        return _Matched(
            full=full,
            claimed=claimed,
            unclaimed=len(rows) - len(claimed),
            events={e["seq"]: e for e in events},
            handlers={h["id"]: h for h in handlers},
        )

    # -- sending --------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        """Flush finished attempts and claim due work, then wait for a reason to do it again:
        an attempt finished, deliveries were matched or replayed, or the poll (retries fall
        due). One transaction per round, however many attempts finished meanwhile."""
        polled = True
        while True:
            waiter = self._wake_sender
            try:
                more = await self._flush_and_claim(polled)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook claim failed")
                more = False
                self._backlog = True
            polled = more
            if not more:
                done = asyncio.ensure_future(waiter.wait())
                try:
                    finished, _ = await asyncio.wait({done}, timeout=self.settings.poll_seconds)
                finally:
                    done.cancel()
                polled = not finished
            if self._wake_sender is waiter:
                self._wake_sender = asyncio.Event()
            await asyncio.sleep(self.settings.coalesce_seconds)

    def _take_outcomes(self) -> list[_Outcome]:
        taken, self._outcomes = self._outcomes, []
        return taken

    def _lease_until(self, now: datetime) -> datetime:
        s = self.settings
        # Long enough for a handler's whole claimed queue to drain at its concurrency.
        waves = s.claimed_per_handler / s.per_handler + 1
        return now + timedelta(seconds=s.attempt_timeout * waves + s.lease_margin)

    async def _flush_and_claim(self, polled: bool) -> bool:
        """Record finished attempts and, when due work may be waiting unclaimed (the poll came,
        the match or a replay left some, or the last claim was cut short), claim it."""
        s = self.settings
        outcomes = self._take_outcomes()
        room = s.max_claimed - self._claimed.total
        now = self._clock.now()
        # Retries fall due without a wake-up: claim at least every poll interval, also while
        # finished attempts keep waking this loop sooner than that.
        since = now - self._last_claim
        due = polled or not timedelta(0) <= since < timedelta(seconds=s.poll_seconds)
        claim = room > 0 and (due or self._backlog)
        if not outcomes and not claim:
            return False
        busy = [h for h, n in self._claimed.per_handler.items() if n >= s.claimed_per_handler]
        lease = self._lease_until(now)
        if claim:
            self._backlog = False  # set again by a match or replay meanwhile
            self._last_claim = now

        def work(session: Session) -> tuple[list[Row], bool]:
            self._apply(session, outcomes)
            if not claim:
                return [], True
            return self._claim(session, now, lease, room, busy)

        claimed, exhausted = await self._db.run_write(work)
        if not exhausted:
            self._backlog = True
        if claimed:
            await self._start_attempts(claimed)
        return len(claimed) >= room > 0  # the claim was cut short: more is due

    def _claim(
        self, session: Session, now: datetime, lease: datetime, room: int, busy: list[str]
    ) -> tuple[list[Row], bool]:
        """The deliveries claimed, and whether every due unclaimed one was seen and taken."""
        s = self.settings
        # Enough candidates that handlers near their cap do not crowd out the others, not
        # every due row: a backlog of one handler would otherwise be read in full each round.
        limit = min(room * 4, room + 4 * s.claimed_per_handler)
        active = select(_h.id).where(_h.state == HandlerState.ACTIVE.value)
        due = (
            select(_d.id, _d.handler_id)
            .where(
                _d.state.in_([DeliveryState.PENDING.value, DeliveryState.FAILED.value]),
                _d.next_attempt_at <= now,
                or_(_d.lease_until.is_(None), _d.lease_until <= now),
                _d.handler_id.in_(active),
            )
            .order_by(_d.next_attempt_at, _d.event_seq)
            .limit(limit)
        )
        if busy:
            due = due.where(_d.handler_id.not_in(busy))
        due = for_update(session, due, skip_locked=True)
        candidates = session.execute(due).all()
        taken: list[str] = []
        counts = dict(self._claimed.per_handler)
        exhausted = not busy and len(candidates) < limit
        for delivery_id, handler_id in candidates:
            if len(taken) >= room:
                exhausted = False
                break
            if counts.get(handler_id, 0) >= s.claimed_per_handler:
                exhausted = False
                continue
            counts[handler_id] = counts.get(handler_id, 0) + 1
            taken.append(delivery_id)
        if not taken:
            return [], exhausted
        # The lease is taken only where it is still free: another replica that read the same
        # candidates (SQLite reads outside the write lock) claims none of them twice.
        claim = (
            update(deliveries_table)
            .where(
                _d.id.in_(taken),
                _d.state.in_([DeliveryState.PENDING.value, DeliveryState.FAILED.value]),
                or_(_d.lease_until.is_(None), _d.lease_until <= now),
            )
            .values(lease_until=lease)
            .returning(*deliveries_table.c)
        )
        rows = [dict(r) for r in session.execute(claim).mappings()]
        if len(rows) < len(taken):
            exhausted = False  # another replica raced us to some: look again
        return sorted(rows, key=lambda r: r["event_seq"]), exhausted

    async def _start_attempts(self, deliveries: list[Row]) -> None:
        seqs = {d["event_seq"] for d in deliveries}
        handler_ids = {d["handler_id"] for d in deliveries}
        async with self._db.read() as session:
            events = {
                r["seq"]: dict(r)
                for r in (
                    await session.execute(select(events_table).where(_e.seq.in_(seqs)))
                ).mappings()
            }
            handlers = {
                r["id"]: dict(r)
                for r in (
                    await session.execute(select(handlers_table).where(_h.id.in_(handler_ids)))
                ).mappings()
            }
        self._start(deliveries, handlers, events)

    def _start(
        self, deliveries: list[Row], handlers: Mapping[str, Row], events: Mapping[int, Row]
    ) -> None:
        """Start an attempt for each claimed delivery (counted as claimed until it ends)."""
        for delivery in deliveries:
            handler = handlers.get(delivery["handler_id"])
            event = events.get(delivery["event_seq"])
            hid = delivery["handler_id"]
            claimed = self._claimed
            claimed.total += 1
            claimed.per_handler[hid] = claimed.per_handler.get(hid, 0) + 1
            gate = claimed.gates.get(hid)
            if gate is None:
                gate = claimed.gates[hid] = asyncio.Semaphore(self.settings.per_handler)
            task = asyncio.create_task(self._gated_attempt(gate, delivery, handler, event))
            self._attempts.add(task)
            task.add_done_callback(self._attempt_done(hid))

    def _attempt_done(self, handler_id: str) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            self._attempts.discard(task)
            claimed = self._claimed
            claimed.total -= 1
            left = claimed.per_handler.get(handler_id, 1) - 1
            if left <= 0:
                claimed.per_handler.pop(handler_id, None)
                claimed.gates.pop(handler_id, None)
            else:
                claimed.per_handler[handler_id] = left
            self._wake_sender.set()

        return done

    def _open(self, sealed: str) -> str:
        secret = self._secrets.get(sealed)
        if secret is None:
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            secret = self._secrets[sealed] = self._box.open(sealed)
        return secret

    async def _gated_attempt(
        self, gate: asyncio.Semaphore, delivery: Row, handler: Row | None, event: Row | None
    ) -> None:
        """The attempt once its handler has a free slot, then the process has one."""
        async with gate, self._slots:
            await self._attempt(delivery, handler, event)

    async def _attempt(self, delivery: Row, handler: Row | None, event: Row | None) -> None:
        at = self._clock.now()
        started = time.monotonic()
        status, excerpt, error = 0, "", ""
        if handler is None or event is None:
            error = "the event or the handler no longer exists"
        else:
            try:
                async with asyncio.timeout(self.settings.attempt_timeout):
                    status, excerpt = await self._post(delivery, handler, event)
            except RefusedUrl as exc:
                error = f"refused URL: {exc}"
            except TimeoutError:
                error = f"timed out after {self.settings.attempt_timeout:g} s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"[:EXCERPT_BYTES]
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"[:EXCERPT_BYTES]
        latency = int((time.monotonic() - started) * 1000)
        outcome = _Outcome(
            delivery=delivery,
            handler_id=delivery["handler_id"],
            org_id=delivery["org_id"],
            at=at,
            status=status,
            latency_ms=latency,
            excerpt=excerpt,
            error=error,
        )
        self._outcomes.append(outcome)

    def _client(self, handler_id: str) -> aiohttp.ClientSession:
        client = self._clients.get(handler_id)
        if client is not None:
            self._clients.move_to_end(handler_id)
            return client
        s = self.settings
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=s.per_handler, ssl=self._tls or True, use_dns_cache=False
            ),
            timeout=aiohttp.ClientTimeout(total=s.attempt_timeout),
            trust_env=False,
            auto_decompress=False,  # the excerpt is the bytes as received
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried between deliveries
            skip_auto_headers=("Accept-Encoding",),
        )
        self._clients[handler_id] = client
        # Close the least recently used idle ones beyond the bound (a handler with claimed
        # work keeps its client).
        for stale in list(self._clients)[: max(0, len(self._clients) - MAX_CLIENTS)]:
            if stale not in self._claimed.per_handler:
                closing = self._clients.pop(stale)
                task = asyncio.create_task(closing.close())
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
        return client

    async def _resolve(self, url: str) -> Target:
        """The URL's checked target: resolved and checked again once RESOLVE_TTL has passed
        (by the injected clock; a clock moved back expires it too)."""
        now = self._clock.now()
        cached = self._targets.get(url)
        if cached is not None and now < cached[1] <= now + timedelta(seconds=RESOLVE_TTL):
            return cached[0]
        target = await resolve(url, allow_private=self.settings.allow_private_urls)
        if len(self._targets) > 10_000:
            self._targets.clear()
        self._targets[url] = (target, now + timedelta(seconds=RESOLVE_TTL))
        return target

    async def _post(self, delivery: Row, handler: Row, event: Row) -> tuple[int, str]:
        client = self._client(handler["id"])
        target = await self._resolve(handler["url"])
        body = envelope(event)
        webhook_id = "msg_" + delivery["id"]
        now = self._clock.now()
        timestamp = int(now.timestamp())
        secrets = [self._open(handler["secret_sealed"])]
        until = handler["previous_secret_until"]
        if handler["previous_secret_sealed"] and until is not None and until > now:
            secrets.append(self._open(handler["previous_secret_sealed"]))
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(secrets, webhook_id, timestamp, body),
            "host": _host_header(target),
        }
        https = target.parts.scheme.lower() == "https"
        async with client.post(
            _dial_url(target),
            data=body,
            headers=headers,
            allow_redirects=False,
            # TLS: SNI and the certificate's name check use the URL's host, not the address.
            server_hostname=target.host if https else None,
        ) as response:
            chunks = bytearray()
            while len(chunks) < EXCERPT_BYTES:
                chunk = await response.content.read(EXCERPT_BYTES - len(chunks))
                if not chunk:
                    break
                chunks += chunk
            return response.status, bytes(chunks).decode("utf-8", "replace")

    # -- outcomes --------------------------------------------------------------------------

    def _apply(self, session: Session, outcomes: list[_Outcome]) -> None:
        """Record attempts and move deliveries and handlers on (the caller's transaction)."""
        if not outcomes:
            return
        # A handler deleted meanwhile took its deliveries along: nothing to record for them.
        ids = [o.delivery["id"] for o in outcomes]
        alive = set(session.execute(select(_d.id).where(_d.id.in_(ids))).scalars())
        outcomes = [o for o in outcomes if o.delivery["id"] in alive]
        if not outcomes:
            return
        s = self.settings
        session.execute(
            insert(attempts_table),
            [
                {
                    "id": new_id("eva_"),
                    "org_id": o.org_id,
                    "handler_id": o.handler_id,
                    "delivery_id": o.delivery["id"],
                    "status_code": o.status,
                    "succeeded": o.succeeded,
                    "latency_ms": o.latency_ms,
                    "response_excerpt": o.excerpt[:EXCERPT_BYTES],
                    "error": o.error[:EXCERPT_BYTES],
                    "created_at": o.at,
                }
                for o in outcomes
            ],
        )
        now = self._clock.now()
        changes = []
        succeeded: set[str] = set()
        failed: dict[str, _Outcome] = {}
        gone: dict[str, _Outcome] = {}
        for o in outcomes:
            attempts = int(o.delivery["attempts"]) + 1
            change: dict[str, Any] = {
                "_id": o.delivery["id"],
                "attempts": attempts,
                "lease_until": None,
                "updated_at": now,
            }
            if o.succeeded:
                change |= {"state": DeliveryState.DELIVERED.value, "next_attempt_at": None}
                succeeded.add(o.handler_id)
            elif o.status == 410:
                change |= {"state": DeliveryState.DEAD.value, "next_attempt_at": None}
                gone[o.handler_id] = o
            elif attempts < len(s.schedule):
                delay = s.schedule[attempts] * random.uniform(1 - s.jitter, 1 + s.jitter)
                change |= {
                    "state": DeliveryState.FAILED.value,
                    "next_attempt_at": now + timedelta(seconds=delay),
                }
                failed[o.handler_id] = o
            else:
                change |= {"state": DeliveryState.DEAD.value, "next_attempt_at": None}
                failed[o.handler_id] = o
            changes.append(change)
        session.execute(
            update(deliveries_table)
            .where(_d.id == bindparam("_id"))
            .values(
                attempts=bindparam("attempts"),
                lease_until=bindparam("lease_until"),
                updated_at=bindparam("updated_at"),
                state=bindparam("state"),
                next_attempt_at=bindparam("next_attempt_at"),
            )
            .execution_options(synchronize_session=False),
            changes,
        )
        if succeeded:
            session.execute(
                update(handlers_table)
                .where(_h.id.in_(succeeded), _h.failing_since.is_not(None))
                .values(failing_since=None)
            )
        for handler_id in gone:
            self._disable(session, handler_id, "the receiver answered 410 Gone", now)
        for handler_id in set(failed) - succeeded - set(gone):
            self._note_failure(session, handler_id, now)

    def _note_failure(self, session: Session, handler_id: str, now: datetime) -> None:
        row = (
            session.execute(for_update(session, select(handlers_table).where(_h.id == handler_id)))
            .mappings()
            .one_or_none()
        )
        if row is None or row["state"] != HandlerState.ACTIVE.value:
            return
        since = row["failing_since"]
        if since is None:
            session.execute(
                update(handlers_table).where(_h.id == handler_id).values(failing_since=now)
            )
        elif (now - since).total_seconds() >= self.settings.disable_after:
            self._disable(session, handler_id, f"failing continuously since {iso(since)}", now)

    def _disable(self, session: Session, handler_id: str, reason: str, now: datetime) -> None:
        row = (
            session.execute(for_update(session, select(handlers_table).where(_h.id == handler_id)))
            .mappings()
            .one_or_none()
        )
        if row is None or row["state"] != HandlerState.ACTIVE.value:
            return
        changed = dict(row) | {
            "state": HandlerState.DISABLED.value,
            "disabled_reason": reason,
            "updated_at": now,
            "version": row["version"] + 1,
        }
        session.execute(update(handlers_table).where(_h.id == handler_id).values(changed))
        self._events.append(
            session,
            [NewEvent(row["org_id"], "event_handler.disabled", handler_id, snapshot(changed), now)],
        )
        log.warning("event handler %s disabled: %s", handler_id, reason)

    # -- replays --------------------------------------------------------------------------

    async def _replay_once(self) -> bool:
        queued = await self._db.run_write(self._replay_step)
        if queued:
            self._backlog = True
            self._wake_sender.set()
        return queued > 0

    def _replay_step(self, session: Session) -> int:
        """One batch of one RUNNING replay; >0 when there is more to do at once."""
        s = self.settings
        now = self._clock.now()
        query = (
            select(replays_table)
            .where(
                _r.state == ReplayState.RUNNING.value,
                or_(_r.lease_until.is_(None), _r.lease_until <= now),
            )
            .order_by(_r.created_at)
            .limit(1)
        )
        job = session.execute(for_update(session, query, skip_locked=True)).mappings().first()
        if job is None:
            return 0
        # Lease it for this step (only if still free: replicas may have read the same job).
        taken = session.execute(
            update(replays_table)
            .where(_r.id == job["id"], or_(_r.lease_until.is_(None), _r.lease_until <= now))
            .values(lease_until=now + timedelta(seconds=self.settings.lease_margin))
            .returning(_r.position)
        ).first()
        if taken is None or taken[0] != job["position"]:
            return 0
        handler = (
            session.execute(select(handlers_table).where(_h.id == job["handler_id"]))
            .mappings()
            .one_or_none()
        )
        if handler is None:
            session.execute(
                update(replays_table)
                .where(_r.id == job["id"])
                .values(state=ReplayState.FAILED.value, failure_details="handler deleted")
            )
            return 0
        filters = [
            _e.org_id == job["org_id"],
            _e.seq > job["position"],
            _e.seq <= job["until_seq"],
        ]
        if job["since"] is not None:
            filters.append(_e.occurred_at >= job["since"])
        if job["until"] is not None:
            filters.append(_e.occurred_at < job["until"])
        events = [
            dict(r)
            for r in session.execute(
                select(events_table).where(*filters).order_by(_e.seq).limit(s.replay_batch)
            ).mappings()
        ]
        about = self._scopes(session)(dict(handler))
        matched = [e for e in events if _matches(dict(handler), e, about)]
        existing = {
            r["event_seq"]: dict(r)
            for r in session.execute(
                select(deliveries_table).where(
                    _d.handler_id == handler["id"],
                    _d.event_seq.in_([e["seq"] for e in matched]),
                )
            ).mappings()
        }
        requeue: list[str] = []
        fresh: list[dict[str, Any]] = []
        for event in matched:
            current = existing.get(event["seq"])
            if current is None:
                if not job["only_failed"]:
                    fresh.append(_new_delivery(dict(handler), event, now))
            elif not job["only_failed"] or current["state"] in (
                DeliveryState.FAILED.value,
                DeliveryState.DEAD.value,
            ):
                requeue.append(current["id"])
        if requeue:
            session.execute(
                update(deliveries_table)
                .where(_d.id.in_(requeue))
                .values(
                    state=DeliveryState.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    lease_until=None,
                    updated_at=now,
                )
            )
        if fresh:
            _insert_deliveries(session, fresh)
        done = len(events) < s.replay_batch
        values: dict[str, Any] = {
            "position": events[-1]["seq"] if events else job["until_seq"],
            "events_total": job["events_total"] + len(matched),
            "events_queued": job["events_queued"] + len(requeue) + len(fresh),
            "updated_at": now,
        }
        if done:
            values["state"] = ReplayState.COMPLETED.value
        values["lease_until"] = None
        session.execute(update(replays_table).where(_r.id == job["id"]).values(values))
        return 0 if done and not (requeue or fresh) else 1


def _matches(handler: Row, event: Row, about_channel: patterns.ChannelPredicate | None) -> bool:
    if handler["org_id"] != event["org_id"]:
        return False
    if event["type"] == "event_handler.disabled" and event["resource_id"] == handler["id"]:
        return False
    types = handler.get("_types")
    if types is None:
        types = patterns.split(handler["event_types"])
    if not patterns.type_matches(types, event["type"]):
        return False
    data = event["payload"] if isinstance(event["payload"], dict) else {}
    return patterns.scope_matches(
        about_channel, handler["application_id"], event["type"], event["resource_id"], data
    )


def _new_delivery(handler: Row, event: Row, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id("evd_"),
        "org_id": handler["org_id"],
        "handler_id": handler["id"],
        "event_seq": event["seq"],
        "event_type": event["type"],
        "state": DeliveryState.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": None,
        "created_at": now,
        "updated_at": now,
    }


def _insert_deliveries(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows that are new (unique per handler and event); the ids inserted."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = module.insert(deliveries_table).on_conflict_do_nothing().returning(_d.id)
    return set(session.execute(statement, rows).scalars())


def _host_header(target: Target) -> str:
    host = target.host if ":" not in target.host else f"[{target.host}]"
    default = 443 if target.parts.scheme.lower() == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _dial_url(target: Target) -> str:
    """The URL with the checked address in place of the name (Host and SNI carry the name)."""
    address = target.address if ":" not in target.address else f"[{target.address}]"
    return target.parts._replace(netloc=f"{address}:{target.port}").geturl()
