"""Deployment packages: selected templates, examples and types downloaded as one JSON file, and
that file imported into an org (another environment's, or the same one's).

A package is the `{commit, id, data}` envelope of `DeploymentPackage`: `id` names the package
(an org imports a given package once: the second import is a 400 "duplicate version"), `data`
holds the types, templates and examples. Import is all or nothing, in one transaction:

- types: created when missing, replaced when different (Admin only: types are global), else
  left alone;
- examples: created or replaced by id;
- templates: a stable version becomes a new stable version (archiving the current one) unless the
  current stable version already says the same; any other version becomes the key's draft
  (created, or the existing draft updated). Every template is validated as on any write.
"""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from sqlalchemy.orm import Session
from switchboard.templates.v1 import deployment_pb2

from switchboard.server.core.auth import Role
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    validation_error,
)
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.core.version import server_version
from switchboard.server.templates import catalog
from switchboard.server.templates.catalog import CommunicationType
from switchboard.server.templates.examples import (
    ExampleFields,
    ExampleService,
    canonical_uuid,
    example_snapshot,
)
from switchboard.server.templates.examples import shape as example_shape
from switchboard.server.templates.examples import validate_fields as example_fields
from switchboard.server.templates.models import ChangeType, Channel
from switchboard.server.templates.repository import TemplateRepository
from switchboard.server.templates.service import (
    CommunicationTypeService,
    TemplateService,
    TemplateSource,
    inspect_data,
    normalize_language,
    parse_items,
    template_snapshot,
)

FORMAT_VERSION = 1
PACKAGE_MAX_BYTES = 4 * 1024 * 1024  # gRPC's default message limit bounds the body anyway


@dataclass(frozen=True)
class _TemplateItem:
    object_id: str
    object_type: str
    source: TemplateSource
    stable: bool


@dataclass(frozen=True)
class _ExampleItem:
    object_id: str
    object_type: str
    fields: ExampleFields


def package_file(content_type: str, data: bytes) -> bytes:
    """The package JSON from an import body: the `file` part of a multipart/form-data body, or
    the body itself when it is JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + data)
        if not message.is_multipart():
            raise _invalid("file", "the multipart/form-data body has no parts (boundary?)")
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                payload = part.get_payload(decode=True)
                return payload if isinstance(payload, bytes) else b""
        raise _invalid("file", "the multipart/form-data body has no `file` part", "Required")
    if media in ("application/json", "") or data.lstrip()[:1] == b"{":
        return data
    raise _invalid("file", f"send multipart/form-data with a `file` part, not {media}")


def _invalid(field: str, description: str, reason: str = "Invalid") -> InvalidArgument:
    return InvalidArgument(
        f"invalid deployment package: {field}: {description}",
        violations=[FieldViolation(field, description, reason)],
    )


class DeploymentService:
    def __init__(
        self,
        db: Database,
        events: EventLog,
        clock: Clock,
        types: CommunicationTypeService,
        templates: TemplateService,
        examples: ExampleService,
        repository: TemplateRepository | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._types = types
        self._templates = templates
        self._examples = examples
        self.repository = repository or types.repository

    # -- download ------------------------------------------------------------------------------

    async def download(self, org_id: str, items: Sequence[Mapping[str, Any]]) -> Snapshot:
        """The package (as DeploymentPackageResponse's snapshot) of the selected objects and the
        types they use; 404 when an object does not exist in the org."""
        checks = Checks()
        refs = parse_items(checks, "download", items)
        if not items:
            checks.fail("download", "select at least one object", "Required")
        checks.raise_if_failed()
        template_ids = [r.object_id for r in refs if r.kind == "template"]
        example_ids = [
            canonical_uuid(r.object_id) or r.object_id for r in refs if r.kind == "example"
        ]
        async with self._db.read() as session:
            found_templates = await self.repository.versions_by_ids(session, org_id, template_ids)
            found_examples = await self.repository.examples_by_ids(session, org_id, example_ids)
        templates: list[Snapshot] = []
        examples: list[Snapshot] = []
        type_codes: list[str] = []
        for ref in refs:
            if ref.kind == "template":
                row = found_templates.get(ref.object_id)
                if row is None or row["channel"] != ref.channel:
                    raise NotFound(f"{ref.object_type} {ref.object_id!r} not found")
                templates.append(template_snapshot(row))
                type_codes.append(row["type_code"])
            elif ref.kind == "example":
                example = found_examples.get(canonical_uuid(ref.object_id) or ref.object_id)
                if example is None or example["channel"] != ref.channel:
                    raise NotFound(f"{ref.object_type} {ref.object_id!r} not found")
                examples.append(example_snapshot(example))
                type_codes.append(example["type_code"])
            else:
                type_codes.append(ref.object_id)
        types: list[Snapshot] = []
        for code in dict.fromkeys(type_codes):
            kind = await self._types.get_type(code)
            if kind is None:
                raise NotFound(f"communication_type {code!r} not found")
            types.append(catalog.snapshot(kind))
        return {
            "commit": server_version(),
            "id": str(uuid.uuid4()),
            "data": {
                "format_version": FORMAT_VERSION,
                "source_org": org_id,
                "created_time": iso(self._clock.now()),
                "types": types,
                "templates": templates,
                "examples": examples,
            },
        }

    # -- import --------------------------------------------------------------------------------

    async def import_package(
        self,
        org_id: str,
        application_id: str,
        roles: frozenset[Role],
        content_type: str,
        body: bytes,
    ) -> tuple[str, Snapshot]:
        """Import a package; returns its id and the DeploymentImportResult snapshot."""
        raw = package_file(content_type, body)
        if len(raw) > PACKAGE_MAX_BYTES:
            raise _invalid("file", f"a package is at most {PACKAGE_MAX_BYTES} bytes")
        package = self._parse(raw)
        package_id = package.id.strip()
        if not package_id or len(package_id) > 64:
            raise _invalid("id", "the package id is required (at most 64 characters)")
        data = package.data
        if data.format_version != FORMAT_VERSION:
            raise _invalid("data.formatVersion", f"must be {FORMAT_VERSION}")
        kinds = await self._package_types(data)
        examples = await self._package_examples(data, kinds)
        templates = await self._package_templates(data, kinds)
        now = self._clock.now()

        def work(session: Session) -> Snapshot:
            if self.repository.package_imported(session, org_id, package_id):
                raise _invalid(
                    "id", f"duplicate version: package {package_id!r} was already imported"
                )
            items: list[Snapshot] = []
            for kind, code in kinds.values():
                items.append(self._import_type(session, org_id, roles, kind, code, now))
            for example in examples:
                items.append(self._import_example(session, org_id, application_id, example, now))
            for template in templates:
                items.append(self._import_template(session, org_id, application_id, template, now))
            self.repository.record_import(
                session,
                {
                    "org_id": org_id,
                    "package_id": package_id,
                    "source_org": data.source_org[:64],
                    "application_id": application_id,
                    "imported_at": now,
                },
            )
            summary = {"package_id": package_id, "source_org": data.source_org, "items": len(items)}
            self._events.append(
                session, [NewEvent(org_id, "template_package.imported", package_id, summary, now)]
            )
            return {"items": items}

        return package_id, await self._templates.write(work)

    @staticmethod
    def _parse(raw: bytes) -> deployment_pb2.DeploymentPackageResponse:
        try:
            text = raw.decode("utf-8-sig")
            return json_format.Parse(text, deployment_pb2.DeploymentPackageResponse())
        except (UnicodeDecodeError, json_format.ParseError, ValueError) as exc:
            raise _invalid("file", f"not a deployment package JSON: {exc}") from exc

    async def _package_types(
        self, data: deployment_pb2.DeploymentPackage
    ) -> dict[str, tuple[CommunicationType, str]]:
        """The package's types (validated) by code, with the code of their change to come."""
        checks = Checks()
        kinds: dict[str, tuple[CommunicationType, str]] = {}
        for index, message in enumerate(data.types):
            values = json_format.MessageToDict(message, preserving_proto_field_name=True)
            sub = Checks()
            kind = catalog.validate_type(sub, message.code, values)
            for v in sub.violations:
                checks.fail(f"data.types[{index}].{v.field}", v.description, v.reason)
            if kind.code in kinds:
                checks.fail(f"data.types[{index}].code", f"type {kind.code!r} is listed twice")
            kinds[kind.code] = (kind, message.code)
        if checks.violations:
            raise validation_error(checks.violations, "invalid deployment package: bad types")
        return kinds

    async def _kind(
        self, code: str, kinds: Mapping[str, tuple[CommunicationType, str]]
    ) -> CommunicationType | None:
        if code in kinds:
            return kinds[code][0]
        return await self._types.get_type(code)

    async def _package_examples(
        self,
        data: deployment_pb2.DeploymentPackage,
        kinds: Mapping[str, tuple[CommunicationType, str]],
    ) -> list[_ExampleItem]:
        checks = Checks()
        out: list[_ExampleItem] = []
        seen: set[str] = set()
        for index, message in enumerate(data.examples):
            where = f"data.examples[{index}]"
            values = json_format.MessageToDict(message, preserving_proto_field_name=True)
            sub = Checks()
            example_id = canonical_uuid(message.id)
            if example_id is None:
                sub.fail("id", "must be a UUID", "Format")
            elif example_id in seen:
                sub.fail("id", f"example {example_id} is listed twice")
            type_code, channel, language = example_shape(sub, values)
            kind = await self._kind(type_code, kinds) if type_code else None
            if type_code and kind is None:
                sub.fail("type", f"no communication type {type_code!r} here or in the package")
            fields = None
            if kind is not None and not sub.violations:
                fields = example_fields(sub, kind, channel, language, values)
            for v in sub.violations:
                checks.fail(f"{where}.{v.field}", v.description, v.reason)
            if fields is not None and example_id is not None and not sub.violations:
                seen.add(example_id)
                out.append(_ExampleItem(example_id, f"{channel}_example", fields))
        if checks.violations:
            raise validation_error(checks.violations, "invalid deployment package: bad examples")
        return out

    async def _package_templates(
        self,
        data: deployment_pb2.DeploymentPackage,
        kinds: Mapping[str, tuple[CommunicationType, str]],
    ) -> list[_TemplateItem]:
        checks = Checks()
        out: list[_TemplateItem] = []
        seen: set[tuple[str, str, str, bool]] = set()
        for index, message in enumerate(data.templates):
            where = f"data.templates[{index}]"
            values = json_format.MessageToDict(message, preserving_proto_field_name=True)
            sub = Checks()
            type_code = message.type.strip()
            sub.required("type", type_code)
            channel = None
            if sub.required("channel", message.channel):
                channel = sub.choice("channel", message.channel, Channel)
            if sub.required("language", message.language):
                sub.language("language", message.language.strip())
            sub.length("requestRef", message.request_ref, 512)
            kind = await self._kind(type_code, kinds) if type_code else None
            if type_code and kind is None:
                sub.fail("type", f"no communication type {type_code!r} here or in the package")
            for v in sub.violations:
                checks.fail(f"{where}.{v.field}", v.description, v.reason)
            if sub.violations or kind is None or channel is None:
                continue
            found = inspect_data(kind, channel.value, values.get("data") or {})
            for problem in found.problems:
                checks.fail(f"{where}.{problem.field}", problem.describe(), "Template")
            if found.source is None or found.problems:
                continue
            stable = message.change_type == ChangeType.STABLE.value
            language = normalize_language(message.language)
            key = (kind.code, channel.value, language, stable)
            if key in seen:
                state = "stable" if stable else "draft"
                checks.fail(where, f"a second {state} template of {'/'.join(key[:3])}")
            seen.add(key)
            source = TemplateSource(
                type_code=kind.code,
                language=language,
                channel=channel.value,
                sender_info=found.source.sender_info,
                subject=found.source.subject,
                content=found.source.content,
                request_ref=message.request_ref.strip(),
            )
            out.append(_TemplateItem(message.id, f"{channel.value}_template", source, stable))
        if checks.violations:
            raise validation_error(checks.violations, "invalid deployment package: bad templates")
        return out

    def _import_type(
        self,
        session: Session,
        org_id: str,
        roles: frozenset[Role],
        kind: CommunicationType,
        object_id: str,
        now: datetime,
    ) -> Snapshot:
        current = self.repository.locked_type(session, kind.code)
        if current is not None:
            same = catalog.from_row(current)
            if _same_type(same, kind):
                return _item(object_id, "communication_type", "unchanged", kind.code)
        if Role.ADMIN not in roles:
            change = "create" if current is None else "change"
            raise PermissionDenied(
                f"the package would {change} communication type {kind.code!r}: types are global "
                "and only an Admin may write them (import as Admin, or PUT /v2/types first)"
            )
        _, outcome = self._types.apply(session, org_id, kind, now)
        return _item(object_id, "communication_type", outcome, kind.code)

    def _import_example(
        self, session: Session, org_id: str, application_id: str, item: _ExampleItem, now: datetime
    ) -> Snapshot:
        _, outcome = self._examples.apply(
            session, org_id, application_id, item.object_id, item.fields, now
        )
        return _item(item.object_id, item.object_type, outcome, item.object_id)

    def _import_template(
        self,
        session: Session,
        org_id: str,
        application_id: str,
        item: _TemplateItem,
        now: datetime,
    ) -> Snapshot:
        put = self._templates.put_stable if item.stable else self._templates.put_draft
        snapshot, outcome = put(session, org_id, application_id, item.source, now)
        return _item(
            item.object_id, item.object_type, outcome, snapshot["id"], snapshot["change_type"]
        )


def _same_type(a: CommunicationType, b: CommunicationType) -> bool:
    keys = ("description", "real_time_required", "delivery_window", "sending_type", "arguments")
    left, right = catalog.snapshot(a), catalog.snapshot(b)
    return all(left[k] == right[k] for k in keys)


def _item(
    object_id: str, object_type: str, outcome: str, new_id: str, change_type: str = ""
) -> Snapshot:
    return {
        "object_id": object_id,
        "object_type": object_type,
        "outcome": outcome,
        "new_object_id": new_id,
        "change_type": change_type,
    }
