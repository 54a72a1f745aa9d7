"""Examples: the output an org expects from the template of a type, language and channel for
some arguments. `validate` renders templates against them. Ids are UUIDs, unique per org (two
orgs may use the same id without seeing each other's example)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.errors import FieldViolation, NotFound, validation_error
from switchboard.server.core.events import EventLog
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.templates import catalog, inspection
from switchboard.server.templates.models import Channel
from switchboard.server.templates.repository import TemplateRepository, examples_table
from switchboard.server.templates.service import (
    REQUEST_REF_MAX,
    SUBJECT_MAX,
    CommunicationTypeService,
    normalize_language,
)

DESCRIPTION_MAX = 1000
EXPECTED_CONTENT_MAX = 512 * 1024


def canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def example_snapshot(row: Row) -> Snapshot:
    expected: Snapshot = {
        "sender_info": row["expected_sender_info"],
        "content": row["expected_content"],
    }
    if row["expected_subject"] is not None:
        expected["subject"] = row["expected_subject"]
    return {
        "id": row["id"],
        "type": row["type_code"],
        "language": row["language"],
        "channel": row["channel"],
        "request_ref": row["request_ref"],
        "description": row["description"],
        "expected_output": expected,
        "arguments": row["arguments"] or {},
        "created_time": iso(row["created_at"]),
        "updated_time": iso(row["updated_at"]),
    }


def _event_payload(row: Row) -> Snapshot:
    payload = example_snapshot(row)
    payload.pop("arguments")  # argument values may be sensitive
    return payload


@dataclass(frozen=True)
class ExampleFields:
    """A validated ExampleRequestDto: the columns to store."""

    type_code: str
    channel: str
    language: str
    request_ref: str
    description: str
    expected_sender_info: str
    expected_subject: str | None
    expected_content: str
    arguments: dict[str, Any]

    def columns(self) -> dict[str, Any]:
        return {
            "type_code": self.type_code,
            "channel": self.channel,
            "language": self.language,
            "request_ref": self.request_ref,
            "description": self.description,
            "expected_sender_info": self.expected_sender_info,
            "expected_subject": self.expected_subject,
            "expected_content": self.expected_content,
            "arguments": self.arguments,
        }


def shape(checks: Checks, values: Mapping[str, Any]) -> tuple[str, str, str]:
    """The type, channel and language of an example body (failures land on `checks`)."""
    type_code = str(values.get("type") or "").strip()
    checks.required("type", type_code)
    channel = None
    channel_text = str(values.get("channel") or "").strip()
    if checks.required("channel", channel_text):
        channel = checks.choice("channel", channel_text, Channel)
    language = str(values.get("language") or "").strip()
    if checks.required("language", language):
        checks.language("language", language)
    return type_code, channel.value if channel else "", normalize_language(language)


def validate_fields(
    checks: Checks,
    kind: catalog.CommunicationType,
    channel: str,
    language: str,
    values: Mapping[str, Any],
) -> ExampleFields:
    """The rest of an example body, against its (existing) type."""
    request_ref = str(values.get("request_ref") or "").strip()
    checks.length("requestRef", request_ref, REQUEST_REF_MAX)
    description = str(values.get("description") or "").strip()
    checks.length("description", description, DESCRIPTION_MAX)
    expected: Mapping[str, Any] = values.get("expected_output") or {}
    if "expected_output" not in values:
        checks.fail("expectedOutput", "is required", "Required")
    content = str(expected.get("content") or "")
    if "expected_output" in values and checks.required("expectedOutput.content", content):
        checks.length("expectedOutput.content", content, EXPECTED_CONTENT_MAX)
    sender_info = str(expected.get("sender_info") or "").strip()
    if channel in (Channel.SMS, Channel.WHATSAPP) and "expected_output" in values:
        checks.required("expectedOutput.senderInfo", sender_info)
    subject = expected.get("subject")
    if channel == Channel.EMAIL and "expected_output" in values:
        if checks.required("expectedOutput.subject", subject):
            checks.length("expectedOutput.subject", str(subject), SUBJECT_MAX)
    elif subject is not None and channel:
        checks.fail("expectedOutput.subject", "only email examples have a subject")
        subject = None
    arguments = values.get("arguments") or {}
    for name, problem in catalog.check_values(kind, arguments):
        checks.fail(f"arguments.{name}", problem)
    return ExampleFields(
        type_code=kind.code,
        channel=channel,
        language=language,
        request_ref=request_ref,
        description=description,
        expected_sender_info=sender_info,
        expected_subject=str(subject) if subject is not None else None,
        expected_content=content,
        arguments=dict(inspection.plain(dict(arguments))),
    )


class ExampleService:
    def __init__(
        self,
        db: Database,
        events: EventLog,
        clock: Clock,
        types: CommunicationTypeService,
        repository: TemplateRepository | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._types = types
        self.repository = repository or types.repository
        # Reads go through the repository (ids are canonical UUIDs); events through OrgTable.
        self.rows = OrgTable(
            db=db,
            events=events,
            table=examples_table,
            noun="example",
            event_prefix="example",
            snapshot=example_snapshot,
            event_payload=_event_payload,
        )

    async def get(self, org_id: str, example_id: str) -> Snapshot:
        canonical = canonical_uuid(example_id)
        row = None
        if canonical is not None:
            async with self._db.read() as session:
                row = await self.repository.get_example(session, org_id, canonical)
        if row is None:
            raise NotFound(f"example {example_id!r} not found")
        return example_snapshot(row)

    async def put(
        self, org_id: str, application_id: str, example_id: str, values: Mapping[str, Any]
    ) -> tuple[Snapshot, str]:
        """Create or replace; returns the example and created|updated|unchanged."""
        checks = Checks()
        canonical = canonical_uuid(example_id)
        if canonical is None:
            checks.fail("exampleId", "must be a UUID", "Format")
        body_id = str(values.get("id") or "").strip()
        if body_id and canonical is not None and canonical_uuid(body_id) != canonical:
            checks.fail("id", "must equal the path's exampleId")
        type_code, channel, language = shape(checks, values)
        checks.raise_if_failed()
        kind = await self._types.get_type(type_code)
        if kind is None:
            raise validation_error(
                [FieldViolation("type", f"no communication type {type_code!r}", "Unknown")]
            )
        fields = validate_fields(checks, kind, channel, language, values)
        checks.raise_if_failed()
        assert canonical is not None
        now = self._clock.now()
        return await self._db.run_write(
            lambda session: self.apply(session, org_id, application_id, canonical, fields, now)
        )

    def apply(
        self,
        session: Session,
        org_id: str,
        application_id: str,
        example_id: str,
        fields: ExampleFields,
        now: datetime,
    ) -> tuple[Snapshot, str]:
        """Inside a write: store the example unless identical."""
        current = self.repository.locked_example(session, org_id, example_id)
        columns = fields.columns()
        if current is None:
            row = {
                "org_id": org_id,
                "id": example_id,
                **columns,
                "application_id": application_id,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            self.repository.insert_example(session, row)
            self.rows.event(session, "created", row, now)
            return example_snapshot(row), "created"
        if all(current[k] == v for k, v in columns.items()):
            return example_snapshot(current), "unchanged"
        values = columns | {
            "application_id": application_id,
            "updated_at": now,
            "version": current["version"] + 1,
        }
        self.repository.update_example(session, org_id, example_id, values)
        row = dict(current) | values
        self.rows.event(session, "updated", row, now)
        return example_snapshot(row), "updated"
