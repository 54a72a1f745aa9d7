"""Messaging keywords: the org's COMPANY keywords and the platform's RESERVED ones, and the one
function that matches an inbound message against them.

`value` is a POSIX extended regular expression. It is translated to a Python pattern
(`ere_to_python`): bracket expressions keep POSIX meaning (a backslash inside brackets is a
literal, `[:alpha:]`-style classes work), and constructs that are not POSIX ERE are refused
(`\\d`-style escapes, `(?…)` groups, lazy/possessive quantifiers, `[=…=]`/`[.….]`). A keyword
matches when its expression matches the WHOLE trimmed body (not a substring): `STOP` matches
"stop" but not "don't stop". Full matching also makes POSIX leftmost-longest and Python
leftmost-first agree on whether there is a match.

Matching order (`match_inbound`): the org's COMPANY keywords (oldest first), then RESERVED ones;
a keyword counts when its sender scope is empty or the receiving sender id, and `received_at`
lies in [valid_from, valid_to). RESERVED keywords (STOP, START, HELP) are seeded from
`reserved_keywords.json` with org_id "" and are visible to every org, never writable by one.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.server.contacts.consent import ConsentService
from switchboard.server.contacts.models import AddressType, ConsentStatus
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import (
    InvalidArgument,
    PermissionDenied,
    UniqueKeyViolated,
    require_version,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.messaging.content.message_templates import (
    Designation,
    MessageTemplateService,
    placeholders,
)
from switchboard.server.messaging.content.models import KeywordRecord
from switchboard.server.messaging.senders.models import SenderIdRecord

_senders = table_of(SenderIdRecord).c
RESERVED_FILE = Path(__file__).with_name("reserved_keywords.json")
GLOBAL_ORG = ""  # org_id of RESERVED keywords
PLATFORM_APPLICATION = "platform"


class KeywordType(StrEnum):
    COMPANY = "COMPANY"
    RESERVED = "RESERVED"


class CaseMode(StrEnum):
    SENSITIVE = "SENSITIVE"
    INSENSITIVE = "INSENSITIVE"


class Action(StrEnum):
    OPTOUT = "OPTOUT"
    OPTIN = "OPTIN"
    STORE = "STORE"


keywords_table = table_of(KeywordRecord)
_k = keywords_table.c

LIMITS = {
    "name": 128,
    "description": 1024,
    "value": 256,
    "sender_id": 64,
    "associated_info": 1024,
    "campaign_id": 128,
    "actions": 64,
    "reply_template": 128,
}
TEXT_FIELDS = tuple(LIMITS)
FIELDS = (*TEXT_FIELDS, "case", "valid_from", "valid_to", "type")
_FILTER_COLUMNS = {"case": "case_mode"}
_FILTER_TIMES = frozenset({"valid_from", "valid_to", "created_date", "last_updated_date"})
# What a replace (PUT) resets the writable columns to.
_CLEARED: dict[str, Any] = {
    **dict.fromkeys(TEXT_FIELDS, ""),
    "case_mode": CaseMode.INSENSITIVE.value,
    "valid_from": None,
    "valid_to": None,
}


# -- POSIX ERE --------------------------------------------------------------------------------

_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "xdigit": "0-9A-Fa-f",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}


class NotPosixEre(ValueError):
    pass


def _bracket(ere: str, start: int) -> tuple[str, int]:
    """The Python set for the bracket expression opening at `start`, and the index after it."""
    j = start + 1
    negate = j < len(ere) and ere[j] == "^"
    if negate:
        j += 1
    items: list[str] = []
    if j < len(ere) and ere[j] == "]":
        items.append(r"\]")
        j += 1
    while j < len(ere) and ere[j] != "]":
        if ere.startswith("[:", j):
            end = ere.find(":]", j + 2)
            name = ere[j + 2 : end] if end >= 0 else ""
            if name not in _CLASSES:
                raise NotPosixEre(f"unknown character class [:{name}:]")
            items.append(_CLASSES[name])
            j = end + 2
        elif ere.startswith(("[=", "[."), j):
            raise NotPosixEre("equivalence classes and collating symbols are not supported")
        else:
            char = ere[j]
            items.append("\\" + char if char in "\\[^&~|" else char)
            j += 1
    if j >= len(ere):
        raise NotPosixEre("unterminated bracket expression")
    return "[" + ("^" if negate else "") + "".join(items) + "]", j + 1


def ere_to_python(ere: str) -> str:
    """A Python `re` pattern with the meaning of POSIX ERE `ere`; NotPosixEre if it is not one
    (or uses what we do not support)."""
    out: list[str] = []
    i = 0
    while i < len(ere):
        char = ere[i]
        if char == "\\":
            if i + 1 >= len(ere):
                raise NotPosixEre("trailing backslash")
            escaped = ere[i + 1]
            if escaped.isalnum():
                raise NotPosixEre(f"\\{escaped} is not POSIX ERE (use a bracket expression)")
            out.append(re.escape(escaped))
            i += 2
        elif char == "[":
            text, i = _bracket(ere, i)
            out.append(text)
        elif char == "(" and ere.startswith("(?", i):
            raise NotPosixEre("(?...) groups are not POSIX ERE")
        elif char in "*+?}" and i + 1 < len(ere) and ere[i + 1] in "?+":
            raise NotPosixEre("lazy or possessive quantifiers are not POSIX ERE")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def compile_value(value: str, case_mode: str) -> re.Pattern[str]:
    flags = re.IGNORECASE if case_mode != CaseMode.SENSITIVE.value else 0
    return re.compile(ere_to_python(value), flags)


def parse_actions(text: str) -> list[Action]:
    """`OPTOUT, STORE` → [OPTOUT, STORE]; ValueError names an unknown action."""
    result: list[Action] = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        try:
            action = Action(token.upper())
        except ValueError:
            names = ", ".join(a.value for a in Action)
            raise ValueError(f"unknown action {token!r} (use {names})") from None
        if action not in result:
            result.append(action)
    return result


def snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "value": row["value"],
        "case": row["case_mode"],
        "sender_id": row["sender_id"],
        "valid_from": iso(row["valid_from"]),
        "valid_to": iso(row["valid_to"]),
        "associated_info": row["associated_info"],
        "campaign_id": row["campaign_id"],
        "type": row["type"],
        "actions": row["actions"],
        "reply_template": row["reply_template"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


@dataclass(frozen=True)
class KeywordMatch:
    """What an inbound message matched, and what was done about it."""

    keyword_id: str
    name: str
    value: str
    type: KeywordType
    actions: tuple[Action, ...]
    associated_info: str
    campaign_id: str
    reply_template: str  # the template's name ("" for none)
    reply_body: str | None  # the reply to send back (None: no reply, or it needs values)
    consent: Snapshot | None = field(default=None)  # the address's status after the keyword


class _Scoped(OrgTable):
    """Reads see the org's keywords and the global RESERVED ones."""

    def scope(self, org_id: str) -> ColumnElement[bool]:
        return or_(_k.org_id == org_id, _k.org_id == GLOBAL_ORG)


class KeywordService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        consent: ConsentService,
        templates: MessageTemplateService,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._consent = consent
        self._templates = templates
        self._seeded = False
        self.rows = _Scoped(
            db=db,
            events=events,
            table=keywords_table,
            noun="keyword",
            event_prefix="keyword",
            snapshot=snapshot,
            unique_message="a keyword with this name already exists",
        )

    # -- RESERVED keywords -----------------------------------------------------------------------

    async def ensure_reserved(self) -> None:
        """Insert the RESERVED keywords of the data file that are missing (idempotent)."""
        if self._seeded:
            return
        data = json.loads(RESERVED_FILE.read_text())
        now = self._clock.now()

        def work(session: Session) -> None:
            have = set(
                session.execute(select(_k.id).where(_k.org_id == GLOBAL_ORG)).scalars().all()
            )
            for item in data["keywords"]:
                if item["id"] in have:
                    continue
                session.execute(
                    insert(keywords_table).values(
                        id=item["id"],
                        org_id=GLOBAL_ORG,
                        name=item["name"],
                        description=item.get("description", ""),
                        value=item["value"],
                        case_mode=CaseMode.INSENSITIVE.value,
                        sender_id="",
                        associated_info=item.get("associated_info", ""),
                        campaign_id="",
                        type=KeywordType.RESERVED.value,
                        actions=item["actions"],
                        reply_template="",
                        application_id=PLATFORM_APPLICATION,
                        created_at=now,
                        updated_at=now,
                        version=1,
                    )
                )

        with contextlib.suppress(IntegrityError):  # another replica seeded them meanwhile
            await self._db.run_write(work)
        self._seeded = True

    # -- validation ------------------------------------------------------------------------------

    def _validate(self, values: Mapping[str, Any], *, whole: bool) -> dict[str, Any]:
        checks = Checks()
        changes: dict[str, Any] = {}
        for name in TEXT_FIELDS:
            value = values.get(name)
            if isinstance(value, str):
                text = value.strip()
                checks.length(name, text, LIMITS[name])
                changes[name] = text
        if whole:
            checks.required("value", values.get("value"))
        elif "value" in changes and not changes["value"]:
            checks.fail("value", "is required", "Required")
        if isinstance(values.get("case"), str):
            choice = checks.choice("case", values["case"] or "INSENSITIVE", CaseMode)
            changes["case_mode"] = choice.value if choice else None
        for name in ("valid_from", "valid_to"):
            value = values.get(name)
            if isinstance(value, str):
                instant = listing.parse_instant(value.strip()) if value.strip() else None
                if value.strip() and instant is None:
                    checks.fail(name, "must be an RFC 3339 time or YYYY-MM-DD", "Format")
                changes[name] = instant
        if isinstance(values.get("type"), str) and values["type"].strip():
            kind = checks.choice("type", values["type"], KeywordType)
            if kind == KeywordType.RESERVED:
                checks.fail(
                    "type", "RESERVED keywords are platform keywords: only COMPANY can be created"
                )
        if "actions" in changes and checks.ok("actions"):
            try:
                actions = parse_actions(changes["actions"])
            except ValueError as exc:
                checks.fail("actions", str(exc), "Enum")
            else:
                if Action.OPTIN in actions and Action.OPTOUT in actions:
                    checks.fail("actions", "cannot both OPTIN and OPTOUT")
                changes["actions"] = ",".join(a.value for a in actions)
        checks.raise_if_failed()
        return changes

    def _check_row(
        self,
        session: Session,
        row: Mapping[str, Any],
        exclude: str | None,
        previous_sender_id: str = "",
    ) -> None:
        checks = Checks()
        try:
            compile_value(row["value"], row["case_mode"])
        except (NotPosixEre, re.error) as exc:
            checks.fail("value", f"is not a supported POSIX extended regular expression: {exc}")
        if row["valid_from"] and row["valid_to"] and row["valid_from"] >= row["valid_to"]:
            checks.fail("valid_to", "must be after valid_from", "Range")
        if row["reply_template"]:
            template = self._templates.by_name(session, row["org_id"], row["reply_template"])
            if template is None or template["designation"] != Designation.TEMPLATE.value:
                checks.fail("reply_template", "names no TEMPLATE message template of the org")
        # A keyword listens on one of the org's own senders (an MO message names the org's
        # sender it arrived on); a sender deleted since is left alone until it is changed.
        sender_id = row["sender_id"]
        if sender_id and sender_id != previous_sender_id:
            owned = select(_senders.id).where(
                _senders.id == sender_id, _senders.org_id == row["org_id"]
            )
            if session.execute(owned).first() is None:
                checks.fail("sender_id", "names no sender ID of the org")
        checks.raise_if_failed()
        query = select(_k.id).where(_k.org_id == row["org_id"], _k.name == row["name"])
        if exclude is not None:
            query = query.where(_k.id != exclude)
        if session.execute(query).first() is not None:
            raise UniqueKeyViolated(
                f"a keyword named {row['name']!r} already exists", metadata={"field": "name"}
            )

    def _writable(self, session: Session, org_id: str, keyword_id: str, verb: str) -> Row:
        current = self.rows.locked(session, org_id, keyword_id)
        if current["org_id"] == GLOBAL_ORG:
            raise PermissionDenied(
                f"{current['name']} is a RESERVED platform keyword: it cannot be {verb}"
            )
        return current

    # -- CRUD ------------------------------------------------------------------------------------

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        changes = self._validate(values, whole=True)
        now = self._clock.now()
        row = (
            _CLEARED
            | {k: v for k, v in changes.items() if v is not None}
            | {
                "id": new_id("kw_"),
                "org_id": org_id,
                "type": KeywordType.COMPANY.value,
                "application_id": application_id,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )
        if not row["name"]:
            row["name"] = row["value"][: LIMITS["name"]]

        def work(session: Session) -> None:
            self._check_row(session, row, None)
            session.execute(insert(keywords_table).values(row))
            self.rows.event(session, "created", row, now)

        await self.rows.write(work)
        return str(row["id"])

    async def update(
        self,
        org_id: str,
        keyword_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
        *,
        replace: bool = False,
    ) -> None:
        changes = self._validate(values, whole=replace)
        await self.ensure_reserved()  # so a RESERVED id answers 403, not 404
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self._writable(session, org_id, keyword_id, "modified")
            require_version(current["version"], expected_version, "keyword")
            row = dict(current) | (_CLEARED if replace else {}) | changes
            if not row["name"]:
                row["name"] = row["value"][: LIMITS["name"]]
            self._check_row(session, row, keyword_id, current["sender_id"])
            row |= {"updated_at": now, "version": current["version"] + 1}
            session.execute(update(keywords_table).where(_k.id == keyword_id).values(row))
            self.rows.event(session, "updated", row, now)

        await self.rows.write(work)

    async def delete(self, org_id: str, keyword_id: str) -> None:
        await self.ensure_reserved()
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self._writable(session, org_id, keyword_id, "deleted")
            session.execute(delete(keywords_table).where(_k.id == keyword_id))
            self.rows.event(session, "deleted", current, now)

        await self.rows.write(work)

    async def get(self, org_id: str, keyword_id: str) -> Snapshot:
        await self.ensure_reserved()
        return await self.rows.get(org_id, keyword_id)

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[Snapshot], str]:
        await self.ensure_reserved()
        return await self.rows.list_page(
            org_id, given, page, checks, columns=_FILTER_COLUMNS, times=_FILTER_TIMES
        )

    # -- inbound matching ------------------------------------------------------------------------

    def match_inbound(
        self,
        session: Session,
        org_id: str,
        sender_id: str,
        body: str,
        received_at: datetime,
        *,
        from_address: str | None = None,
        address_type: AddressType = AddressType.MDN,
    ) -> KeywordMatch | None:
        """The keyword an inbound `body` received on `sender_id` matches, or None: the org's
        COMPANY keywords first (oldest first), then RESERVED ones; whole-body match.

        Runs inside the caller's write transaction. With `from_address` (the end user), the
        match is applied there too: OPTOUT/OPTIN/STORE through ConsentService.apply_keyword
        (status and history), and a `keyword.matched` event. Without it, nothing is written.
        The RESERVED keywords must have been seeded (KeywordService.ensure_reserved)."""
        text = body.strip()
        query = (
            select(keywords_table)
            .where(
                or_(_k.org_id == org_id, _k.org_id == GLOBAL_ORG),
                or_(_k.sender_id == "", _k.sender_id == sender_id),
            )
            .order_by(_k.type, _k.id)  # COMPANY sorts before RESERVED
        )
        for row in session.execute(query).mappings():
            if row["valid_from"] is not None and received_at < row["valid_from"]:
                continue
            if row["valid_to"] is not None and received_at >= row["valid_to"]:
                continue
            try:
                pattern = compile_value(row["value"], row["case_mode"])
            except (NotPosixEre, re.error):
                continue
            if pattern.fullmatch(text):
                return self._matched(
                    session, org_id, sender_id, row, body, received_at, from_address, address_type
                )
        return None

    def _matched(
        self,
        session: Session,
        org_id: str,
        sender_id: str,
        row: Row,
        body: str,
        received_at: datetime,
        from_address: str | None,
        address_type: AddressType,
    ) -> KeywordMatch:
        actions = tuple(parse_actions(row["actions"]))
        reply_body = None
        if row["reply_template"]:
            template = self._templates.by_name(session, org_id, row["reply_template"])
            if template is not None and not placeholders(template["pattern"]):
                reply_body = template["pattern"]
        consent = None
        if from_address:
            new_status = (
                ConsentStatus.OPTOUT
                if Action.OPTOUT in actions
                else ConsentStatus.OPTIN
                if Action.OPTIN in actions
                else None
            )
            try:
                consent = self._consent.apply_keyword(
                    session,
                    org_id=org_id,
                    address_type=address_type,
                    address=from_address,
                    sender_id=sender_id,
                    keyword=row["name"],
                    new_status=new_status,
                    message=body,
                    received_at=received_at,
                )
            except ValueError as exc:  # InvalidAddress and the like
                raise InvalidArgument(f"from_address: {exc}") from exc
            payload = snapshot(row) | {
                "sender_id": sender_id,
                "from_address": from_address,
                "message": body,
                "received_at": iso(received_at),
            }
            self._events.append(
                session,
                [NewEvent(org_id, "keyword.matched", row["id"], payload, self._clock.now())],
            )
        return KeywordMatch(
            keyword_id=row["id"],
            name=row["name"],
            value=row["value"],
            type=KeywordType(row["type"]),
            actions=actions,
            associated_info=row["associated_info"],
            campaign_id=row["campaign_id"],
            reply_template=row["reply_template"],
            reply_body=reply_body,
            consent=consent,
        )
