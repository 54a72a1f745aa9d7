"""Lists: exact-match filters, limit/offset paging and keyset page tokens, for every resource.

Documented lists filter by attribute equality. Date attributes also match a whole UTC day when
given as `YYYY-MM-DD`. `limit` (default 100, at most 1000) and `offset` work everywhere; gRPC
clients may instead follow `next_page_token`, a keyset position that stays correct while rows are
added. Results are ordered by id, which is time-ordered (see core.ids).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_

from switchboard.server.core.validation import Checks

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after_id: str | None = None  # keyset: ids greater than this


def page(checks: Checks, limit: int, offset: int, page_token: str) -> Page:
    """The page a request asks for; bad values become violations on `checks`."""
    if limit < 0 or limit > MAX_LIMIT:
        checks.fail("limit", f"must be between 1 and {MAX_LIMIT}", "Range")
    if offset < 0:
        checks.fail("offset", "must not be negative", "Range")
    after_id = None
    if page_token:
        try:
            after_id = base64.urlsafe_b64decode(page_token.encode() + b"==").decode()
            if not after_id.isascii() or not after_id:
                raise ValueError(page_token)
        except ValueError:
            checks.fail("page_token", "is not a token from a previous response")
    return Page(limit=limit or DEFAULT_LIMIT, offset=max(offset, 0), after_id=after_id)


def next_page_token(rows: list[Mapping[str, Any]], page: Page) -> str:
    """A token for the page after `rows` (which held one extra row if there is one), or ""."""
    if len(rows) <= page.limit:
        return ""
    last = rows[page.limit - 1]["id"]
    return base64.urlsafe_b64encode(str(last).encode()).decode().rstrip("=")


def paged(query: Select[Any], table: Table, page: Page) -> Select[Any]:
    """`query` ordered by id and cut to the page, fetching one extra row to detect a next page."""
    query = query.order_by(table.c.id)
    if page.after_id is not None:
        query = query.where(table.c.id > page.after_id)
    elif page.offset:
        query = query.offset(page.offset)
    return query.limit(page.limit + 1)


def _day(value: str) -> tuple[datetime, datetime] | None:
    if len(value) != 10:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def parse_instant(value: str) -> datetime | None:
    """An RFC 3339 time, or the start (UTC) of a `YYYY-MM-DD` day; None if neither."""
    day = _day(value)
    return day[0] if day is not None else _instant(value)


# `2020-01-01T14:00:00+01:00` pasted into a query string arrives with a space for the `+` (form
# encoding): a space before a trailing offset can only have been a plus.
_SPACED_OFFSET = re.compile(r"^(.+T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


def _instant(value: str) -> datetime | None:
    value = _SPACED_OFFSET.sub(r"\1+\2", value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def filters(
    checks: Checks,
    table: Table,
    given: Mapping[str, str],
    *,
    columns: Mapping[str, str] | None = None,
    times: frozenset[str] = frozenset(),
    integers: frozenset[str] = frozenset(),
) -> list[ColumnElement[bool]]:
    """WHERE clauses for the filters a client gave (`given`: filter name → value).

    `columns` renames filters to columns (`created_date` → `created_at`); `times` are timestamp
    columns (a day or an exact instant); `integers` must parse as integers.
    """
    clauses: list[ColumnElement[bool]] = []
    for name, value in given.items():
        column = table.c[(columns or {}).get(name, name)]
        if name in times:
            day = _day(value)
            if day is not None:
                clauses.append(and_(column >= day[0], column < day[1]))
                continue
            instant = _instant(value)
            if instant is None:
                checks.fail(name, "must be a date (YYYY-MM-DD) or an RFC 3339 time", "Format")
                continue
            clauses.append(column == instant)
        elif name in integers:
            try:
                clauses.append(column == int(value))
            except ValueError:
                checks.fail(name, "must be an integer", "Format")
        else:
            clauses.append(column == value)
    return clauses
