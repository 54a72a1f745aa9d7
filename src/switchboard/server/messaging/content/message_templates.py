"""Message templates: TEMPLATE patterns filled from name/value pairs, VALIDATOR regexes.

Placeholder syntax (TEMPLATE): `{{name}}`, spaces inside the braces allowed (`{{ name }}`); a name
is a letter or `_` followed by letters, digits, `_`, `.` or `-`. Any other `{{` is literal text.
`render(pattern, values)` replaces every placeholder; a placeholder without a value is an error
naming every missing one (400 at the boundary), and values are inserted verbatim (no recursion).

VALIDATOR: `pattern` is a Python regular expression that must match the whole body
(`re.fullmatch`, DOTALL). A sender id with validators only sends bodies matching one of them
(`body_allowed`). Validators attached to a SHARED sender id cannot be changed by customers: the
senders area hands that check in as `MessageTemplateService(shared_sender_lock=...)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import (
    InvalidArgument,
    PermissionDenied,
    UniqueKeyViolated,
    require_version,
)
from switchboard.server.core.events import EventLog
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.messaging.content.models import MessageTemplateRecord


class Designation(StrEnum):
    TEMPLATE = "TEMPLATE"
    VALIDATOR = "VALIDATOR"


templates_table = table_of(MessageTemplateRecord)
_t = templates_table.c

LIMITS = {"name": 128, "pattern": 4096}
FIELDS = ("designation", "name", "pattern")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")


class MissingValues(InvalidArgument):
    """A TEMPLATE was rendered without a value for some of its placeholders."""


def placeholders(pattern: str) -> list[str]:
    """The placeholder names of a TEMPLATE pattern, in order of first appearance."""
    return list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(pattern)))


def render(pattern: str, values: Mapping[str, str]) -> str:
    """The body a TEMPLATE pattern gives with `values`; MissingValues names every gap."""
    missing = [name for name in placeholders(pattern) if name not in values]
    if missing:
        raise MissingValues(
            "no value for template placeholder(s): " + ", ".join(missing),
            metadata={"missing": ",".join(missing)},
        )
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), pattern)


def compile_validator(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def body_allowed(validators: Sequence[str], body: str) -> bool:
    """Whether a sender with these VALIDATOR patterns may send `body`: yes when it has none,
    else when one of them matches the whole body. A broken pattern matches nothing."""
    if not validators:
        return True
    for pattern in validators:
        try:
            if compile_validator(pattern).fullmatch(body):
                return True
        except re.error:
            continue
    return False


def snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "designation": row["designation"],
        "name": row["name"],
        "pattern": row["pattern"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


# Senders area hook: (session, org, template id) → True when the template is a VALIDATOR of a
# SHARED sender id (then customers may not change or delete it).
SharedSenderLock = Callable[[Session, str, str], bool]


def _no_shared_senders(session: Session, org_id: str, template_id: str) -> bool:
    return False


class MessageTemplateService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        shared_sender_lock: SharedSenderLock = _no_shared_senders,
    ) -> None:
        self._clock = clock
        self.shared_sender_lock = shared_sender_lock
        self.rows = OrgTable(
            db=db,
            events=events,
            table=templates_table,
            noun="message template",
            event_prefix="message_template",
            snapshot=snapshot,
            unique_message="a message template with this name already exists",
        )

    def _validate(self, values: Mapping[str, Any], *, whole: bool) -> dict[str, Any]:
        checks = Checks()
        changes: dict[str, Any] = {}
        for name in FIELDS:
            value = values.get(name)
            if value is None:
                if whole:
                    checks.required(name, None)
                continue
            text = value.strip() if name != "pattern" else value
            if name == "designation":
                choice = checks.choice(name, text, Designation)
                changes[name] = choice.value if choice else None
            elif checks.required(name, text):
                checks.length(name, text, LIMITS[name])
                changes[name] = text
        checks.raise_if_failed()
        return changes

    def _check_row(self, session: Session, row: Mapping[str, Any], exclude: str | None) -> None:
        checks = Checks()
        if row["designation"] == Designation.VALIDATOR.value:
            try:
                compile_validator(row["pattern"])
            except re.error as exc:
                checks.fail("pattern", f"is not a valid regular expression: {exc}", "Format")
        checks.raise_if_failed()
        query = select(_t.id).where(_t.org_id == row["org_id"], _t.name == row["name"])
        if exclude is not None:
            query = query.where(_t.id != exclude)
        if session.execute(query).first() is not None:
            raise UniqueKeyViolated(
                f"a message template named {row['name']!r} already exists",
                metadata={"field": "name"},
            )

    def _require_unlocked(self, session: Session, current: Row) -> None:
        if current["designation"] == Designation.VALIDATOR.value and self.shared_sender_lock(
            session, current["org_id"], current["id"]
        ):
            raise PermissionDenied(
                "this VALIDATOR template belongs to a shared sender id and cannot be changed"
            )

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        changes = self._validate(values, whole=True)
        now = self._clock.now()
        row = changes | {
            "id": new_id("mtp_"),
            "org_id": org_id,
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

        def work(session: Session) -> None:
            self._check_row(session, row, None)
            session.execute(insert(templates_table).values(row))
            self.rows.event(session, "created", row, now)

        await self.rows.write(work)
        return str(row["id"])

    async def update(
        self,
        org_id: str,
        template_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
        *,
        replace: bool = False,
    ) -> None:
        changes = self._validate(values, whole=replace)
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, template_id)
            require_version(current["version"], expected_version, "message template")
            self._require_unlocked(session, current)
            row = dict(current) | changes
            self._check_row(session, row, template_id)
            row |= {"updated_at": now, "version": current["version"] + 1}
            session.execute(update(templates_table).where(_t.id == template_id).values(row))
            self.rows.event(session, "updated", row, now)

        await self.rows.write(work)

    async def delete(self, org_id: str, template_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, template_id)
            self._require_unlocked(session, current)
            session.execute(delete(templates_table).where(_t.id == template_id))
            self.rows.event(session, "deleted", current, now)

        await self.rows.write(work)

    # -- used by other services, inside their transactions -------------------------------------

    def by_name(self, session: Session, org_id: str, name: str) -> Row | None:
        query = select(templates_table).where(_t.org_id == org_id, _t.name == name)
        return session.execute(query).mappings().one_or_none()

    def validators(self, session: Session, org_id: str, template_ids: Sequence[str]) -> list[str]:
        """The patterns of the org's VALIDATOR templates among `template_ids` (a sender's)."""
        if not template_ids:
            return []
        query = select(_t.pattern).where(
            _t.org_id == org_id,
            _t.id.in_(list(template_ids)),
            _t.designation == Designation.VALIDATOR.value,
        )
        return list(session.execute(query).scalars())
