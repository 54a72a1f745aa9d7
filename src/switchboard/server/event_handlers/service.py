"""Event handlers of an org: CRUD with validation, secret rotation, the delivery and attempt
logs, and replay jobs. Deliveries themselves are made by the dispatcher (dispatcher.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import NotFound, require_version
from switchboard.server.core.events import EventLog, parse_cursor
from switchboard.server.core.ids import new_id
from switchboard.server.core.models import EventRecord
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.event_handlers import patterns
from switchboard.server.event_handlers.models import (
    DeliveryAttemptRecord,
    EventDeliveryRecord,
    EventHandlerRecord,
    EventReplayRecord,
)
from switchboard.server.event_handlers.signing import SecretBox, new_secret
from switchboard.server.event_handlers.urls import RefusedUrl, parse, resolve

handlers_table = table_of(EventHandlerRecord)
deliveries_table = table_of(EventDeliveryRecord)
attempts_table = table_of(DeliveryAttemptRecord)
replays_table = table_of(EventReplayRecord)
events_table = table_of(EventRecord)
_h = handlers_table.c
_d = deliveries_table.c
_a = attempts_table.c
_r = replays_table.c
_e = events_table.c

MAX_EVENT_TYPES = 50
MAX_GRACE_SECONDS = 7 * 86400
DEFAULT_GRACE_SECONDS = 86400
LIMITS = {"url": 2048, "description": 1024, "channel_id": 64, "application_id": 64}


class HandlerState(StrEnum):
    ACTIVE = "ACTIVE"
    DISABLED = "DISABLED"


class DeliveryState(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"  # an attempt failed; another is scheduled
    DEAD = "DEAD"  # the schedule is exhausted (or the receiver answered 410)


class ReplayState(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


def snapshot(row: Row) -> Snapshot:
    """What the API shows (and events carry): never a secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "event_types": patterns.split(row["event_types"]),
        "channel_id": row["channel_id"],
        "application_id": row["application_id"],
        "state": row["state"],
        "disabled_reason": row["disabled_reason"],
        "description": row["description"],
        "version_number": row["version"],
        "create_time": iso(row["created_at"]),
        "update_time": iso(row["updated_at"]),
    }


def delivery_snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "event_handler_id": row["handler_id"],
        "cursor": str(row["event_seq"]),
        "event_type": row["event_type"],
        "state": row["state"],
        "attempts": row["attempts"],
        "next_attempt_time": iso(row["next_attempt_at"])
        if row["state"] in (DeliveryState.PENDING, DeliveryState.FAILED)
        else None,
        "create_time": iso(row["created_at"]),
        "update_time": iso(row["updated_at"]),
    }


def attempt_snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "delivery_id": row["delivery_id"],
        "event_handler_id": row["handler_id"],
        "status_code": row["status_code"],
        "succeeded": row["succeeded"],
        "latency_ms": row["latency_ms"],
        "response_excerpt": row["response_excerpt"],
        "error": row["error"],
        "create_time": iso(row["created_at"]),
    }


def replay_snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "event_handler_id": row["handler_id"],
        "state": row["state"],
        "events_total": row["events_total"],
        "events_queued": row["events_queued"],
        "failure_details": row["failure_details"],
        "create_time": iso(row["created_at"]),
        "update_time": iso(row["updated_at"]),
    }


class EventHandlerService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        box: SecretBox,
        allow_private_urls: bool,
    ) -> None:
        self._db = db
        self._clock = clock
        self.box = box
        self.allow_private_urls = allow_private_urls
        self.rows = OrgTable(
            db=db,
            events=events,
            table=handlers_table,
            noun="event handler",
            event_prefix="event_handler",
            snapshot=snapshot,
        )
        self.deliveries = OrgTable(
            db=db,
            events=events,
            table=deliveries_table,
            noun="event delivery",
            event_prefix="event_delivery",
            snapshot=delivery_snapshot,
        )
        self.attempts = OrgTable(
            db=db,
            events=events,
            table=attempts_table,
            noun="delivery attempt",
            event_prefix="delivery_attempt",
            snapshot=attempt_snapshot,
        )
        self.replays = OrgTable(
            db=db,
            events=events,
            table=replays_table,
            noun="event replay",
            event_prefix="event_replay",
            snapshot=replay_snapshot,
        )

    # -- validation -------------------------------------------------------------------------------

    def _validate(self, values: Mapping[str, Any], *, whole: bool) -> dict[str, Any]:
        checks = Checks()
        changes: dict[str, Any] = {}
        url = values.get("url")
        if (url is not None or whole) and checks.required("url", url):
            checks.length("url", url, LIMITS["url"])
            if checks.ok("url"):
                try:
                    parse(str(url), allow_private=self.allow_private_urls)
                except RefusedUrl as exc:
                    checks.fail("url", str(exc), "Invalid")
            changes["url"] = str(url).strip()
        types = values.get("event_types")
        if types is not None or whole:
            given = [str(t).strip() for t in (types or [])]
            if not given:
                checks.fail("event_types", "is required", "Required")
            elif len(given) > MAX_EVENT_TYPES:
                checks.fail("event_types", f"has more than {MAX_EVENT_TYPES} patterns", "Range")
            else:
                for index, pattern in enumerate(given):
                    if not patterns.valid_pattern(pattern):
                        checks.fail(
                            f"event_types[{index}]",
                            "must be an event type, `<prefix>.*` or `*`",
                            "Format",
                        )
            changes["event_types"] = patterns.join(dict.fromkeys(given))
        for name in ("channel_id", "application_id", "description"):
            value = values.get(name)
            if value is not None:
                checks.length(name, value, LIMITS[name])
                changes[name] = value.strip()
        state = values.get("state")
        if state is not None:
            choice = checks.choice("state", state, HandlerState)
            if choice is not None:
                changes["state"] = choice.value
        checks.raise_if_failed()
        return changes

    async def _check_resolved(self, changes: Mapping[str, Any]) -> None:
        """Refuse a URL whose host resolves to a refused address now. A name that does not
        resolve yet is accepted: every attempt resolves and checks it again."""
        url = changes.get("url")
        if url is None or self.allow_private_urls:
            return
        try:
            await resolve(url, allow_private=False)
        except RefusedUrl as exc:
            if "does not resolve" in str(exc):
                return
            checks = Checks()
            checks.fail("url", str(exc), "Invalid")
            checks.raise_if_failed()

    # -- writes -----------------------------------------------------------------------------------

    async def create(self, org_id: str, values: Mapping[str, Any]) -> tuple[str, str]:
        """The new handler's id and its secret (the only time it is shown, with rotate)."""
        changes = self._validate(values, whole=True)
        await self._check_resolved(changes)
        secret = new_secret()
        now = self._clock.now()
        row = {
            "channel_id": "",
            "application_id": "",
            "description": "",
            "state": HandlerState.ACTIVE.value,
        } | changes
        row |= {
            "id": new_id("evh_"),
            "org_id": org_id,
            "disabled_reason": "",
            "secret_sealed": self.box.seal(secret),
            "previous_secret_sealed": "",
            "previous_secret_until": None,
            "failing_since": None,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

        def work(session: Session) -> None:
            session.execute(insert(handlers_table).values(row))
            self.rows.event(session, "created", row, now)

        await self.rows.write(work)
        return str(row["id"]), secret

    async def update(
        self,
        org_id: str,
        handler_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
    ) -> None:
        changes = self._validate(values, whole=False)
        await self._check_resolved(changes)
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, handler_id)
            require_version(current["version"], expected_version, "event handler")
            row = dict(current) | changes
            if changes.get("state") == HandlerState.ACTIVE and current["state"] != "ACTIVE":
                row |= {"disabled_reason": "", "failing_since": None}
            elif changes.get("state") == HandlerState.DISABLED and current["state"] == "ACTIVE":
                row["disabled_reason"] = "disabled by the client"
            row |= {"updated_at": now, "version": current["version"] + 1}
            session.execute(update(handlers_table).where(_h.id == handler_id).values(row))
            self.rows.event(session, "updated", row, now)

        await self.rows.write(work)

    async def delete(self, org_id: str, handler_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, handler_id)
            session.execute(delete(attempts_table).where(_a.handler_id == handler_id))
            session.execute(delete(deliveries_table).where(_d.handler_id == handler_id))
            session.execute(delete(replays_table).where(_r.handler_id == handler_id))
            session.execute(delete(handlers_table).where(_h.id == handler_id))
            self.rows.event(session, "deleted", current, now)

        await self.rows.write(work)

    async def rotate(self, org_id: str, handler_id: str, grace_seconds: int | None) -> str:
        """A new secret; the current one keeps signing for `grace_seconds` (default a day)."""
        grace = DEFAULT_GRACE_SECONDS if grace_seconds is None else grace_seconds
        if not 0 <= grace <= MAX_GRACE_SECONDS:
            checks = Checks()
            checks.fail("grace_seconds", f"must be between 0 and {MAX_GRACE_SECONDS}", "Range")
            checks.raise_if_failed()
        secret = new_secret()
        sealed = self.box.seal(secret)
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, handler_id)
            row = dict(current) | {
                "secret_sealed": sealed,
                "previous_secret_sealed": current["secret_sealed"] if grace else "",
                "previous_secret_until": now + timedelta(seconds=grace) if grace else None,
                "updated_at": now,
                "version": current["version"] + 1,
            }
            session.execute(update(handlers_table).where(_h.id == handler_id).values(row))
            self.rows.event(session, "secret_rotated", row, now)

        await self.rows.write(work)
        return secret

    # -- lists ------------------------------------------------------------------------------------

    async def list_handlers(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[Snapshot], str]:
        filters = dict(given)
        extra = []
        event_type = filters.pop("event_type", None)
        if event_type is not None:
            parts = event_type.split(".")
            wanted = ["*", event_type] + [".".join(parts[:i]) + ".*" for i in range(1, len(parts))]
            extra.append(or_(*(_h.event_types.contains(f",{p},", autoescape=True) for p in wanted)))
        return await self.rows.list_page(org_id, filters, page, checks, extra=tuple(extra))

    async def list_deliveries(
        self,
        org_id: str,
        handler_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
    ) -> tuple[list[Snapshot], str]:
        await self.rows.row(org_id, handler_id)  # 404 for another org's handler
        filters = dict(given)
        extra = [_d.handler_id == handler_id]
        for name, column in (("after", _d.event_seq.__gt__), ("before", _d.event_seq.__lt__)):
            value = filters.pop(name, None)
            if value is not None:
                try:
                    extra.append(column(parse_cursor(value)))
                except Exception:
                    checks.fail(name, "must be a decimal event cursor", "Format")
        return await self.deliveries.list_page(org_id, filters, page, checks, extra=tuple(extra))

    async def list_attempts(
        self,
        org_id: str,
        handler_id: str,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
    ) -> tuple[list[Snapshot], str]:
        await self.rows.row(org_id, handler_id)
        filters = dict(given)
        extra = [_a.handler_id == handler_id]
        succeeded = filters.pop("succeeded", None)
        if succeeded is not None:
            if succeeded.lower() not in ("true", "false"):
                checks.fail("succeeded", "must be true or false", "Format")
            else:
                extra.append(_a.succeeded == (succeeded.lower() == "true"))
        return await self.attempts.list_page(org_id, filters, page, checks, extra=tuple(extra))

    # -- replays ----------------------------------------------------------------------------------

    async def create_replay(self, org_id: str, handler_id: str, values: Mapping[str, Any]) -> str:
        checks = Checks()
        after = values.get("after_cursor")
        until_cursor = values.get("until_cursor")
        since_text = values.get("since")
        until_text = values.get("until")
        by_cursor = after is not None or until_cursor is not None
        by_time = since_text is not None or until_text is not None
        if by_cursor and by_time:
            checks.fail("since", "give a cursor range or a time range, not both", "Invalid")
        if not by_cursor and not by_time:
            checks.fail("after_cursor", "give after_cursor or since", "Required")
        position = 0
        until_seq: int | None = None
        since: datetime | None = None
        until: datetime | None = None
        for name, text in (("after_cursor", after), ("until_cursor", until_cursor)):
            if text is not None:
                try:
                    value = parse_cursor(str(text))
                except Exception:
                    checks.fail(name, "must be a decimal event cursor", "Format")
                    continue
                if name == "after_cursor":
                    position = value
                else:
                    until_seq = value
        for name, text in (("since", since_text), ("until", until_text)):
            if text is not None:
                instant = listing.parse_instant(str(text))
                if instant is None:
                    checks.fail(name, "must be an RFC 3339 time", "Format")
                elif name == "since":
                    since = instant
                else:
                    until = instant
        if until_seq is not None and until_seq < position:
            checks.fail("until_cursor", "must not be before after_cursor", "Range")
        checks.raise_if_failed()
        now = self._clock.now()
        replay_id = new_id("evr_")

        def work(session: Session) -> None:
            self.rows.locked(session, org_id, handler_id)
            last = session.execute(select(func.max(_e.seq))).scalar() or 0
            start = position
            if since is not None:
                first = session.execute(
                    select(func.min(_e.seq)).where(_e.org_id == org_id, _e.occurred_at >= since)
                ).scalar()
                start = (first - 1) if first is not None else last
            session.execute(
                insert(replays_table).values(
                    id=replay_id,
                    org_id=org_id,
                    handler_id=handler_id,
                    state=ReplayState.RUNNING.value,
                    position=start,
                    until_seq=min(until_seq, last) if until_seq is not None else last,
                    since=since,
                    until=until,
                    only_failed=bool(values.get("only_failed")),
                    events_total=0,
                    events_queued=0,
                    failure_details="",
                    lease_until=None,
                    created_at=now,
                    updated_at=now,
                )
            )

        await self.rows.write(work)
        return replay_id

    async def get_replay(self, org_id: str, handler_id: str, replay_id: str) -> Snapshot:
        row = await self.replays.row(org_id, replay_id)
        if row["handler_id"] != handler_id:
            raise NotFound(f"event replay {replay_id!r} not found")
        return replay_snapshot(row)
