"""Communication types and templates: validation, the version lifecycle, previews and checks.

A template exists per (org, communication type, language, channel) as a series of versions:

    draft ──commit──▶ stable ──(next stable committed)──▶ archived
      └─────────────────┴──DELETE──▶ deleted ──commit deletedItems──▶ purged

At most one draft and one stable version exist per key; every other version stays as history.
`POST /v2/orgs/{org}/templates` skips the draft: it writes a new stable version directly. Every
write validates the template first (base64 → UTF-8 → the engine compiles it → the arguments it
uses exist in the type with a compatible type) and appends `template.*` events in its
transaction.

The communications domain reads stable templates through `TemplateService.stable_template` and
types through `CommunicationTypeService.get_type`.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    StaleData,
    validation_error,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot, T
from switchboard.server.core.validation import Checks
from switchboard.server.templates import catalog, inspection
from switchboard.server.templates.catalog import Argument, CommunicationType
from switchboard.server.templates.engine import CompiledTemplate
from switchboard.server.templates.inspection import Problem
from switchboard.server.templates.models import ChangeType, Channel
from switchboard.server.templates.repository import TemplateRepository, versions

__all__ = [
    "Argument",
    "CommunicationType",
    "CommunicationTypeService",
    "StableTemplate",
    "TemplateService",
]


CONTENT_MAX = {Channel.SMS: 10_000, Channel.WHATSAPP: 10_000, Channel.EMAIL: 512 * 1024}
SUBJECT_MAX = 998
SENDER_INFO_MAX = 320
SMS_ALPHA_SENDER_MAX = 11
REQUEST_REF_MAX = 512
_PHONE_SENDER = re.compile(r"^\+?[0-9]{3,15}$")
_v = versions.c


@dataclass(frozen=True)
class StableTemplate:
    """The stable version of a template, compiled: what a communication renders."""

    id: str
    type_code: str
    channel: str
    language: str
    sender_info: str
    subject: str | None
    content: str  # decoded source
    compiled_content: CompiledTemplate
    compiled_subject: CompiledTemplate | None
    version: int


@dataclass(frozen=True)
class TemplateSource:
    """A template body as stored: decoded and normalised."""

    type_code: str
    language: str
    channel: str
    sender_info: str
    subject: str | None
    content: str
    request_ref: str

    def same_data(self, row: Row) -> bool:
        return bool(
            row["sender_info"] == self.sender_info
            and row["subject"] == self.subject
            and row["content"] == self.content
        )


@dataclass
class Inspection:
    """A template body checked against its type: what it compiled to and what is wrong."""

    kind: CommunicationType
    source: TemplateSource | None  # None when the content could not be decoded
    compiled_content: CompiledTemplate | None = None
    compiled_subject: CompiledTemplate | None = None
    problems: list[Problem] = field(default_factory=list)


def normalize_language(value: str) -> str:
    """`EN` → `en`, `pt-br` → `pt-BR` (the primary subtag lower-case, a region upper-case)."""
    parts = value.strip().split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        out.append(part.upper() if len(part) == 2 else part)
    return "-".join(out)


def encode_content(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def template_snapshot(row: Row) -> Snapshot:
    """A template version as clients see it (proto field names, JSON-safe)."""
    data: Snapshot = {"sender_info": row["sender_info"], "content": encode_content(row["content"])}
    if row["subject"] is not None:
        data["subject"] = row["subject"]
    return {
        "id": row["id"],
        "type": row["type_code"],
        "language": row["language"],
        "channel": row["channel"],
        "data": data,
        "change_type": row["change_type"],
        "version": row["version"],
        "request_ref": row["request_ref"],
        "created_time": iso(row["created_at"]),
        "updated_time": iso(row["updated_at"]),
        "committed_time": iso(row["committed_at"]),
    }


def event_payload(row: Row) -> Snapshot:
    """Events carry the version without its content (which may be a large HTML body)."""
    payload = template_snapshot(row)
    del payload["data"]
    return payload


def template_event(what: str, row: Row, now: datetime, **extra: Any) -> NewEvent:
    return NewEvent(row["org_id"], f"template.{what}", row["id"], event_payload(row) | extra, now)


def preview_snapshot(
    source: TemplateSource, content: str, subject: str | None, sender_info: str | None = None
) -> Snapshot:
    snapshot: Snapshot = {
        "type": source.type_code,
        "language": source.language,
        "channel": source.channel,
        "sender_info": source.sender_info if sender_info is None else sender_info,
        "content": content,
    }
    if subject is not None:
        snapshot["subject"] = subject
    return snapshot


def inspect_data(kind: CommunicationType, channel: str, data: Mapping[str, Any]) -> Inspection:
    """Everything wrong with a TemplateData body for `channel`, and what it compiled to."""
    problems: list[Problem] = []
    content: str | None = None
    decoded = catalog.decode_base64(str(data.get("content") or ""))
    if decoded is None:
        problems.append(Problem("data.content", "is not base64"))
    else:
        try:
            content = decoded.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(Problem("data.content", "is not base64 of UTF-8 text"))
    if content is not None:
        maximum = CONTENT_MAX[Channel(channel)]
        if not content.strip():
            problems.append(Problem("data.content", "decodes to an empty template"))
        elif len(content) > maximum:
            problems.append(Problem("data.content", f"is longer than {maximum} characters"))
    sender_info = str(data.get("sender_info") or "").strip()
    problems.extend(_sender_problems(channel, sender_info))
    subject: str | None = data.get("subject")
    if channel == Channel.EMAIL:
        subject = (subject or "").strip()
        if not subject:
            problems.append(Problem("data.subject", "is required for email templates"))
        elif len(subject) > SUBJECT_MAX or "\n" in subject or "\r" in subject:
            problems.append(
                Problem("data.subject", f"must be one line of at most {SUBJECT_MAX} characters")
            )
    elif subject is not None:
        problems.append(Problem("data.subject", "only email templates have a subject"))
        subject = None
    result = Inspection(kind=kind, source=None, problems=problems)
    declared = kind.declared
    if content is not None and content.strip():
        compiled, found = inspection.compile_source(
            "data.content", content, inspection.content_mode(channel)
        )
        problems.extend(found)
        if compiled is not None:
            problems.extend(inspection.argument_problems("data.content", compiled, declared))
            result.compiled_content = compiled
    if subject:
        compiled, found = inspection.compile_source("data.subject", subject, "text")
        problems.extend(found)
        if compiled is not None:
            problems.extend(inspection.argument_problems("data.subject", compiled, declared))
            result.compiled_subject = compiled
    if content is not None:
        result.source = TemplateSource(
            type_code=kind.code,
            language="",
            channel=channel,
            sender_info=sender_info,
            subject=subject,
            content=content,
            request_ref="",
        )
    return result


def _sender_problems(channel: str, sender_info: str) -> list[Problem]:
    where = "data.senderInfo"
    if len(sender_info) > SENDER_INFO_MAX:
        return [Problem(where, f"is longer than {SENDER_INFO_MAX} characters")]
    if channel == Channel.EMAIL:
        return []
    if not sender_info:
        return [Problem(where, f"is required for {channel} templates")]
    if (
        channel == Channel.SMS
        and not _PHONE_SENDER.match(sender_info)
        and len(sender_info) > SMS_ALPHA_SENDER_MAX
    ):
        return [
            Problem(
                where,
                f"an SMS sender is at most {SMS_ALPHA_SENDER_MAX} characters, or a phone number",
            )
        ]
    return []


def compile_row(row: Row) -> tuple[CompiledTemplate | None, CompiledTemplate | None, list[Problem]]:
    """A stored version compiled again (cached by the engine)."""
    content, problems = inspection.compile_source(
        "data.content", row["content"], inspection.content_mode(row["channel"])
    )
    subject = None
    if row["subject"]:
        subject, found = inspection.compile_source("data.subject", row["subject"], "text")
        problems.extend(found)
    return content, subject, problems


def type_problems(row: Row, kind: CommunicationType) -> list[Problem]:
    """What is wrong with a stored version under `kind` (compile, then arguments)."""
    content, subject, problems = compile_row(row)
    declared = kind.declared
    if content is not None:
        problems.extend(inspection.argument_problems("data.content", content, declared))
    if subject is not None:
        problems.extend(inspection.argument_problems("data.subject", subject, declared))
    return problems


class CommunicationTypeService:
    """The global catalog of communication types. Reads are open to every role; the RPC layer
    lets only Admin write (the contract's access rule)."""

    def __init__(
        self,
        db: Database,
        events: EventLog,
        clock: Clock,
        repository: TemplateRepository | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self.repository = repository or TemplateRepository()

    async def get_type(self, type_code: str) -> CommunicationType | None:
        async with self._db.read() as session:
            row = await self.repository.get_type(session, type_code)
        return catalog.from_row(row) if row is not None else None

    async def require_type(self, type_code: str) -> CommunicationType:
        kind = await self.get_type(type_code)
        if kind is None:
            raise NotFound(f"communication type {type_code!r} not found")
        return kind

    async def list_types(self, limit: int, offset: int) -> list[CommunicationType]:
        checks = Checks()
        page = listing.page(checks, limit, offset, "")
        checks.raise_if_failed()
        async with self._db.read() as session:
            rows = await self.repository.list_types(session, page.limit, page.offset)
        return [catalog.from_row(r) for r in rows]

    async def put_type(
        self, org_id: str, path_code: str, values: Mapping[str, Any]
    ) -> tuple[CommunicationType, str]:
        """Create or replace a type; returns it and created|updated|unchanged."""
        checks = Checks()
        kind = catalog.validate_type(checks, path_code, values)
        checks.raise_if_failed()
        now = self._clock.now()
        return await self._db.run_write(lambda session: self.apply(session, org_id, kind, now))

    def apply(
        self, session: Session, org_id: str, kind: CommunicationType, now: datetime
    ) -> tuple[CommunicationType, str]:
        """Inside a write: store `kind` unless identical; refuse changes that would break a
        live (draft or stable) template of any org."""
        current = self.repository.locked_type(session, kind.code)
        columns = {
            "description": kind.description,
            "real_time_required": kind.real_time_required,
            "delivery_window": kind.delivery_window,
            "sending_type": kind.sending_type,
            "arguments": catalog.snapshot(kind)["arguments"],
        }
        if current is None:
            row = {"code": kind.code, **columns, "created_at": now, "updated_at": now}
            self.repository.insert_type(session, row | {"version": 1})
            stored = catalog.from_row(row | {"version": 1})
            self._event(session, org_id, "created", stored, now)
            return stored, "created"
        if all(current[k] == v for k, v in columns.items()):
            return catalog.from_row(current), "unchanged"
        self._refuse_breaking_change(session, kind)
        values = columns | {"updated_at": now, "version": current["version"] + 1}
        self.repository.update_type(session, kind.code, values)
        stored = catalog.from_row(dict(current) | values)
        self._event(session, org_id, "updated", stored, now)
        return stored, "updated"

    def _refuse_breaking_change(self, session: Session, kind: CommunicationType) -> None:
        broken: list[str] = []
        for row in self.repository.live_templates_of_type(session, kind.code):
            for problem in type_problems(row, kind):
                broken.append(
                    f"{row['org_id']}/{row['channel']}/{row['language']} v{row['version']} "
                    f"({row['change_type']}): {problem.field}: {problem.describe()}"
                )
        if broken:
            shown = "; ".join(broken[:10]) + ("; …" if len(broken) > 10 else "")
            raise InvalidArgument(
                f"this change to type {kind.code!r} would break {len(broken)} template "
                f"problem(s): {shown}",
                violations=[FieldViolation("arguments", "breaks templates that use them")],
            )

    def _event(
        self, session: Session, org_id: str, what: str, kind: CommunicationType, now: datetime
    ) -> None:
        self._events.append(
            session,
            [
                NewEvent(
                    org_id, f"communication_type.{what}", kind.code, catalog.snapshot(kind), now
                )
            ],
        )


@dataclass(frozen=True)
class ItemRef:
    """A validated {objectId, objectType}: kind is template, example or communication_type."""

    object_id: str
    object_type: str
    kind: str
    channel: str | None  # templates and examples


OBJECT_TYPES: dict[str, tuple[str, str | None]] = {
    **{f"{c.value}_template": ("template", c.value) for c in Channel},
    **{f"{c.value}_example": ("example", c.value) for c in Channel},
    "communication_type": ("communication_type", None),
}
ITEMS_MAX = 1000


def parse_items(checks: Checks, where: str, items: Sequence[Mapping[str, Any]]) -> list[ItemRef]:
    refs: list[ItemRef] = []
    seen: set[tuple[str, str]] = set()
    if len(items) > ITEMS_MAX:
        checks.fail(where, f"at most {ITEMS_MAX} items", "Range")
    for index, item in enumerate(items):
        object_id = str(item.get("object_id") or "").strip()
        object_type = str(item.get("object_type") or "").strip().lower()
        ok = checks.required(f"{where}[{index}].objectId", object_id)
        if object_type not in OBJECT_TYPES:
            names = ", ".join(OBJECT_TYPES)
            checks.fail(f"{where}[{index}].objectType", f"must be one of {names}", "Enum")
            continue
        kind, channel = OBJECT_TYPES[object_type]
        if ok and (kind, object_id) in seen:
            checks.fail(f"{where}[{index}]", f"{object_type} {object_id!r} is listed twice")
        seen.add((kind, object_id))
        if ok:
            refs.append(ItemRef(object_id, object_type, kind, channel))
    return refs


class TemplateService:
    def __init__(
        self,
        db: Database,
        events: EventLog,
        clock: Clock,
        types: CommunicationTypeService,
        repository: TemplateRepository | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self.types = types
        self.repository = repository or types.repository

    # -- for the communications domain ---------------------------------------------------------

    async def stable_template(
        self, org_id: str, type_code: str, channel: str, language: str
    ) -> StableTemplate | None:
        """The stable version of a template, compiled; None when there is none."""
        async with self._db.read() as session:
            row = await self.repository.stable(
                session, org_id, type_code, channel.lower(), normalize_language(language)
            )
        if row is None:
            return None
        content, subject, problems = compile_row(row)
        if content is None or problems:
            inspection.raise_problems(problems)
        assert content is not None
        return StableTemplate(
            id=row["id"],
            type_code=row["type_code"],
            channel=row["channel"],
            language=row["language"],
            sender_info=row["sender_info"],
            subject=row["subject"],
            content=row["content"],
            compiled_content=content,
            compiled_subject=subject,
            version=row["version"],
        )

    async def stable_channels(self, org_id: str, type_code: str, language: str) -> list[str]:
        """The channels with a stable template of the type in the language, sorted."""
        async with self._db.read() as session:
            return await self.repository.stable_channels(
                session, org_id, type_code, normalize_language(language)
            )

    # -- validation ----------------------------------------------------------------------------

    async def inspect(self, values: Mapping[str, Any]) -> Inspection:
        """A TemplateInput body (proto field names): its shape is checked (400 when the type,
        language, channel or content is missing or invalid, or the type does not exist), then
        everything about its data is inspected and returned as problems."""
        checks = Checks()
        type_code = str(values.get("type") or "").strip()
        checks.required("type", type_code)
        language = str(values.get("language") or "").strip()
        if checks.required("language", language):
            checks.language("language", language)
        channel_text = str(values.get("channel") or "").strip()
        channel = None
        if checks.required("channel", channel_text):
            channel = checks.choice("channel", channel_text, Channel)
        data: Mapping[str, Any] = values.get("data") or {}
        checks.required("data.content", str(data.get("content") or ""))
        request_ref = str(values.get("request_ref") or "").strip()
        checks.length("requestRef", request_ref, REQUEST_REF_MAX)
        checks.raise_if_failed()
        assert channel is not None
        kind = await self.types.get_type(type_code)
        if kind is None:
            raise validation_error(
                [FieldViolation("type", f"no communication type {type_code!r}", "Unknown")]
            )
        result = inspect_data(kind, channel.value, data)
        if result.source is not None:
            result.source = TemplateSource(
                type_code=kind.code,
                language=normalize_language(language),
                channel=channel.value,
                sender_info=result.source.sender_info,
                subject=result.source.subject,
                content=result.source.content,
                request_ref=request_ref,
            )
        return result

    async def _writable(self, values: Mapping[str, Any]) -> TemplateSource:
        found = await self.inspect(values)
        inspection.raise_problems(found.problems)
        assert found.source is not None
        return found.source

    # -- writes --------------------------------------------------------------------------------

    async def create_stable(
        self, org_id: str, application_id: str, values: Mapping[str, Any]
    ) -> Snapshot:
        """A new stable version at once; the previous stable one is archived."""
        source = await self._writable(values)
        now = self._clock.now()

        def work(session: Session) -> Snapshot:
            live, highest = self._locked_key(session, org_id, source)
            row = self._new_version(org_id, application_id, source, highest, ChangeType.STABLE, now)
            events = self._archive(session, live.get(ChangeType.STABLE.value), now, row["id"])
            self.repository.insert_version(session, row)
            events.append(template_event("created", row, now))
            self._events.append(session, events)
            return template_snapshot(row)

        return await self.write(work)

    async def create_draft(
        self, org_id: str, application_id: str, values: Mapping[str, Any]
    ) -> Snapshot:
        source = await self._writable(values)
        now = self._clock.now()

        def work(session: Session) -> Snapshot:
            live, highest = self._locked_key(session, org_id, source)
            draft = live.get(ChangeType.DRAFT.value)
            if draft is not None:
                raise validation_error(
                    [
                        FieldViolation(
                            "type",
                            f"{_key_text(source)} already has a draft (version "
                            f"{draft['version']}, id {draft['id']}): update it with PUT, or "
                            "commit or delete it first",
                            "Duplicate",
                        )
                    ]
                )
            row = self._new_version(org_id, application_id, source, highest, ChangeType.DRAFT, now)
            self.repository.insert_version(session, row)
            self._events.append(session, [template_event("created", row, now)])
            return template_snapshot(row)

        return await self.write(work)

    async def update_draft(
        self, org_id: str, application_id: str, values: Mapping[str, Any]
    ) -> Snapshot:
        """The draft updated in place (same id and version), or created when there is none."""
        source = await self._writable(values)
        now = self._clock.now()
        return await self.write(
            lambda session: self.put_draft(session, org_id, application_id, source, now)[0]
        )

    def put_draft(
        self,
        session: Session,
        org_id: str,
        application_id: str,
        source: TemplateSource,
        now: datetime,
    ) -> tuple[Snapshot, str]:
        """Inside a write: the key's draft set to `source`; created|updated|unchanged."""
        live, highest = self._locked_key(session, org_id, source)
        draft = live.get(ChangeType.DRAFT.value)
        if draft is None:
            row = self._new_version(org_id, application_id, source, highest, ChangeType.DRAFT, now)
            self.repository.insert_version(session, row)
            self._events.append(session, [template_event("created", row, now)])
            return template_snapshot(row), "created"
        if source.same_data(draft) and draft["request_ref"] == source.request_ref:
            return template_snapshot(draft), "unchanged"
        values = {
            "sender_info": source.sender_info,
            "subject": source.subject,
            "content": source.content,
            "request_ref": source.request_ref,
            "application_id": application_id,
            "updated_at": now,
        }
        self.repository.update_version(session, draft["id"], values)
        row = dict(draft) | values
        self._events.append(session, [template_event("updated", row, now)])
        return template_snapshot(row), "updated"

    def put_stable(
        self,
        session: Session,
        org_id: str,
        application_id: str,
        source: TemplateSource,
        now: datetime,
    ) -> tuple[Snapshot, str]:
        """Inside a write: a new stable version unless the stable one already says the same."""
        live, highest = self._locked_key(session, org_id, source)
        stable = live.get(ChangeType.STABLE.value)
        if stable is not None and source.same_data(stable):
            return template_snapshot(stable), "unchanged"
        row = self._new_version(org_id, application_id, source, highest, ChangeType.STABLE, now)
        events = self._archive(session, stable, now, row["id"])
        self.repository.insert_version(session, row)
        events.append(template_event("created", row, now))
        self._events.append(session, events)
        return template_snapshot(row), "created"

    async def delete(
        self,
        org_id: str,
        type_code: str,
        channel: str,
        language: str,
        change_type: str | None,
    ) -> list[Snapshot]:
        """The draft and/or stable version marked deleted (kept until a commit purges it)."""
        checks = Checks()
        key = _key(checks, type_code, channel, language)
        wanted = [ChangeType.DRAFT.value, ChangeType.STABLE.value]
        if change_type is not None:
            choice = checks.choice("changeType", change_type, ChangeType)
            if choice is not None and choice.value not in wanted:
                checks.fail("changeType", "must be draft or stable (or absent for both)", "Enum")
            wanted = [choice.value] if choice is not None else []
        checks.raise_if_failed()
        now = self._clock.now()

        def work(session: Session) -> list[Snapshot]:
            live, _ = self.repository.locked_key(session, org_id, *key)
            targets = [live[state] for state in wanted if state in live]
            if not targets:
                states = " or ".join(wanted)
                raise NotFound(f"no {states} template of {'/'.join(key)}")
            out: list[Snapshot] = []
            events: list[NewEvent] = []
            for target in targets:
                values = {"change_type": ChangeType.DELETED.value, "updated_at": now}
                self.repository.update_version(session, target["id"], values)
                row = dict(target) | values
                events.append(template_event("deleted", row, now, previous=target["change_type"]))
                out.append(template_snapshot(row))
            self._events.append(session, events)
            return out

        return await self.write(work)

    async def commit(
        self,
        org_id: str,
        commit_items: Sequence[Mapping[str, Any]],
        deleted_items: Sequence[Mapping[str, Any]],
    ) -> tuple[str, Snapshot]:
        """Drafts become stable (archiving the previous stable); deleted templates and examples
        are purged. All or nothing. Returns the commit id and the result."""
        checks = Checks()
        to_commit = parse_items(checks, "commitItems", commit_items)
        to_purge = parse_items(checks, "deletedItems", deleted_items)
        if not commit_items and not deleted_items:
            checks.fail("commitItems", "give at least one commit or deleted item", "Required")
        for index, ref in enumerate(to_purge):
            if ref.kind == "communication_type":
                checks.fail(
                    f"deletedItems[{index}]",
                    "communication types are not deleted (they are global; PUT replaces one)",
                )
        checks.raise_if_failed()
        commit_id = str(uuid.uuid4())
        now = self._clock.now()

        def work(session: Session) -> Snapshot:
            committed = [
                self._commit_one(session, org_id, ref, now, commit_id) for ref in to_commit
            ]
            deleted = [self._purge_one(session, org_id, ref, now, commit_id) for ref in to_purge]
            return {"committed": committed, "deleted": deleted}

        return commit_id, await self.write(work)

    def _commit_one(
        self, session: Session, org_id: str, ref: ItemRef, now: datetime, commit_id: str
    ) -> Snapshot:
        result: Snapshot = {
            "object_id": ref.object_id,
            "object_type": ref.object_type,
            "outcome": "unchanged",
            "archived_id": "",
        }
        if ref.kind == "communication_type":
            if self.repository.locked_type(session, ref.object_id) is None:
                raise NotFound(f"communication type {ref.object_id!r} not found")
            return result
        if ref.kind == "example":
            example = self.repository.locked_example(session, org_id, ref.object_id)
            if example is None or example["channel"] != ref.channel:
                raise NotFound(f"{ref.object_type} {ref.object_id!r} not found")
            return result
        row = self.repository.locked_version(session, org_id, ref.object_id)
        if row is None or row["channel"] != ref.channel:
            raise NotFound(f"{ref.object_type} {ref.object_id!r} not found")
        if row["change_type"] == ChangeType.STABLE.value:
            return result
        if row["change_type"] != ChangeType.DRAFT.value:
            raise validation_error(
                [
                    FieldViolation(
                        "commitItems",
                        f"{ref.object_type} {ref.object_id!r} is {row['change_type']}: only "
                        "drafts are committed",
                    )
                ]
            )
        live, _ = self.repository.locked_key(
            session, org_id, row["type_code"], row["channel"], row["language"]
        )
        events = self._archive(session, live.get(ChangeType.STABLE.value), now, row["id"])
        values = {"change_type": ChangeType.STABLE.value, "updated_at": now, "committed_at": now}
        self.repository.update_version(session, row["id"], values)
        events.append(template_event("committed", dict(row) | values, now, commit_id=commit_id))
        self._events.append(session, events)
        previous = live.get(ChangeType.STABLE.value)
        return result | {
            "outcome": "committed",
            "archived_id": previous["id"] if previous is not None else "",
        }

    def _purge_one(
        self, session: Session, org_id: str, ref: ItemRef, now: datetime, commit_id: str
    ) -> Snapshot:
        result: Snapshot = {
            "object_id": ref.object_id,
            "object_type": ref.object_type,
            "outcome": "purged",
            "archived_id": "",
        }
        if ref.kind == "example":
            example = self.repository.locked_example(session, org_id, ref.object_id)
            if example is None or example["channel"] != ref.channel:
                raise NotFound(f"{ref.object_type} {ref.object_id!r} not found")
            self.repository.delete_example(session, org_id, ref.object_id)
            self._events.append(
                session,
                [
                    NewEvent(
                        org_id,
                        "example.deleted",
                        ref.object_id,
                        {"id": ref.object_id, "commit_id": commit_id},
                        now,
                    )
                ],
            )
            return result
        row = self.repository.locked_version(session, org_id, ref.object_id)
        if row is None or row["channel"] != ref.channel:
            raise NotFound(f"{ref.object_type} {ref.object_id!r} not found")
        if row["change_type"] != ChangeType.DELETED.value:
            raise validation_error(
                [
                    FieldViolation(
                        "deletedItems",
                        f"{ref.object_type} {ref.object_id!r} is {row['change_type']}: only "
                        "deleted templates are purged (DELETE it first)",
                    )
                ]
            )
        self.repository.purge_version(session, row["id"])
        self._events.append(session, [template_event("purged", row, now, commit_id=commit_id)])
        return result

    # -- reads ---------------------------------------------------------------------------------

    async def search(
        self,
        org_id: str,
        filters: Mapping[str, str],
        *,
        change_type: str | None,
        limit: int,
        offset: int,
    ) -> list[Snapshot]:
        """Template versions of one change type (default stable) matching the filters: type
        (exact), type_contains, channel, language (exact), subject and content (contain, any
        case)."""
        checks = Checks()
        page = listing.page(checks, limit, offset, "")
        state = ChangeType.STABLE
        if change_type is not None:
            state = checks.choice("changeType", change_type, ChangeType) or state
        where: list[ColumnElement[bool]] = [_v.change_type == state.value]
        for name, value in filters.items():
            if name == "type":
                where.append(_v.type_code == value)
            elif name == "type_contains":
                where.append(_v.type_code.contains(value, autoescape=True))
            elif name == "channel":
                channel = checks.choice("channel", value, Channel)
                if channel is not None:
                    where.append(_v.channel == channel.value)
            elif name == "language":
                where.append(_v.language == normalize_language(value))
            elif name == "subject":
                where.append(func.lower(_v.subject).contains(value.lower(), autoescape=True))
            elif name == "content":
                where.append(func.lower(_v.content).contains(value.lower(), autoescape=True))
        checks.raise_if_failed()
        async with self._db.read() as session:
            rows = await self.repository.search(session, org_id, where, page.limit, page.offset)
        return [template_snapshot(r) for r in rows]

    async def history(
        self, org_id: str, type_code: str, channel: str, language: str
    ) -> list[Snapshot]:
        checks = Checks()
        key = _key(checks, type_code, channel, language)
        checks.raise_if_failed()
        async with self._db.read() as session:
            rows = await self.repository.history(session, org_id, *key)
        return [template_snapshot(r) for r in rows]

    # -- previews and validation ---------------------------------------------------------------

    async def preview(self, values: Mapping[str, Any]) -> Snapshot:
        """The template rendered with the given arguments; 400 for any problem."""
        found = await self.inspect(values)
        arguments = inspection.plain(values.get("arguments") or {})
        problems = found.problems + inspection.value_problems(found.kind, arguments)
        inspection.raise_problems(problems)
        assert found.source is not None and found.compiled_content is not None
        rendered, problems = self._render(found, arguments)
        inspection.raise_problems(problems)
        assert rendered is not None
        return rendered

    async def preview_validate(self, values: Mapping[str, Any]) -> Snapshot:
        """Every problem of the template and the given arguments, and the render."""
        found = await self.inspect(values)
        arguments = inspection.plain(values.get("arguments") or {})
        problems = found.problems + inspection.value_problems(found.kind, arguments)
        rendered = None
        if found.compiled_content is not None and found.source is not None:
            rendered, render_problems = self._render(found, arguments)
            problems += render_problems
        validation: Snapshot = {
            "valid": not problems,
            "problems": [p.snapshot() for p in problems],
            "examples": [],
            "template_id": "",
        }
        if rendered is not None:
            validation["rendered"] = rendered
        return validation

    async def validate_stored(
        self,
        org_id: str,
        type_code: str,
        language: str,
        channel: str,
        change_type: str | None,
    ) -> Snapshot:
        """The stored draft or stable version checked against its type and rendered against the
        org's examples of its type, language and channel."""
        checks = Checks()
        key = _key(checks, type_code, channel, language)
        state = ChangeType.STABLE
        if change_type is not None:
            choice = checks.choice("changeType", change_type, ChangeType)
            if choice is not None and choice not in (ChangeType.DRAFT, ChangeType.STABLE):
                checks.fail("changeType", "must be stable or draft", "Enum")
            state = choice or state
        checks.raise_if_failed()
        async with self._db.read() as session:
            row = await self.repository.current(session, org_id, *key, state.value)
            examples = await self.repository.examples_for(session, org_id, *key)
        if row is None:
            raise NotFound(f"no {state.value} template of {'/'.join(key)}")
        kind = await self.types.require_type(row["type_code"])
        content, subject, problems = compile_row(row)
        if content is not None:
            problems += inspection.argument_problems("data.content", content, kind.declared)
        if subject is not None:
            problems += inspection.argument_problems("data.subject", subject, kind.declared)
        source = TemplateSource(
            type_code=row["type_code"],
            language=row["language"],
            channel=row["channel"],
            sender_info=row["sender_info"],
            subject=row["subject"],
            content=row["content"],
            request_ref=row["request_ref"],
        )
        found = Inspection(kind, source, content, subject, problems)
        checks_out = [self._check_example(found, example) for example in examples]
        valid = not problems and all(c["passed"] for c in checks_out)
        return {
            "valid": valid,
            "problems": [p.snapshot() for p in problems],
            "examples": checks_out,
            "template_id": row["id"],
        }

    def _check_example(self, found: Inspection, example: Row) -> Snapshot:
        arguments = inspection.plain(example["arguments"] or {})
        problems = [
            Problem(f"examples[{example['id']}].{p.field}", p.message)
            for p in inspection.value_problems(found.kind, arguments)
        ]
        rendered = None
        if found.compiled_content is not None and not problems:
            rendered, render_problems = self._render(found, arguments)
            problems += render_problems
        result: Snapshot = {
            "example_id": example["id"],
            "passed": False,
            "diff": "",
            "problems": [p.snapshot() for p in problems],
        }
        if rendered is None:
            return result
        expected = {
            "senderInfo": example["expected_sender_info"],
            "subject": example["expected_subject"],
            "content": example["expected_content"],
        }
        actual = {
            "senderInfo": rendered["sender_info"],
            "subject": rendered.get("subject"),
            "content": rendered["content"],
        }
        if found.source is not None and found.source.channel != Channel.EMAIL:
            expected.pop("subject")
            actual.pop("subject")
        diff = inspection.unified_diff(expected, actual)
        return result | {"passed": not diff and not problems, "diff": diff, "rendered": rendered}

    @staticmethod
    def _render(
        found: Inspection, arguments: Mapping[str, Any]
    ) -> tuple[Snapshot | None, list[Problem]]:
        assert found.source is not None and found.compiled_content is not None
        content, problems = inspection.render("data.content", found.compiled_content, arguments)
        subject = None
        if found.compiled_subject is not None:
            subject, more = inspection.render("data.subject", found.compiled_subject, arguments)
            problems += more
        if content is None or problems:
            return None, problems
        return preview_snapshot(found.source, content, subject), []

    # -- building blocks -----------------------------------------------------------------------

    def _locked_key(
        self, session: Session, org_id: str, source: TemplateSource
    ) -> tuple[dict[str, Row], int]:
        return self.repository.locked_key(
            session, org_id, source.type_code, source.channel, source.language
        )

    @staticmethod
    def _new_version(
        org_id: str,
        application_id: str,
        source: TemplateSource,
        highest: int,
        state: ChangeType,
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "org_id": org_id,
            "type_code": source.type_code,
            "channel": source.channel,
            "language": source.language,
            "version": highest + 1,
            "change_type": state.value,
            "sender_info": source.sender_info,
            "subject": source.subject,
            "content": source.content,
            "request_ref": source.request_ref,
            "application_id": application_id,
            "created_at": now,
            "updated_at": now,
            "committed_at": now if state == ChangeType.STABLE else None,
        }

    def _archive(
        self, session: Session, stable: Row | None, now: datetime, successor: str
    ) -> list[NewEvent]:
        """The current stable version (if any) archived; returns its event."""
        if stable is None:
            return []
        values = {"change_type": ChangeType.ARCHIVED.value, "updated_at": now}
        self.repository.update_version(session, stable["id"], values)
        return [template_event("archived", dict(stable) | values, now, successor_id=successor)]

    async def write(self, work: Callable[[Session], T]) -> T:
        try:
            return await self._db.run_write(work)
        except IntegrityError as exc:  # PostgreSQL: a concurrent write took the version
            raise StaleData("the template changed concurrently: retry the request") from exc


def _key(checks: Checks, type_code: str, channel: str, language: str) -> tuple[str, str, str]:
    """A (type, channel, language) given in a query or body, checked and normalised."""
    type_code = type_code.strip()
    checks.required("type", type_code)
    chosen = None
    if checks.required("channel", channel):
        chosen = checks.choice("channel", channel, Channel)
    if checks.required("language", language):
        checks.language("language", language.strip())
    return type_code, chosen.value if chosen else "", normalize_language(language)


def _key_text(source: TemplateSource) -> str:
    return f"{source.type_code}/{source.channel}/{source.language}"
