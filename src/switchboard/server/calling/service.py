"""Calls: create, read, update, hang up, play media, and the state machine driven by the carrier.

A call is created STARTED (its row and `call.started` event commit first, then the carrier
dials), becomes ACTIVE when answered, COMPLETED when either side hangs up, or REJECTED when it
was never answered (`failure_code` BUSY, NO_ANSWER, INVALID_NUMBER or CARRIER_ERROR). Each
carrier event is applied in its own transaction with its event (`call.*`, `play.*`), in the
order the carrier reports them, so a subscriber sees STARTED → ACTIVE → COMPLETED as they
happen. Illegal requests are clear errors: playing into a call that is not ACTIVE, or hanging
up one that already ended, is 409.

Plays (DTMF, text to speech, audio) queue per call: QUEUED → PLAYING → COMPLETED, or INTERRUPTED
when the call ends first. Their events carry the call id as resource id, so a stream filtered
by call ids follows its plays too.

`chargeable_duration` is the answered time in seconds, rounded up; `price` the called country's
per-minute voice rate (reference data) times the started minutes. After a restart, calls still
STARTED or ACTIVE are reconciled with the carrier (the sandbox ends them: COMPLETED, or REJECTED
CARRIER_ERROR if never answered) and their unfinished plays are INTERRUPTED: none stays live.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from switchboard.server.calling import media as media_rules
from switchboard.server.calling.audio import AttachmentAudio
from switchboard.server.calling.carrier import (
    LOCAL_HANGUP,
    REMOTE_HANGUP,
    Carrier,
    CarrierConflict,
    CarrierEvent,
    EventKind,
    UnknownTarget,
)
from switchboard.server.calling.models import (
    LIVE_STATES,
    CallRecord,
    CallState,
    PlayRecord,
    PlayState,
)
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    StaleData,
    require_version,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.core.writer import Writer
from switchboard.server.delivery.recipients import country_and_zones
from switchboard.server.telephony.phone import InvalidNumber, classify

log = logging.getLogger("switchboard.calling")

calls_table = table_of(CallRecord)
plays_table = table_of(PlayRecord)
_c = calls_table.c
_p = plays_table.c

_FILTER_COLUMNS = {
    "from": "sender_id",
    "start_time": "start_time",
    "answer_time": "answer_time",
    "created_date": "created_at",
    "last_updated_date": "updated_at",
}
_NORMAL_ENDS = (LOCAL_HANGUP, REMOTE_HANGUP)
_TIME_FILTERS = frozenset({"start_time", "answer_time", "created_date", "last_updated_date"})
DEFAULT_ANSWER_TIMEOUT = 30_000
ANSWER_TIMEOUT_RANGE = (1_000, 120_000)


class VoiceSender(Protocol):
    """An ACTIVE sender ID as calls use it (messaging's Sender)."""

    @property
    def id(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def capabilities(self) -> Sequence[str]: ...


class VoiceSenders(Protocol):
    """Where calls find their senders (messaging's SenderService): calls use voice senders."""

    async def resolve_sendable(self, org_id: str, sender_ref: str) -> Sequence[VoiceSender]: ...


class CallRates(Protocol):
    """The per-minute voice rates (messaging's Rates: one rate table for messages and calls)."""

    def rate(self, channel: str, country: str, route: str = "") -> float: ...


class ContactNumbers(Protocol):
    """A contact's number, to dial it by contact id (contacts' ContactDirectory)."""

    async def mdn_of(self, org_id: str, contact_id: str) -> str | None: ...


def call_snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "from": row["sender_id"],
        "from_address": row["from_address"],
        "to": row["to"],
        "to_address": row["to_address"],
        "answer_timeout": row["answer_timeout"],
        "state": row["state"],
        "direction": row["direction"],
        "start_time": iso(row["start_time"]),
        "answer_time": iso(row["answer_time"]),
        "end_time": iso(row["end_time"]),
        "chargeable_duration": row["chargeable_duration"],
        "bridge_id": row["bridge_id"],
        "failure_code": row["failure_code"],
        "failure_details": row["failure_details"],
        "price": row["price"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def play_snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "call_id": row["call_id"],
        "bridge_id": row["bridge_id"],
        "conference_id": row["conference_id"],
        "kind": row["kind"],
        "state": row["state"],
        "duration": row["duration"],
        "started_time": iso(row["started_at"]),
        "ended_time": iso(row["ended_at"]),
        "created_date": iso(row["created_at"]),
    }


class CallService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        carrier: Carrier,
        senders: VoiceSenders,
        rates: CallRates,
        contacts: ContactNumbers,
        writer: Writer,
        audio: AttachmentAudio | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self.carrier = carrier
        self._audio = audio
        # Creates and carrier events share commits with everything else the writer holds:
        # under load one fsync carries many calls' changes.
        self._creates = writer.channel("call-create", self._insert_calls)
        self._carrier_events = writer.channel("call-events", self._apply_batches)
        self._senders = senders
        self._rates = rates
        self._contacts = contacts
        # Who else follows calls (bridges, conferences): called after the change committed.
        self.answered_hooks: list[Callable[[str, datetime], Awaitable[None]]] = []
        self.ended_hooks: list[Callable[[Row, datetime], Awaitable[None]]] = []
        self.rows = OrgTable(
            db=db,
            events=events,
            table=calls_table,
            noun="call",
            event_prefix="call",
            snapshot=call_snapshot,
            unique_message="call conflict",
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the carrier, then reconcile the calls a previous process left live."""
        await self.carrier.start(self.on_carrier_event)
        async with self._db.read() as session:
            query = select(_c.id, _c.state).where(_c.state.in_(LIVE_STATES))
            live = {r.id: r.state == CallState.ACTIVE.value for r in await session.execute(query)}
        if not live:
            return
        outcomes = await self.carrier.reconcile(live)
        await self.on_carrier_event(list(outcomes.values()))
        log.info("reconciled %d live calls after a restart", len(outcomes))

    async def stop(self) -> None:
        await self.carrier.stop()

    # -- client requests -------------------------------------------------------------------------

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        checks = Checks()
        sender_ref = str(values.get("from") or "").strip()
        to = str(values.get("to") or "").strip()
        checks.required("from", sender_ref or None)
        checks.required("to", to or None)
        external_id = str(values.get("external_id") or "")
        checks.length("external_id", external_id, 128)
        timeout = values.get("answer_timeout")
        answer_timeout = DEFAULT_ANSWER_TIMEOUT if timeout is None else int(timeout)
        low, high = ANSWER_TIMEOUT_RANGE
        if not low <= answer_timeout <= high:
            checks.fail("answer_timeout", f"must be {low} to {high} milliseconds", "Range")
        checks.raise_if_failed()
        sender = await self.voice_sender(org_id, sender_ref)
        to_address = await self._dialable(org_id, to)
        now = self._clock.now()
        call_id = new_id("call_")
        row = {
            "id": call_id,
            "org_id": org_id,
            "external_id": external_id,
            "sender_id": sender.id,
            "from_address": sender.address,
            "to": to,
            "to_address": to_address,
            "answer_timeout": answer_timeout,
            "state": CallState.STARTED.value,
            "direction": "OUT",
            "start_time": now,
            "country": country_and_zones(to_address)[0],
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

        await self._creates.submit(row)
        await self.carrier.dial(call_id, sender.address, to_address, answer_timeout)
        return call_id

    def _insert_calls(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> list[None]:
        written = session.execute(
            calls_table.insert().returning(*calls_table.c), [dict(r) for r in rows]
        )
        for call in written.mappings():
            self.call_event(session, call, "started", call["created_at"])
        return [None] * len(rows)

    async def voice_sender(self, org_id: str, sender_ref: str, field: str = "from") -> VoiceSender:
        """The org's ACTIVE sender `sender_ref` when it can make calls; else 400 on `field`."""
        try:
            senders = await self._senders.resolve_sendable(org_id, sender_ref)
        except NotFound as exc:
            raise _invalid(field, str(exc)) from exc
        sender = next((s for s in senders if "VOICE" in s.capabilities), None)
        if sender is None:
            raise _invalid(field, f"sender ID {sender_ref!r} is not ACTIVE or cannot make calls")
        return sender

    async def _dialable(self, org_id: str, to: str) -> str:
        """`to` as an E.164 number: itself, or a contact's primary_mdn."""
        try:
            return classify(to).e164
        except InvalidNumber:
            pass
        mdn = await self._contacts.mdn_of(org_id, to)
        if mdn:
            return str(mdn)
        raise _invalid("to", f"{to!r} is neither a phone number nor a contact with a number")

    async def get(self, org_id: str, call_id: str) -> Snapshot:
        return await self.rows.get(org_id, call_id)

    async def list_page(
        self,
        org_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
        *,
        bridge_id: str | None = None,
    ) -> tuple[list[Snapshot], str]:
        extra = () if bridge_id is None else (_c.bridge_id == bridge_id,)
        return await self.rows.list_page(
            org_id,
            given,
            page,
            checks,
            columns=_FILTER_COLUMNS,
            times=_TIME_FILTERS,
            integers=frozenset({"answer_timeout"}),
            extra=extra,
        )

    async def update(
        self,
        org_id: str,
        call_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
    ) -> None:
        checks = Checks()
        for field in ("from", "to", "answer_timeout"):
            if values.get(field) is not None:
                checks.fail(field, "cannot change once the call is placed")
        external_id = values.get("external_id")
        if external_id is not None:
            checks.length("external_id", str(external_id), 128)
        checks.raise_if_failed()
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, call_id)
            require_version(current["version"], expected_version, "call")
            if external_id is None:
                return
            changed = self._change(session, current, {"external_id": str(external_id)}, now)
            self.call_event(session, changed, "updated", now)

        await self._db.run_write(work)

    async def hang_up(self, org_id: str, call_id: str) -> None:
        """DELETE: hang up a live call; the carrier's ENDED makes it COMPLETED (or REJECTED)."""
        call = await self.rows.get(org_id, call_id)
        if call["state"] not in LIVE_STATES:
            raise StaleData(f"call {call_id!r} already ended ({call['state']})")
        await self.carrier.hangup(call_id)

    async def play(self, org_id: str, call_id: str, kind: str, values: Mapping[str, Any]) -> str:
        """Queue media on an ACTIVE call; returns the play id."""
        media = parse_media(kind, values)
        call = await self.rows.get(org_id, call_id)
        if call["state"] != CallState.ACTIVE.value:
            raise StaleData(f"call {call_id!r} is {call['state']}: media plays on ACTIVE calls")
        return await self.queue_play(org_id, kind, media, call_id=call_id)

    async def queue_play(
        self,
        org_id: str,
        kind: str,
        media: media_rules.Media,
        *,
        call_id: str = "",
        bridge_id: str = "",
        conference_id: str = "",
    ) -> str:
        """Record a QUEUED play of a call, a bridge or a conference and hand it to the carrier."""
        audio_data = None
        if isinstance(media, media_rules.Audio) and self._audio is not None:
            audio_data = await self._audio.for_org(org_id, media)  # 400 for a foreign one
        now = self._clock.now()
        play_id = new_id("play_")
        row = {
            "id": play_id,
            "org_id": org_id,
            "call_id": call_id,
            "bridge_id": bridge_id,
            "conference_id": conference_id,
            "kind": str(kind),
            "state": PlayState.QUEUED.value,
            "duration": round(media_rules.media_duration(media, audio_data), 3),
            "created_at": now,
        }

        def work(session: Session) -> None:
            written = session.execute(plays_table.insert().values(row).returning(*plays_table.c))
            self._play_event(session, written.mappings().one(), "queued", now)

        await self._db.run_write(work)
        target = call_id or bridge_id or conference_id
        try:
            await self.carrier.play(target, play_id, media)
        except (CarrierConflict, UnknownTarget) as exc:  # the call or bridge ended meanwhile
            await self._db.run_write(
                lambda s: self._end_play(s, play_id, PlayState.INTERRUPTED, now, "interrupted")
            )
            raise StaleData(f"{target!r} ended before the play could start") from exc
        return play_id

    # -- the carrier's events --------------------------------------------------------------------

    async def on_carrier_event(self, events: Sequence[CarrierEvent]) -> None:
        """Apply a batch of carrier events in order, in one transaction (the carrier's sink);
        returns once they are durable and the hooks heard of answers and ends (the bridge or
        conference a call was in)."""
        if not events:
            return
        for changed, at in await self._carrier_events.submit(list(events)):
            if changed["state"] == CallState.ACTIVE.value:
                for answered in self.answered_hooks:
                    await answered(changed["id"], at)
            else:
                for ended in self.ended_hooks:
                    await ended(changed, at)

    def _apply_batches(
        self, session: Session, batches: Sequence[Sequence[CarrierEvent]]
    ) -> list[list[tuple[Row, datetime]]]:
        """Writer handler: each batch's events in order; per batch, the calls answered or ended."""
        results = []
        for events in batches:
            changes = []
            for event in events:
                changed = self._apply(session, event)
                if changed is not None:
                    changes.append((changed, event.at))
            results.append(changes)
        return results

    def _apply(self, session: Session, event: CarrierEvent) -> Row | None:
        """Apply `event`; the call when it was answered or ended (None otherwise)."""
        at = event.at
        if event.kind == EventKind.PLAY_STARTED:
            self._start_play(session, event.play_id, at)
            return None
        if event.kind == EventKind.PLAY_COMPLETED:
            self._end_play(session, event.play_id, PlayState.COMPLETED, at, "completed")
            return None
        if event.kind == EventKind.PLAY_INTERRUPTED:
            self._end_play(session, event.play_id, PlayState.INTERRUPTED, at, "interrupted")
            return None
        call = self._locked(session, event.target_id)
        if call is None or call["state"] not in LIVE_STATES:
            return None  # a repeat, or a call that ended already
        if event.kind == EventKind.ANSWERED and call["state"] == CallState.STARTED.value:
            changed = self._change(
                session, call, {"state": CallState.ACTIVE.value, "answer_time": at}, at
            )
            self.call_event(session, changed, "active", at)
            return changed
        elif event.kind == EventKind.REJECTED or (
            event.kind == EventKind.ENDED and call["state"] == CallState.STARTED.value
        ):
            code = event.failure_code.value if event.failure_code else ""
            details = event.reason or ("hung up before an answer" if not code else "")
            changes = {
                "state": CallState.REJECTED.value,
                "end_time": at,
                "failure_code": code,
                "failure_details": details[:1024],
            }
            changed = self._change(session, call, changes, at)
            self.call_event(session, changed, "rejected", at)
            self._interrupt_plays(session, call["id"], at)
            return changed
        elif event.kind == EventKind.ENDED:
            answered: datetime = call["answer_time"]
            seconds = max(0, math.ceil((at - answered).total_seconds()))
            minutes = math.ceil(seconds / 60)
            price = round(self._rates.rate("voice", call["country"]) * minutes, 6)
            changes = {
                "state": CallState.COMPLETED.value,
                "end_time": at,
                "chargeable_duration": seconds,
                "price": price,
                # Who hung up is the normal end; anything else (a restart) is worth saying.
                "failure_details": "" if event.reason in _NORMAL_ENDS else event.reason,
            }
            changed = self._change(session, call, changes, at)
            self.call_event(session, changed, "completed", at)
            self._interrupt_plays(session, call["id"], at)
            return changed
        return None

    def _locked(self, session: Session, call_id: str) -> Row | None:
        query = select(calls_table).where(_c.id == call_id)
        query = for_update(session, query)
        return session.execute(query).mappings().one_or_none()

    def _change(self, session: Session, call: Row, changes: Mapping[str, Any], at: datetime) -> Row:
        statement = (
            update(calls_table)
            .where(_c.id == call["id"])
            .values(**changes, updated_at=at, version=_c.version + 1)
            .returning(*calls_table.c)
        )
        return session.execute(statement).mappings().one()

    def _start_play(self, session: Session, play_id: str, at: datetime) -> None:
        statement = (
            update(plays_table)
            .where(_p.id == play_id, _p.state == PlayState.QUEUED.value)
            .values(state=PlayState.PLAYING.value, started_at=at)
            .returning(*plays_table.c)
        )
        row = session.execute(statement).mappings().one_or_none()
        if row is not None:
            self._play_event(session, row, "started", at)

    def _end_play(
        self, session: Session, play_id: str, state: PlayState, at: datetime, what: str
    ) -> None:
        statement = (
            update(plays_table)
            .where(
                _p.id == play_id,
                _p.state.in_([PlayState.QUEUED.value, PlayState.PLAYING.value]),
            )
            .values(state=state.value, ended_at=at)
            .returning(*plays_table.c)
        )
        row = session.execute(statement).mappings().one_or_none()
        if row is not None:
            self._play_event(session, row, what, at)

    def _interrupt_plays(self, session: Session, call_id: str, at: datetime) -> None:
        """Plays the carrier did not close (e.g. after a restart) end with their call."""
        query = select(_p.id).where(
            _p.call_id == call_id,
            _p.state.in_([PlayState.QUEUED.value, PlayState.PLAYING.value]),
        )
        for play_id in list(session.execute(query).scalars()):
            self._end_play(session, play_id, PlayState.INTERRUPTED, at, "interrupted")

    def call_event(self, session: Session, row: Row, what: str, at: datetime) -> None:
        payload = call_snapshot(row)
        self._events.append(
            session, [NewEvent(row["org_id"], f"call.{what}", row["id"], payload, at)]
        )

    def _play_event(self, session: Session, row: Row, what: str, at: datetime) -> None:
        # The call id as resource id: a stream filtered by call ids follows its plays too.
        payload = play_snapshot(row)
        target = row["call_id"] or row["bridge_id"] or row["conference_id"]
        self._events.append(session, [NewEvent(row["org_id"], f"play.{what}", target, payload, at)])


def parse_media(kind: str, values: Mapping[str, Any]) -> media_rules.Media:
    """A play request's body as media; 400 naming the field when it is not valid."""
    field = {"DTMF": "dtmf_digits", "TTS": "text"}.get(str(kind), "source")
    try:
        if kind == media_rules.MediaKind.DTMF:
            return media_rules.dtmf(str(values.get("dtmf_digits") or ""))
        if kind == media_rules.MediaKind.TTS:
            return media_rules.tts(
                str(values.get("text") or ""),
                str(values.get("language") or ""),
                str(values.get("gender") or ""),
                str(values.get("voice") or ""),
            )
        return media_rules.audio(
            str(values.get("source_type") or ""), str(values.get("source") or "")
        )
    except ValueError as exc:
        raise _invalid(field, str(exc)) from exc


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, violations=[FieldViolation(field, message)])


__all__ = ["CallService", "call_snapshot", "play_snapshot"]
