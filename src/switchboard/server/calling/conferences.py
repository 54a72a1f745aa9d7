"""Conferences and their members: call legs in one carrier mix.

A conference is created empty (`created`) with conference-wide `hold` (nobody hears or speaks)
and `mute` (nobody speaks). A member is an ACTIVE call (`call_id`) or a number dialled from the
conference's `from` (`to`): it is `joining` until its call is answered, then `active`; the
conference is `active` from its first member. A member leaves (`completed`) when it is removed
(DELETE: a call the conference dialled is hung up), when its call ends, or when its dialled call
is never answered; the conference is `completed` when its last member leaves, or on DELETE.
`join_tone`/`leaving_tone` play a short tone to the conference (a play of its own). Every
change is a `conference.*` or `member.*` event; member events carry the conference id as
resource id, so a stream filtered by conference follows its members.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from switchboard.server.calling import media as media_rules
from switchboard.server.calling.carrier import Carrier, CarrierError
from switchboard.server.calling.models import (
    CallState,
    ConferenceRecord,
    ConferenceState,
    MemberRecord,
    MemberState,
)
from switchboard.server.calling.service import CallService, _invalid, calls_table, parse_media
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.errors import NotFound, StaleData
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks

conferences_table = table_of(ConferenceRecord)
members_table = table_of(MemberRecord)
_f = conferences_table.c
_mb = members_table.c
_c = calls_table.c

TONE = media_rules.dtmf("#")  # the join and leaving tone: 150 ms
_OPEN = (ConferenceState.CREATED.value, ConferenceState.ACTIVE.value)
_IN = (MemberState.JOINING.value, MemberState.ACTIVE.value)


def conference_snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "from": row["sender_id"],
        "state": row["state"],
        "created_time": iso(row["created_at"]),
        "completed_time": iso(row["completed_at"]),
        "active_members": row["active_members"],
        "hold": row["hold"],
        "mute": row["mute"],
    }


def member_snapshot(row: Row, conference_external_id: str = "") -> Snapshot:
    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "state": row["state"],
        "join_tone": row["join_tone"],
        "leaving_tone": row["leaving_tone"],
        "hold": row["hold"],
        "mute": row["mute"],
        "added_time": iso(row["added_at"]),
        "removed_time": iso(row["removed_at"]),
        "conference_id": row["conference_id"],
        "conference_external_id": conference_external_id,
        "call_id": row["call_id"],
    }


class ConferenceService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        carrier: Carrier,
        calls: CallService,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._carrier = carrier
        self._calls = calls
        calls.answered_hooks.append(self.call_answered)
        calls.ended_hooks.append(self.call_ended)
        self.rows = OrgTable(
            db=db,
            events=events,
            table=conferences_table,
            noun="conference",
            event_prefix="conference",
            snapshot=conference_snapshot,
            unique_message="conference conflict",
        )

    # -- conferences -----------------------------------------------------------------------------

    async def get(self, org_id: str, conference_id: str) -> Snapshot:
        return await self.rows.get(org_id, conference_id)

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[Snapshot], str]:
        return await self.rows.list_page(
            org_id,
            given,
            page,
            checks,
            columns={"from": "sender_id", "created_time": "created_at"},
            times=frozenset({"created_time"}),
        )

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        checks = Checks()
        external_id = str(values.get("external_id") or "")
        checks.length("external_id", external_id, 128)
        state = values.get("state")
        if state is not None and str(state).lower() != ConferenceState.CREATED.value:
            checks.fail("state", "a new conference is `created`; it becomes active with members")
        checks.raise_if_failed()
        sender_ref = str(values.get("from") or "").strip()
        sender_id = ""
        if sender_ref:
            sender_id = (await self._calls.voice_sender(org_id, sender_ref)).id
        now = self._clock.now()
        conference_id = new_id("conf_")
        row = {
            "id": conference_id,
            "org_id": org_id,
            "external_id": external_id,
            "sender_id": sender_id,
            "state": ConferenceState.CREATED.value,
            "hold": bool(values.get("hold") or False),
            "mute": bool(values.get("mute") or False),
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
        }

        def work(session: Session) -> None:
            written = session.execute(
                conferences_table.insert().values(row).returning(*conferences_table.c)
            )
            self._conference_event(session, written.mappings().one(), "created", now)

        await self._db.run_write(work)
        await self._carrier.connect(conference_id, [])  # an empty mix, ready for members
        return conference_id

    async def delete(self, org_id: str, conference_id: str) -> None:
        conference = await self.rows.get(org_id, conference_id)
        if conference["state"] not in _OPEN:
            raise StaleData(f"conference {conference_id!r} already completed")
        for member in await self._members_in(conference_id):
            await self._leave(member, self._clock.now(), hang_up=True, tone=False)
        await self._complete(conference_id, self._clock.now())

    async def play(
        self, org_id: str, conference_id: str, kind: media_rules.MediaKind, values: Any
    ) -> str:
        media = parse_media(kind, values)
        conference = await self.rows.get(org_id, conference_id)
        if conference["state"] not in _OPEN:
            raise StaleData(f"conference {conference_id!r} is completed")
        return await self._calls.queue_play(org_id, kind, media, conference_id=conference_id)

    # -- members ---------------------------------------------------------------------------------

    async def list_members(
        self,
        org_id: str,
        conference_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
    ) -> tuple[list[Snapshot], str]:
        conference = await self.rows.get(org_id, conference_id)
        clauses = listing.filters(checks, members_table, given, columns={}, times=frozenset())
        checks.raise_if_failed()
        query = listing.paged(
            select(members_table).where(
                _mb.org_id == org_id, _mb.conference_id == conference_id, *clauses
            ),
            members_table,
            page,
        )
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        items = [member_snapshot(r, conference["external_id"]) for r in rows[: page.limit]]
        return items, listing.next_page_token(rows, page)

    async def get_member(self, org_id: str, conference_id: str, member_id: str) -> Snapshot:
        conference = await self.rows.get(org_id, conference_id)
        return member_snapshot(
            await self._member(org_id, conference_id, member_id), conference["external_id"]
        )

    async def add_member(
        self, org_id: str, application_id: str, conference_id: str, values: Mapping[str, Any]
    ) -> str:
        checks = Checks()
        call_id = str(values.get("call_id") or "").strip()
        to = str(values.get("to") or "").strip()
        if bool(call_id) == bool(to):
            checks.fail("call_id", "give either call_id (an ACTIVE call) or to (a number to call)")
        external_id = str(values.get("external_id") or "")
        checks.length("external_id", external_id, 128)
        state = values.get("state")
        if state is not None and str(state).lower() != MemberState.ACTIVE.value:
            checks.fail("state", "a member is added `active`")
        checks.raise_if_failed()
        conference = await self.rows.get(org_id, conference_id)
        if conference["state"] not in _OPEN:
            raise StaleData(f"conference {conference_id!r} is completed")
        given_external = values.get("conference_external_id")
        if given_external is not None and str(given_external) != conference["external_id"]:
            raise _invalid("conference_external_id", "does not match the conference")
        dialled = bool(to)
        if dialled:
            if not conference["from"]:
                raise _invalid("to", "the conference has no `from` to call from")
            call_id = await self._calls.create(
                org_id, application_id, {"from": conference["from"], "to": to}
            )
        now = self._clock.now()
        member = {
            "id": new_id("mem_"),
            "org_id": org_id,
            "conference_id": conference_id,
            "external_id": external_id,
            "state": MemberState.JOINING.value,
            "join_tone": bool(values.get("join_tone") or False),
            "leaving_tone": bool(values.get("leaving_tone") or False),
            "hold": bool(values.get("hold") or False),
            "mute": bool(values.get("mute") or False),
            "call_id": call_id,
            "dialled": dialled,
            "created_at": now,
        }

        def work(session: Session) -> str:
            call = session.execute(
                select(_c.state, _c.bridge_id).where(_c.org_id == org_id, _c.id == call_id)
            ).first()
            if call is None:
                raise NotFound(f"call {call_id!r} not found")
            if not dialled and call.state != CallState.ACTIVE.value:
                raise StaleData(f"call {call_id!r} is {call.state}: only ACTIVE calls join")
            if call.bridge_id:
                raise StaleData(f"call {call_id!r} is in bridge {call.bridge_id!r}")
            busy = session.execute(
                select(_mb.id).where(_mb.call_id == call_id, _mb.state.in_(_IN))
            ).first()
            if busy is not None:
                raise StaleData(f"call {call_id!r} is already a conference member")
            written = session.execute(
                members_table.insert().values(member).returning(*members_table.c)
            )
            self._member_event(session, written.mappings().one(), "joining", now)
            return str(call.state)

        call_state = await self._db.run_write(work)
        # A dialled call may have been answered before this member existed (its hook then found
        # no one to join): join now. _join is a no-op for a member that already joined.
        if not dialled or call_state == CallState.ACTIVE.value:
            await self._join(str(member["id"]), now)
        return str(member["id"])

    async def remove_member(self, org_id: str, conference_id: str, member_id: str) -> None:
        member = await self._member(org_id, conference_id, member_id)
        if member["state"] not in _IN:
            raise StaleData(f"member {member_id!r} already left")
        await self._leave(member, self._clock.now(), hang_up=True, tone=True)

    async def play_member(
        self,
        org_id: str,
        conference_id: str,
        member_id: str,
        kind: media_rules.MediaKind,
        values: Any,
    ) -> str:
        media = parse_media(kind, values)
        member = await self._member(org_id, conference_id, member_id)
        if member["state"] != MemberState.ACTIVE.value:
            raise StaleData(f"member {member_id!r} is {member['state']}: plays need an active one")
        return await self._calls.queue_play(org_id, kind, media, call_id=member["call_id"])

    # -- the call engine's hooks -----------------------------------------------------------------

    async def call_answered(self, call_id: str, at: datetime) -> None:
        """A dialled member's call was answered: it joins."""
        async with self._db.read() as session:
            member_id = (
                await session.execute(
                    select(_mb.id).where(
                        _mb.call_id == call_id, _mb.state == MemberState.JOINING.value
                    )
                )
            ).scalar()
        if member_id:
            await self._join(str(member_id), at)

    async def call_ended(self, call: Row, at: datetime) -> None:
        """A member's call ended (or was never answered): the member leaves."""
        async with self._db.read() as session:
            rows = list(
                (
                    await session.execute(
                        select(members_table).where(_mb.call_id == call["id"], _mb.state.in_(_IN))
                    )
                ).mappings()
            )
        for member in rows:
            await self._leave(member, at, hang_up=False, tone=True)

    # -- joining and leaving ---------------------------------------------------------------------

    async def _join(self, member_id: str, at: datetime) -> None:
        def work(session: Session) -> Row | None:
            conference_id = session.execute(
                select(_mb.conference_id).where(_mb.id == member_id)
            ).scalar_one()
            conference = self._conference(session, conference_id)  # locked first, as in _leave
            member = (
                session.execute(select(members_table).where(_mb.id == member_id)).mappings().one()
            )
            if member["state"] != MemberState.JOINING.value or conference["state"] not in _OPEN:
                return None
            changes = {"state": MemberState.ACTIVE.value, "added_at": at}
            changed = self._change_member(
                session, member, changes, "active", at, only_from=MemberState.JOINING
            )
            if changed is None:
                return None  # joined meanwhile (the answer hook and the add raced)
            self._move_count(session, conference, +1, at)
            return changed

        member = await self._db.run_write(work)
        if member is None:
            return
        conference = await self._conference_row(member["conference_id"])
        try:
            await self._carrier.connect(member["conference_id"], [member["call_id"]])
            hear = not (conference["hold"] or member["hold"])
            speak = hear and not (conference["mute"] or member["mute"])
            await self._carrier.set_leg(
                member["conference_id"], member["call_id"], hear=hear, speak=speak
            )
        except CarrierError:  # the call ended meanwhile: its end makes the member leave
            return
        if member["join_tone"]:
            await self._tone(member)

    async def _leave(self, member: Row, at: datetime, *, hang_up: bool, tone: bool) -> None:
        def work(session: Session) -> Row | None:
            # The conference row is locked first: leaves (a DELETE racing the call's end) and
            # joins of one conference happen one at a time, so the count stays true.
            conference = self._conference(session, member["conference_id"])
            current = (
                session.execute(select(members_table).where(_mb.id == member["id"]))
                .mappings()
                .one()
            )
            if current["state"] not in _IN:
                return None
            was_active = current["state"] == MemberState.ACTIVE.value
            changes = {"state": MemberState.COMPLETED.value, "removed_at": at}
            changed = self._change_member(session, current, changes, "completed", at)
            if was_active:
                self._move_count(session, conference, -1, at)
            return changed

        left = await self._db.run_write(work)
        if left is None:
            return
        await self._carrier.disconnect(left["conference_id"], left["call_id"])
        if hang_up and left["dialled"]:
            await self._carrier.hangup(left["call_id"])
        conference = await self._conference_row(left["conference_id"])
        if conference["state"] == ConferenceState.ACTIVE.value and not conference["active_members"]:
            await self._complete(left["conference_id"], at)
        elif tone and left["leaving_tone"] and conference["state"] in _OPEN:
            await self._tone(left)

    async def _complete(self, conference_id: str, at: datetime) -> None:
        def work(session: Session) -> bool:
            conference = self._conference(session, conference_id)
            if conference["state"] not in _OPEN:
                return False
            changes = {"state": ConferenceState.COMPLETED.value, "completed_at": at}
            self._change_conference(session, conference, changes, "completed", at)
            return True

        if await self._db.run_write(work):
            await self._carrier.close_mix(conference_id)

    async def _tone(self, member: Row) -> None:
        with contextlib.suppress(StaleData):  # the conference ended meanwhile: no one hears it
            await self._calls.queue_play(
                member["org_id"],
                media_rules.MediaKind.DTMF,
                TONE,
                conference_id=member["conference_id"],
            )

    # -- rows ------------------------------------------------------------------------------------

    async def _member(self, org_id: str, conference_id: str, member_id: str) -> Row:
        async with self._db.read() as session:
            row = (
                (
                    await session.execute(
                        select(members_table).where(
                            _mb.org_id == org_id,
                            _mb.conference_id == conference_id,
                            _mb.id == member_id,
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound(f"conference member {member_id!r} not found")
        return row

    async def _members_in(self, conference_id: str) -> list[Row]:
        async with self._db.read() as session:
            query = select(members_table).where(
                _mb.conference_id == conference_id, _mb.state.in_(_IN)
            )
            return list((await session.execute(query)).mappings())

    async def _conference_row(self, conference_id: str) -> Row:
        async with self._db.read() as session:
            query = select(conferences_table).where(_f.id == conference_id)
            return (await session.execute(query)).mappings().one()

    def _conference(self, session: Session, conference_id: str) -> Row:
        query = select(conferences_table).where(_f.id == conference_id)
        query = for_update(session, query)
        return session.execute(query).mappings().one()

    def _move_count(self, session: Session, conference: Row, delta: int, at: datetime) -> None:
        count = conference["active_members"] + delta
        changes: dict[str, Any] = {"active_members": count}
        what = "updated"
        if conference["state"] == ConferenceState.CREATED.value and count > 0:
            changes["state"] = ConferenceState.ACTIVE.value
            what = "active"
        self._change_conference(session, conference, changes, what, at)

    def _change_conference(
        self, session: Session, row: Row, changes: Mapping[str, Any], what: str, at: datetime
    ) -> None:
        statement = (
            update(conferences_table)
            .where(_f.id == row["id"])
            .values(**changes, updated_at=at)
            .returning(*conferences_table.c)
        )
        self._conference_event(session, session.execute(statement).mappings().one(), what, at)

    def _change_member(
        self,
        session: Session,
        row: Row,
        changes: Mapping[str, Any],
        what: str,
        at: datetime,
        *,
        only_from: MemberState | None = None,
    ) -> Row | None:
        """Apply `changes` (only if the member is still `only_from`, when given) with its event."""
        statement = update(members_table).where(_mb.id == row["id"])
        if only_from is not None:
            statement = statement.where(_mb.state == only_from.value)
        changed = (
            session.execute(statement.values(**changes).returning(*members_table.c))
            .mappings()
            .one_or_none()
        )
        if changed is not None:
            self._member_event(session, changed, what, at)
        return changed

    def _conference_event(self, session: Session, row: Row, what: str, at: datetime) -> None:
        snapshot = conference_snapshot(row)
        event = NewEvent(row["org_id"], f"conference.{what}", row["id"], snapshot, at)
        self._events.append(session, [event])

    def _member_event(self, session: Session, row: Row, what: str, at: datetime) -> None:
        # The conference id as resource id: a stream filtered by conference follows its members.
        snapshot = member_snapshot(row)
        event = NewEvent(row["org_id"], f"member.{what}", row["conference_id"], snapshot, at)
        self._events.append(session, [event])


__all__ = [
    "ConferenceService",
    "conference_snapshot",
    "member_snapshot",
]
