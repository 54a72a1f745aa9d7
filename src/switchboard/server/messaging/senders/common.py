"""Helpers shared by the senders area: `,a,b,` list columns and their filters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import ColumnElement, Table

from switchboard.server.core import listing
from switchboard.server.core.validation import Checks


def split_items(values: Iterable[str], *, upper: bool = False) -> list[str]:
    """Entries of a repeated field whose items may also be comma-separated (form bodies)."""
    items: list[str] = []
    for value in values:
        for part in value.split(","):
            item = part.strip()
            if item:
                item = item.upper() if upper else item
                if item not in items:
                    items.append(item)
    return items


def pack(items: Iterable[str]) -> str:
    """A list as stored: `,a,b,` (empty string for no items)."""
    listed = [i for i in items if i]
    return "," + ",".join(listed) + "," if listed else ""


def unpack(text: str | None) -> list[str]:
    return [i for i in (text or "").split(",") if i]


def list_filters(
    checks: Checks,
    table: Table,
    given: Mapping[str, str],
    *,
    contains: frozenset[str],
    times: frozenset[str] = frozenset({"created_date", "last_updated_date"}),
    integers: frozenset[str] = frozenset(),
    booleans: frozenset[str] = frozenset(),
) -> list[ColumnElement[bool]]:
    """listing.filters plus list-membership filters (`contains`) and booleans."""
    columns = {"created_date": "created_at", "last_updated_date": "updated_at"}
    plain = {k: v for k, v in given.items() if k not in contains and k not in booleans}
    if "version_number" in plain:
        columns["version_number"] = "version"
    clauses = listing.filters(checks, table, plain, columns=columns, times=times, integers=integers)
    for name in contains & given.keys():
        value = given[name].strip()
        if "," in value or not value:
            checks.fail(name, "must be a single value", "Format")
            continue
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(table.c[name].like(f"%,{escaped},%", escape="\\"))
    for name in booleans & given.keys():
        text = given[name].strip().lower()
        if text not in ("true", "false"):
            checks.fail(name, "must be true or false", "Format")
            continue
        clauses.append(table.c[name] == (text == "true"))
    return clauses
