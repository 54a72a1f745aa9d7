"""Fast access rules: JSONPath from a contact's data into one of 20 indexed slots.

A rule with a `value_derivation_script` derives its slot from the contact whenever the contact is
written, and for every contact of the org when the rule itself changes (a background pass, see
ContactMaintenance). A rule without one makes its slot client-editable through the contact's
`fast_access` object. Values land in `Contact.fast_access` under the rule's name and in the
`fast_access_N` column, where criteria and filters can use them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.parser import parse as parse_jsonpath
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.contacts.models import FAST_ACCESS_SLOTS, FastAccessRuleRecord
from switchboard.server.contacts.repository import contacts
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import UniqueKeyViolated, require_version
from switchboard.server.core.events import EventLog
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.validation import Checks

rules_table = table_of(FastAccessRuleRecord)
_r = rules_table.c

SLOTS = tuple(f"fast_access_{n}" for n in range(1, FAST_ACCESS_SLOTS + 1))
SLOT_VALUE_MAX = 256


@dataclass(frozen=True)
class Rule:
    slot: str  # fast_access_N
    name: str  # key inside Contact.fast_access
    script: str  # JSONPath, or "" for a client-editable slot


@functools.lru_cache(maxsize=1024)
def compiled(script: str) -> Any:
    return parse_jsonpath(script)


def script_error(script: str) -> str | None:
    try:
        compiled(script)
    except (
        JsonPathLexerError,
        JsonPathParserError,
        Exception,
    ) as exc:  # the library raises bare Exception too
        return f"is not a valid JSONPath expression: {exc}"
    return None


def _slot_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:SLOT_VALUE_MAX]


def derive(
    rules: Sequence[Rule], document: Mapping[Any, Any], edits: Mapping[Any, Any]
) -> dict[str, Any]:
    """The contact's fast access columns: `fast_access` (name → value) and every slot column.

    `document` is the contact with its JSON fields parsed; `edits` the client's values for
    editable slots (by name), applied over the values it already had (`document["fast_access"]`).
    """
    previous = document.get("fast_access") or {}
    values: dict[str, Any] = {}
    columns: dict[str, Any] = dict.fromkeys(SLOTS)
    for rule in rules:
        if rule.script:
            matches = compiled(rule.script).find(document)
            value = matches[0].value if matches else None
        else:
            value = edits.get(rule.name, previous.get(rule.name))
        if value is not None:
            values[rule.name] = value
        columns[rule.slot] = _slot_text(value)
    columns["fast_access"] = values or None
    return columns


def snapshot(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "target_attribute": row["target_attribute"],
        "target_attribute_name": row["target_attribute_name"],
        "value_derivation_script": row["value_derivation_script"],
        "user_data": row["user_data"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


class FastAccessService:
    def __init__(self, db: Database, events: EventLog, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self.rows = OrgTable(
            db=db,
            events=events,
            table=rules_table,
            noun="fast access rule",
            event_prefix="fast_access_rule",
            snapshot=snapshot,
            unique_message="target_attribute or target_attribute_name is taken",
        )

    # -- used inside contact writes ------------------------------------------------------------

    def rules(self, session: Session, org_id: str) -> list[Rule]:
        query = select(_r.target_attribute, _r.target_attribute_name, _r.value_derivation_script)
        rows = session.execute(query.where(_r.org_id == org_id).order_by(_r.target_attribute))
        return [Rule(slot=r[0], name=r[1], script=r[2]) for r in rows]

    # -- the rules resource --------------------------------------------------------------------

    def _validate(self, values: Mapping[Any, Any], *, creating: bool) -> dict[str, Any]:
        checks = Checks()
        changes: dict[str, Any] = {}
        slot = values.get("target_attribute")
        if creating and not checks.required("target_attribute", slot):
            slot = None
        if slot is not None:
            if slot not in SLOTS:
                checks.fail("target_attribute", "must be fast_access_1 .. fast_access_20")
            changes["target_attribute"] = slot
        if "target_attribute_name" in values:
            name = values["target_attribute_name"].strip()
            checks.length("target_attribute_name", name, 128)
            if name and (name in SLOTS and name != slot):
                checks.fail("target_attribute_name", "may not be another slot's name")
            changes["target_attribute_name"] = name
        if "value_derivation_script" in values:
            script = values["value_derivation_script"].strip()
            checks.length("value_derivation_script", script, 1024)
            error = (
                script_error(script) if script and checks.ok("value_derivation_script") else None
            )
            if error:
                checks.fail("value_derivation_script", error, "Format")
            changes["value_derivation_script"] = script
        if "user_data" in values:
            checks.length("user_data", values["user_data"], 4096)
            changes["user_data"] = values["user_data"]
        checks.raise_if_failed()
        return changes

    async def create(self, org_id: str, application_id: str, values: Mapping[Any, Any]) -> str:
        changes = self._validate(values, creating=True)
        now = self._clock.now()
        rule_id = new_id("far_")
        row = {
            "id": rule_id,
            "org_id": org_id,
            "target_attribute": changes["target_attribute"],
            "target_attribute_name": changes.get("target_attribute_name")
            or changes["target_attribute"],
            "value_derivation_script": changes.get("value_derivation_script", ""),
            "user_data": changes.get("user_data", ""),
            "reapply_pending": True,
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

        def work(session: Session) -> None:
            self._check_unique(session, org_id, row, exclude=None)
            session.execute(rules_table.insert().values(row))
            self.rows.event(session, "created", row, now)

        await self.rows.write(work)
        return rule_id

    async def update(
        self,
        org_id: str,
        rule_id: str,
        values: Mapping[Any, Any],
        expected_version: int | None,
    ) -> str:
        changes = self._validate(values, creating=False)
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, rule_id)
            require_version(current["version"], expected_version, "fast access rule")
            row = dict(current) | changes
            if not row["target_attribute_name"]:
                row["target_attribute_name"] = row["target_attribute"]
            self._check_unique(session, org_id, row, exclude=rule_id)
            row |= {"updated_at": now, "version": current["version"] + 1, "reapply_pending": True}
            session.execute(update(rules_table).where(_r.id == rule_id).values(row))
            self.rows.event(session, "updated", row, now)

        await self.rows.write(work)
        return rule_id

    async def delete(self, org_id: str, rule_id: str) -> None:
        """Delete the rule; its value leaves every contact (the re-derivation pass of the
        remaining rules drops it, or, with no rule left, one statement clears them all)."""
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, rule_id)
            session.execute(delete(rules_table).where(_r.id == rule_id))
            # Flag the remaining rules with a fresh updated_at: a pass already running read the
            # old one, so it cannot clear this request when it finishes.
            remaining = session.connection().execute(
                update(rules_table)
                .where(_r.org_id == org_id)
                .values(reapply_pending=True, updated_at=now)
            )
            if not remaining.rowcount:
                cleared = dict.fromkeys(("fast_access", *SLOTS))
                session.execute(update(contacts).where(contacts.c.org_id == org_id).values(cleared))
            self.rows.event(session, "deleted", dict(current), now)

        await self._db.run_write(work)

    async def get(self, org_id: str, rule_id: str) -> dict[str, Any]:
        return await self.rows.get(org_id, rule_id)

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[dict[str, Any]], str]:
        return await self.rows.list_page(org_id, given, page, checks)

    # -- the re-derivation pass ----------------------------------------------------------------

    async def pending(self) -> list[tuple[str, str, tuple[int, datetime]]]:
        """(org, rule id, mark) of rules whose contacts still need re-deriving; the mark is
        what `mark_applied` compares, so a request made during the pass is not lost."""
        async with self._db.read() as session:
            query = select(_r.org_id, _r.id, _r.version, _r.updated_at).where(
                _r.reapply_pending.is_(True)
            )
            return [(r[0], r[1], (r[2], r[3])) for r in await session.execute(query)]

    async def mark_applied(self, rule_id: str, mark: tuple[int, datetime]) -> None:
        """Clear the flag, unless the rule changed or was flagged again meanwhile (a sibling
        rule's deletion touches `updated_at`): then another pass runs."""
        version, updated_at = mark

        def work(session: Session) -> None:
            session.execute(
                update(rules_table)
                .where(_r.id == rule_id, _r.version == version, _r.updated_at == updated_at)
                .values(reapply_pending=False)
            )

        await self._db.run_write(work)

    # -- internals -----------------------------------------------------------------------------

    def _check_unique(
        self, session: Session, org_id: str, row: Mapping[Any, Any], exclude: str | None
    ) -> None:
        for key in ("target_attribute", "target_attribute_name"):
            query = select(_r.id).where(_r.org_id == org_id, _r[key] == row[key])
            if exclude is not None:
                query = query.where(_r.id != exclude)
            if session.execute(query).first() is not None:
                raise UniqueKeyViolated(
                    f"{key} {row[key]!r} is already used by another rule",
                    metadata={"field": key},
                )


async def read_rules(session: AsyncSession, org_id: str) -> list[Rule]:
    query = select(_r.target_attribute, _r.target_attribute_name, _r.value_derivation_script)
    rows = await session.execute(query.where(_r.org_id == org_id))
    return [Rule(slot=r[0], name=r[1], script=r[2]) for r in rows]
