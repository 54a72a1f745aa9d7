"""Bridges: two or more ACTIVE calls joined on the carrier (a mix), so their parties hear each
other.

Create reserves the calls (their `bridge_id`) and writes the bridge CREATED in one transaction,
so a call is never claimed by two bridges; then the carrier joins them and the bridge becomes
ACTIVE, or HOLD when `bridge_audio` is false (the legs neither hear nor speak). If the carrier
cannot join them (a call ended meanwhile) the bridge is ERROR, the calls are released, and the
request is 409. POST toggles ACTIVE ⇄ HOLD with `bridge_audio` and can add or drop calls (at
least two remain). The bridge is COMPLETED by DELETE or when one of its calls ends; the other
calls stay up, on their own. Every change is a `bridge.*` event (and `call.updated` for the calls
whose `bridge_id` changed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from switchboard.server.calling.carrier import Carrier, CarrierError
from switchboard.server.calling.media import MediaKind
from switchboard.server.calling.models import (
    OPEN_BRIDGE_STATES,
    BridgeRecord,
    BridgeState,
    CallState,
)
from switchboard.server.calling.service import CallService, calls_table, parse_media
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.errors import NotFound, StaleData, require_version
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks

bridges_table = table_of(BridgeRecord)
_b = bridges_table.c
_c = calls_table.c

_COLUMNS = {"completed_time": "completed_at", "activated_time": "activated_at"}
_TIMES = frozenset({"completed_time", "activated_time", "created_date", "last_updated_date"})
MAX_LEGS = 16


def bridge_snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "state": row["state"],
        "bridge_audio": row["bridge_audio"],
        "activated_time": iso(row["activated_at"]),
        "completed_time": iso(row["completed_at"]),
        "error_details": row["error_details"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def _call_ids(checks: Checks, raw: Sequence[str]) -> list[str]:
    """`call_ids` as an array or comma-separated strings: distinct, at least two."""
    ids: list[str] = []
    for entry in raw:
        for part in str(entry).split(","):
            if part.strip() and part.strip() not in ids:
                ids.append(part.strip())
    if len(ids) < 2:
        checks.fail("call_ids", "a bridge joins at least two calls", "Range")
    elif len(ids) > MAX_LEGS:
        checks.fail("call_ids", f"a bridge joins at most {MAX_LEGS} calls", "Range")
    return ids


class BridgeService:
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
        calls.ended_hooks.append(self.leg_ended)
        self.rows = OrgTable(
            db=db,
            events=events,
            table=bridges_table,
            noun="bridge",
            event_prefix="bridge",
            snapshot=bridge_snapshot,
            unique_message="bridge conflict",
        )

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, org_id: str, bridge_id: str) -> Snapshot:
        return await self.rows.get(org_id, bridge_id)

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[Snapshot], str]:
        if "bridge_audio" in given and given["bridge_audio"] not in ("true", "false"):
            checks.fail("bridge_audio", "must be true or false", "Format")
        return await self.rows.list_page(
            org_id, given, page, checks, columns=_COLUMNS, times=_TIMES
        )

    async def calls(
        self, org_id: str, bridge_id: str, given: Mapping[str, str], page: listing.Page
    ) -> tuple[list[Snapshot], str]:
        await self.rows.get(org_id, bridge_id)  # 404 for unknown or foreign bridges
        return await self._calls.list_page(org_id, given, page, Checks(), bridge_id=bridge_id)

    # -- writes ----------------------------------------------------------------------------------

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        checks = Checks()
        ids = _call_ids(checks, values.get("call_ids") or [])
        external_id = str(values.get("external_id") or "")
        checks.length("external_id", external_id, 128)
        checks.raise_if_failed()
        audio = values.get("bridge_audio")
        bridge_audio = True if audio is None else bool(audio)
        now = self._clock.now()
        bridge_id = new_id("brg_")

        def reserve(session: Session) -> None:
            self._claim(session, org_id, bridge_id, ids, now)
            row = {
                "id": bridge_id,
                "org_id": org_id,
                "external_id": external_id,
                "state": BridgeState.CREATED.value,
                "bridge_audio": bridge_audio,
                "application_id": application_id,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            session.execute(bridges_table.insert().values(row))

        await self._db.run_write(reserve)
        try:
            await self._carrier.connect(bridge_id, ids)
            if not bridge_audio:
                for call_id in ids:
                    await self._carrier.set_leg(bridge_id, call_id, hear=False, speak=False)
        except CarrierError as exc:
            details = str(exc)
            await self._db.run_write(lambda s: self._fail(s, org_id, bridge_id, details))
            raise StaleData(f"the calls could not be bridged: {details}") from exc
        state = BridgeState.ACTIVE if bridge_audio else BridgeState.HOLD

        def activate(session: Session) -> None:
            current = self.rows.locked(session, org_id, bridge_id)
            if current["state"] != BridgeState.CREATED.value:
                return  # a leg ended meanwhile: leg_ended completed it
            self._change(
                session, current, {"state": state.value, "activated_at": now}, state.lower(), now
            )

        await self._db.run_write(activate)
        return bridge_id

    async def update(
        self,
        org_id: str,
        bridge_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
    ) -> None:
        checks = Checks()
        wanted = _call_ids(checks, values["call_ids"]) if values.get("call_ids") else None
        external_id = values.get("external_id")
        if external_id is not None:
            checks.length("external_id", str(external_id), 128)
        checks.raise_if_failed()
        current = await self.rows.get(org_id, bridge_id)
        require_version(current["version_number"], expected_version, "bridge")
        if current["state"] not in (BridgeState.ACTIVE.value, BridgeState.HOLD.value):
            raise StaleData(f"bridge {bridge_id!r} is {current['state']}: it cannot change")
        now = self._clock.now()
        audio = values.get("bridge_audio")
        bridge_audio = current["bridge_audio"] if audio is None else bool(audio)
        if wanted is not None:
            await self._change_legs(org_id, bridge_id, wanted, bridge_audio, now)
        if bridge_audio != current["bridge_audio"]:
            for call_id in await self._legs(bridge_id):
                await self._carrier.set_leg(
                    bridge_id, call_id, hear=bridge_audio, speak=bridge_audio
                )
        state = BridgeState.ACTIVE if bridge_audio else BridgeState.HOLD

        def work(session: Session) -> None:
            row = self.rows.locked(session, org_id, bridge_id)
            changes: dict[str, Any] = {"state": state.value, "bridge_audio": bridge_audio}
            if external_id is not None:
                changes["external_id"] = str(external_id)
            what = state.lower() if state.value != row["state"] else "updated"
            self._change(session, row, changes, what, now)

        await self._db.run_write(work)

    async def _change_legs(
        self, org_id: str, bridge_id: str, wanted: list[str], audio: bool, now: datetime
    ) -> None:
        legs = await self._legs(bridge_id)
        added = [c for c in wanted if c not in legs]
        dropped = [c for c in legs if c not in wanted]
        if added:
            await self._db.run_write(lambda s: self._claim(s, org_id, bridge_id, added, now))
            try:
                await self._carrier.connect(bridge_id, added)
                for call_id in added:
                    await self._carrier.set_leg(bridge_id, call_id, hear=audio, speak=audio)
            except CarrierError as exc:
                await self._db.run_write(lambda s: self._release(s, added, now))
                raise StaleData(f"the calls could not join the bridge: {exc}") from exc
        for call_id in dropped:
            await self._carrier.disconnect(bridge_id, call_id)
        if dropped:
            await self._db.run_write(lambda s: self._release(s, dropped, now))

    async def delete(self, org_id: str, bridge_id: str) -> None:
        current = await self.rows.get(org_id, bridge_id)
        if current["state"] not in OPEN_BRIDGE_STATES:
            raise StaleData(f"bridge {bridge_id!r} already ended ({current['state']})")
        await self._complete(org_id, bridge_id, self._clock.now())

    async def leg_ended(self, call: Row, at: datetime) -> None:
        """A call ended: its bridge, if it was in one, is COMPLETED (the call engine's hook)."""
        bridge_id = call["bridge_id"]
        if not bridge_id:
            return
        async with self._db.read() as session:
            org_id = (await session.execute(select(_b.org_id).where(_b.id == bridge_id))).scalar()
        if org_id is not None:
            await self._complete(str(org_id), bridge_id, at)

    async def _complete(self, org_id: str, bridge_id: str, at: datetime) -> None:
        def work(session: Session) -> bool:
            row = self.rows.locked(session, org_id, bridge_id)
            if row["state"] not in OPEN_BRIDGE_STATES:
                return False
            legs = list(session.execute(select(_c.id).where(_c.bridge_id == bridge_id)).scalars())
            self._release(session, legs, at)
            changes = {"state": BridgeState.COMPLETED.value, "completed_at": at}
            self._change(session, row, changes, "completed", at)
            return True

        if await self._db.run_write(work):
            await self._carrier.close_mix(bridge_id)  # the legs stay up, its plays end

    async def play(self, org_id: str, bridge_id: str, kind: MediaKind, values: Any) -> str:
        media = parse_media(kind, values)
        current = await self.rows.get(org_id, bridge_id)
        if current["state"] not in (BridgeState.ACTIVE.value, BridgeState.HOLD.value):
            raise StaleData(
                f"bridge {bridge_id!r} is {current['state']}: media plays on live bridges"
            )
        return await self._calls.queue_play(org_id, kind, media, bridge_id=bridge_id)

    # -- inside transactions ---------------------------------------------------------------------

    def _claim(
        self, session: Session, org_id: str, bridge_id: str, ids: Sequence[str], now: datetime
    ) -> None:
        """Reserve `ids` for the bridge: each must be the org's, ACTIVE, and in no bridge."""
        query = select(calls_table).where(_c.org_id == org_id, _c.id.in_(list(ids)))
        query = for_update(session, query)
        found = {row["id"]: row for row in session.execute(query).mappings()}
        for call_id in ids:
            row = found.get(call_id)
            if row is None:
                raise NotFound(f"call {call_id!r} not found")
            if row["state"] != CallState.ACTIVE.value:
                raise StaleData(f"call {call_id!r} is {row['state']}: only ACTIVE calls bridge")
            if row["bridge_id"] and row["bridge_id"] != bridge_id:
                raise StaleData(f"call {call_id!r} is already in bridge {row['bridge_id']!r}")
        self._set_bridge(session, ids, bridge_id, now)

    def _release(self, session: Session, ids: Sequence[str], now: datetime) -> None:
        self._set_bridge(session, ids, "", now)

    def _set_bridge(
        self, session: Session, ids: Sequence[str], bridge_id: str, now: datetime
    ) -> None:
        if not ids:
            return
        statement = (
            update(calls_table)
            .where(_c.id.in_(list(ids)))
            .values(bridge_id=bridge_id, updated_at=now, version=_c.version + 1)
            .returning(*calls_table.c)
        )
        for row in session.execute(statement).mappings():
            self._calls.call_event(session, row, "updated", now)

    def _fail(self, session: Session, org_id: str, bridge_id: str, details: str) -> None:
        now = self._clock.now()
        row = self.rows.locked(session, org_id, bridge_id)
        legs = list(session.execute(select(_c.id).where(_c.bridge_id == bridge_id)).scalars())
        self._release(session, legs, now)
        changes = {"state": BridgeState.ERROR.value, "error_details": details[:1024]}
        self._change(session, row, changes, "error", now)

    def _change(
        self, session: Session, row: Row, changes: Mapping[str, Any], what: str, at: datetime
    ) -> None:
        statement = (
            update(bridges_table)
            .where(_b.id == row["id"])
            .values(**changes, updated_at=at, version=_b.version + 1)
            .returning(*bridges_table.c)
        )
        changed = session.execute(statement).mappings().one()
        event = NewEvent(
            changed["org_id"], f"bridge.{what}", changed["id"], bridge_snapshot(changed), at
        )
        self._events.append(session, [event])

    async def _legs(self, bridge_id: str) -> list[str]:
        async with self._db.read() as session:
            query = select(_c.id).where(_c.bridge_id == bridge_id)
            return [str(i) for i in (await session.execute(query)).scalars()]


__all__ = ["BridgeService", "bridge_snapshot"]
