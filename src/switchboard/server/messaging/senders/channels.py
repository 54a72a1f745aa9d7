"""Channels: named groups of the org's sender IDs with a delivery priority (high, normal, low).

Sender IDs join with `POST /messaging/channels/{id}/sender_ids` (body `sender_ids` and/or
`sender_id`; adding one already there is a no-op) and leave with
`DELETE /messaging/channels/{id}/sender_ids?sender_id=…`. Only the org's own sender IDs (its
PRIVATE senders and its copies of SHARED or purchased ones) can join; others are 404. Deleting a
sender removes it from its channels; deleting a channel leaves its senders alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import (
    FieldViolation,
    NotFound,
    UniqueKeyViolated,
    require_version,
    validation_error,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks
from switchboard.server.messaging.senders.common import list_filters, split_items
from switchboard.server.messaging.senders.models import (
    ChannelOwnership,
    ChannelPriority,
    ChannelRecord,
)
from switchboard.server.messaging.senders.service import SenderService, channel_senders, senders

channels = table_of(ChannelRecord)
_c = channels.c
_cs = channel_senders.c
MAX_SENDERS_PER_CALL = 100

#: Whether an event (type, resource id, payload) is about one channel.
ChannelPredicate = Callable[[str, str, Mapping[str, Any]], bool]


def about_channel(channel_id: str, sender_ids: frozenset[str]) -> ChannelPredicate:
    """The one rule for "events about messages sent through this channel", used by the messaging
    stream's `channel_id` filter and by event handlers' channel scope: the channel's own events;
    messages from one of its sender IDs (as they are now); requests `from` the channel or one of
    its senders; keyword events of its senders."""

    def about(event_type: str, resource_id: str, payload: Mapping[str, Any]) -> bool:
        if event_type.startswith("channel."):
            return resource_id == channel_id
        if payload.get("channel_id") == channel_id:
            return True
        if event_type.startswith("keyword."):
            return payload.get("sender_id") in sender_ids
        if event_type.startswith("message_request."):
            source = str(payload.get("from") or "")
            return source == f"channel-{channel_id}" or _sender_of(source) in sender_ids
        return payload.get("customer_sender_id") in sender_ids

    return about


def _sender_of(source: str) -> str:
    """A request's `from` (`sender_id:<id>`, `sender_id-<id>` or a bare id) as a sender id."""
    for prefix in ("sender_id:", "sender_id-"):
        if source.startswith(prefix):
            return source[len(prefix) :]
    return source


def channel_scope(session: Session, org_id: str, channel_id: str) -> ChannelPredicate:
    """`about_channel` for the org's channel as it is now, inside a caller's transaction (a
    channel of another org, or none, has no sender IDs: only its own events match)."""
    sender_ids = frozenset(
        str(sender_id)
        for sender_id in session.execute(
            select(_cs.sender_id)
            .join(channels, _c.id == _cs.channel_id)
            .where(_cs.channel_id == channel_id, _c.org_id == org_id)
        ).scalars()
    )
    return about_channel(channel_id, sender_ids)


def snapshot(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "priority": row["priority"],
        "description": row["description"],
        "ownership": row["ownership"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def _validate(values: Mapping[str, Any], current: Row | None, *, replace: bool) -> dict[str, Any]:
    checks = Checks()
    changes: dict[str, Any] = {}
    if replace or current is None:
        changes = {"priority": "normal", "description": "", "ownership": "PRIVATE"}
    if "name" in values:
        checks.length("name", values["name"], 256)
        changes["name"] = str(values["name"]).strip()
    if "priority" in values:
        priority = checks.choice("priority", str(values["priority"]), ChannelPriority)
        if priority is not None:
            changes["priority"] = priority.value
    if "description" in values:
        checks.length("description", values["description"], 1024)
        changes["description"] = str(values["description"])
    if "ownership" in values:
        ownership = checks.choice("ownership", str(values["ownership"]), ChannelOwnership)
        if ownership is not None:
            changes["ownership"] = ownership.value
    name = changes.get("name", current["name"] if current is not None and not replace else "")
    if not name:
        checks.fail("name", "is required", "Required")
    checks.raise_if_failed()
    return changes


class ChannelService:
    def __init__(
        self, db: Database, events: EventLog, clock: Clock, sender_service: SenderService
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._senders = sender_service
        self.rows = OrgTable(
            db=db,
            events=events,
            table=channels,
            noun="channel",
            event_prefix="channel",
            snapshot=snapshot,
            unique_message="the org already has a channel with this name",
        )

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[dict[str, Any]], str]:
        if "priority" in given:
            given = {**given, "priority": given["priority"].lower()}
        clauses = list_filters(checks, channels, given, contains=frozenset())
        checks.raise_if_failed()
        query = listing.paged(select(channels).where(_c.org_id == org_id, *clauses), channels, page)
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        return [snapshot(r) for r in rows[: page.limit]], listing.next_page_token(rows, page)

    async def get(self, org_id: str, channel_id: str) -> dict[str, Any]:
        return await self.rows.get(org_id, channel_id)

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        changes = _validate(values, None, replace=False)
        now = self._clock.now()
        row = {
            **changes,
            "id": new_id("chn_"),
            "org_id": org_id,
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

        def work(session: Session) -> str:
            self._require_free_name(session, org_id, row["name"], None)
            session.execute(insert(channels).values(row))
            self.rows.event(session, "created", row, now)
            return str(row["id"])

        return await self.rows.write(work)

    async def update(
        self,
        org_id: str,
        channel_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
        *,
        replace: bool = False,
    ) -> str:
        now = self._clock.now()

        def work(session: Session) -> str:
            current = self.rows.locked(session, org_id, channel_id)
            require_version(current["version"], expected_version, "channel")
            changes = _validate(values, current, replace=replace)
            if "name" in changes and changes["name"] != current["name"]:
                self._require_free_name(session, org_id, changes["name"], channel_id)
            self._change(session, current, changes, now, "updated")
            return channel_id

        return await self.rows.write(work)

    async def delete(self, org_id: str, channel_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, channel_id)
            session.execute(delete(channel_senders).where(_cs.channel_id == channel_id))
            session.execute(delete(channels).where(_c.id == channel_id))
            self.rows.event(session, "deleted", current, now)

        await self._db.run_write(work)

    # -- the channel's sender IDs --------------------------------------------------------------

    async def list_senders(
        self,
        org_id: str,
        channel_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
    ) -> tuple[list[dict[str, Any]], str]:
        await self.rows.row(org_id, channel_id)
        member = senders.c.id.in_(select(_cs.sender_id).where(_cs.channel_id == channel_id))
        return await self._senders.list_page(
            org_id, given, page, checks, extra=[member, senders.c.org_id == org_id]
        )

    async def sender_ids(self, org_id: str, channel_id: str) -> frozenset[str]:
        """The ids of the channel's sender IDs now (404 if the org has no such channel)."""
        await self.rows.row(org_id, channel_id)
        async with self._db.read() as session:
            rows = await session.execute(select(_cs.sender_id).where(_cs.channel_id == channel_id))
            return frozenset(str(r[0]) for r in rows)

    async def add_senders(self, org_id: str, channel_id: str, sender_ids: Sequence[str]) -> str:
        wanted = _sender_ids(sender_ids, "sender_ids")
        now = self._clock.now()

        def work(session: Session) -> str:
            current = self.rows.locked(session, org_id, channel_id)
            found = set(
                session.execute(
                    select(senders.c.id).where(senders.c.id.in_(wanted), senders.c.org_id == org_id)
                ).scalars()
            )
            missing = [s for s in wanted if s not in found]
            if missing:
                raise NotFound(f"sender ID {missing[0]!r} not found")
            present = set(
                session.execute(
                    select(_cs.sender_id).where(
                        _cs.channel_id == channel_id, _cs.sender_id.in_(wanted)
                    )
                ).scalars()
            )
            new = [s for s in wanted if s not in present]
            if new:
                top = session.execute(
                    select(func.max(_cs.position)).where(_cs.channel_id == channel_id)
                ).scalar()
                start = (top or 0) + 1
                session.execute(
                    insert(channel_senders),
                    [
                        {
                            "channel_id": channel_id,
                            "sender_id": s,
                            "position": start + i,
                            "created_at": now,
                        }
                        for i, s in enumerate(new)
                    ],
                )
                self._members_event(session, current, "sender_ids_added", new, now)
            return channel_id

        return await self._db.run_write(work)

    async def remove_senders(self, org_id: str, channel_id: str, sender_ids: Sequence[str]) -> None:
        wanted = _sender_ids(sender_ids, "sender_id")
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, channel_id)
            present = set(
                session.execute(
                    select(_cs.sender_id).where(
                        _cs.channel_id == channel_id, _cs.sender_id.in_(wanted)
                    )
                ).scalars()
            )
            missing = [s for s in wanted if s not in present]
            if missing:
                raise NotFound(f"sender ID {missing[0]!r} is not in channel {channel_id!r}")
            session.execute(
                delete(channel_senders).where(
                    _cs.channel_id == channel_id, _cs.sender_id.in_(wanted)
                )
            )
            self._members_event(session, current, "sender_ids_removed", wanted, now)

        await self._db.run_write(work)

    # -- internals -----------------------------------------------------------------------------

    def _require_free_name(
        self, session: Session, org_id: str, name: str, channel_id: str | None
    ) -> None:
        owner = session.execute(select(_c.id).where(_c.org_id == org_id, _c.name == name)).scalar()
        if owner is not None and owner != channel_id:
            raise UniqueKeyViolated(
                f"name {name!r} is already used by channel {owner}", metadata={"field": "name"}
            )

    def _change(
        self, session: Session, current: Row, changes: Mapping[str, Any], now: datetime, what: str
    ) -> Row:
        row = dict(current) | dict(changes) | {"updated_at": now, "version": current["version"] + 1}
        session.execute(
            update(channels)
            .where(_c.id == current["id"])
            .values({k: v for k, v in row.items() if k not in ("id", "org_id")})
        )
        self.rows.event(session, what, row, now)
        return row

    def _members_event(
        self, session: Session, channel: Row, what: str, sender_ids: list[str], now: datetime
    ) -> None:
        payload = snapshot(channel) | {"sender_ids": sender_ids}
        self._events.append(
            session, [NewEvent(channel["org_id"], f"channel.{what}", channel["id"], payload, now)]
        )


def _sender_ids(values: Sequence[str], field: str) -> list[str]:
    ids = split_items(values)
    if not ids:
        raise validation_error([FieldViolation(field, "give at least one sender id", "Required")])
    if len(ids) > MAX_SENDERS_PER_CALL:
        raise validation_error(
            [FieldViolation(field, f"at most {MAX_SENDERS_PER_CALL} per call", "Range")]
        )
    for sender_id in ids:
        if len(sender_id) > 64:
            raise validation_error(
                [FieldViolation(field, "is longer than 64 characters", "Length")]
            )
    return ids


__all__ = ["ChannelService", "snapshot"]
