"""Short URLs: per-org links with a deployment-wide unique code, and the public redirect.

Codes are case-sensitive: a client's custom suffix (1 to 64 of `A-Z a-z 0-9 - _`; 409 when any
org already uses it) or a random base62 code of `length` characters (4 to 32, default 7). Short
links made for a communication's Link arguments carry its id, so the `short_url.clicked` event of
every redirect says which communication the click came from.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.server.communications.models import ShortUrlRecord
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import NotFound, UniqueKeyViolated
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks

LONG_URL_MAX = 2048
DEFAULT_LENGTH = 7
MIN_LENGTH, MAX_LENGTH = 4, 32
LINK_CODE_LENGTH = 8  # codes made for communications' links
CLICKED = "short_url.clicked"
_ALPHABET = string.ascii_letters + string.digits
_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_ATTEMPTS = 5

_table = table_of(ShortUrlRecord)
_c = _table.c
_TIME_FILTERS = {
    "updated_time_eq": "eq",
    "updated_time_gt": "gt",
    "updated_time_gte": "gte",
    "updated_time_lt": "lt",
    "updated_time_lte": "lte",
}
_JSON_NAMES = {
    "updated_time_eq": "updatedTime[eq]",
    "updated_time_gt": "updatedTime[gt]",
    "updated_time_gte": "updatedTime[gte]",
    "updated_time_lt": "updatedTime[lt]",
    "updated_time_lte": "updatedTime[lte]",
}


def random_code(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class NewShortUrl:
    """A short URL to insert inside a caller's transaction (a communication's links)."""

    code: str
    long_url: str
    communication_id: str = ""
    message_id: str = ""  # a tracked link of one message (message requests' track_links)


MessageClick = Callable[[Session, str, str, datetime], None]


class ShortUrlService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        base_url: str,
        on_message_click: MessageClick | None = None,
    ) -> None:
        # Messaging's hook: a tracked link of a message was clicked (in the click's transaction).
        self.on_message_click = on_message_click
        self._db = db
        self._events = events
        self._clock = clock
        self.base_url = base_url.rstrip("/")

    def link(self, code: str) -> str:
        return f"{self.base_url}/s/{code}"

    def snapshot(self, row: Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "code": row["code"],
            "short_url": self.link(row["code"]),
            "long_url": row["long_url"],
            "custom_suffix": bool(row["custom_suffix"]),
            "communication_id": row["communication_id"],
            "click_count": row["click_count"],
            "updated_agent": row["updated_agent"],
            "created_time": iso(row["created_at"]),
            "updated_time": iso(row["updated_at"]),
        }

    # ---- writes ---------------------------------------------------------------------------

    async def create(
        self, org_id: str, agent: str, long_url: str, custom_suffix: str, length: int
    ) -> dict[str, Any]:
        checks = Checks()
        long_url = long_url.strip()
        if checks.required("longUrl", long_url):
            if len(long_url) > LONG_URL_MAX:
                checks.fail("longUrl", f"is longer than {LONG_URL_MAX} characters", "Length")
            elif not _URL.match(long_url):
                checks.fail("longUrl", "must be an http(s) URL", "Format")
        suffix = custom_suffix.strip()
        if suffix and not _SUFFIX.match(suffix):
            checks.fail("customSuffix", "must be 1 to 64 letters, digits, '-' or '_'", "Format")
        if length and not MIN_LENGTH <= length <= MAX_LENGTH:
            checks.fail("length", f"must be between {MIN_LENGTH} and {MAX_LENGTH}", "Range")
        checks.raise_if_failed()
        for _ in range(_ATTEMPTS):
            code = suffix or random_code(length or DEFAULT_LENGTH)
            now = self._clock.now()
            row = {
                "id": new_id("sur_"),
                "org_id": org_id,
                "code": code,
                "long_url": long_url,
                "custom_suffix": bool(suffix),
                "communication_id": "",
                "click_count": 0,
                "created_agent": agent,
                "updated_agent": agent,
                "created_at": now,
                "updated_at": now,
            }

            def work(session: Session, row: dict[str, Any] = row) -> bool:
                taken = (
                    session.connection()
                    .execute(select(_c.id).where(_c.code == row["code"]))
                    .first()
                )
                if taken is not None:
                    return False
                session.connection().execute(insert(_table), row)
                return True

            try:
                inserted = await self._db.run_write(work)
            except IntegrityError:  # another replica took the code since we looked
                inserted = False
            if inserted:
                return self.snapshot(row)
            if suffix:
                raise UniqueKeyViolated(
                    f"the short URL suffix {suffix!r} is already in use",
                    metadata={"field": "customSuffix"},
                )
        raise UniqueKeyViolated("could not find a free short code; try a longer length")

    def insert_for_communication(
        self, session: Session, org_id: str, agent: str, links: Sequence[NewShortUrl], now: datetime
    ) -> None:
        """Inside the communication's transaction. Random 8-character codes: a collision (one in
        about 10^14 per pair) fails the transaction, and the caller retries with new codes."""
        if not links:
            return
        session.connection().execute(
            insert(_table),
            [
                {
                    "id": new_id("sur_"),
                    "org_id": org_id,
                    "code": link.code,
                    "long_url": link.long_url,
                    "custom_suffix": False,
                    "communication_id": link.communication_id,
                    "message_id": link.message_id,
                    "click_count": 0,
                    "created_agent": agent,
                    "updated_agent": agent,
                    "created_at": now,
                    "updated_at": now,
                }
                for link in links
            ],
        )

    async def follow(self, code: str) -> str:
        """The long URL of `code`, counting the click and appending its event."""

        def work(session: Session) -> str | None:
            connection = session.connection()
            row = connection.execute(select(_table).where(_c.code == code)).mappings().first()
            if row is None:
                return None
            now = self._clock.now()
            connection.execute(
                update(_table).where(_c.id == row["id"]).values(click_count=_c.click_count + 1)
            )
            payload = {
                "id": row["id"],
                "code": row["code"],
                "long_url": row["long_url"],
                "communication_id": row["communication_id"],
                "click_count": row["click_count"] + 1,
                "clicked_time": iso(now),
            }
            self._events.append(
                session, [NewEvent(row["org_id"], CLICKED, row["id"], payload, now)]
            )
            if row["message_id"] and self.on_message_click is not None:
                self.on_message_click(session, row["org_id"], row["message_id"], now)
            return str(row["long_url"])

        target = await self._db.run_write(work) if code else None
        if target is None:
            raise NotFound(f"no short URL {code!r}")
        return target

    # ---- reads ----------------------------------------------------------------------------

    async def search(
        self,
        org_id: str,
        given: Mapping[str, Any],
        *,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        checks = Checks()
        page = listing.page(checks, limit, offset, "")
        clauses: list[ColumnElement[bool]] = [_c.org_id == org_id]
        if "custom_suffix" in given:
            clauses.append(_c.custom_suffix == bool(given["custom_suffix"]))
        for name in ("long_url", "updated_agent"):
            if name in given:
                clauses.append(_c[name] == given[name])
        for name, op in _TIME_FILTERS.items():
            if name not in given:
                continue
            clause = _time_clause(checks, _JSON_NAMES[name], op, str(given[name]))
            if clause is not None:
                clauses.append(clause)
        checks.raise_if_failed()
        query = listing.paged(select(_table).where(*clauses), _table, page)
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        return [self.snapshot(r) for r in rows[: page.limit]]

    async def get_many(self, org_id: str, communication_id: str) -> list[dict[str, Any]]:
        query = (
            select(_table)
            .where(_c.org_id == org_id, _c.communication_id == communication_id)
            .order_by(_c.id)
        )
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())
        return [self.snapshot(r) for r in rows]

    async def get_by_code(self, code: str) -> Row | None:
        async with self._db.read() as session:
            query = select(_table).where(_c.code == code)
            return (await session.execute(query)).mappings().first()


def _time_clause(checks: Checks, field: str, op: str, value: str) -> ColumnElement[bool] | None:
    column = _c.updated_at
    if op == "eq" and len(value) == 10:
        day = listing.parse_instant(value)
        if day is None:
            checks.fail(field, "must be a date (YYYY-MM-DD) or an RFC 3339 time", "Format")
            return None
        return (column >= day) & (column < day + timedelta(days=1))
    instant = listing.parse_instant(value)
    if instant is None:
        checks.fail(field, "must be an RFC 3339 time (or YYYY-MM-DD)", "Format")
        return None
    operations: dict[str, ColumnElement[bool]] = {
        "eq": column == instant,
        "gt": column > instant,
        "gte": column >= instant,
        "lt": column < instant,
        "lte": column <= instant,
    }
    return operations[op]
