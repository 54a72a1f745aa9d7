"""Every snapshot's keys are fields of the message it becomes.

`protomap.to_message` parses with `ignore_unknown_fields=True`, so a misspelled snapshot key would
silently vanish from every response and event. Each snapshot function here is called on a row with
every column of its table set (so that optional keys appear too), and its keys, nested ones
included, are checked against the message's descriptor."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, cast

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from sqlalchemy import Table, TypeDecorator
from switchboard.calling.v1 import bridge_pb2, call_pb2, conference_pb2
from switchboard.communications.v1 import (
    communication_pb2,
    communications_service_pb2,
    phone_number_pb2,
    short_url_pb2,
)
from switchboard.contacts.v1 import (
    access_token_pb2,
    consent_pb2,
    contact_group_pb2,
    contact_job_pb2,
    contact_pb2,
    fast_access_pb2,
)
from switchboard.messaging.v1 import (
    attachment_pb2,
    channel_pb2,
    event_handler_pb2,
    keyword_pb2,
    message_pb2,
    message_request_pb2,
    message_template_pb2,
    sender_pb2,
)
from switchboard.sms.v1 import sms_message_pb2
from switchboard.templates.v1 import communication_type_pb2, example_pb2, template_pb2

import switchboard.server
from switchboard.server.calling import bridges, conferences
from switchboard.server.calling import service as calls
from switchboard.server.communications import phone_validation, short_urls
from switchboard.server.communications import service as communications
from switchboard.server.communications.models import ChannelName
from switchboard.server.communications.rendering import Rendering
from switchboard.server.contacts import consent, fast_access, groups, jobs, tokens
from switchboard.server.contacts import service as contacts
from switchboard.server.contacts.models import JobKind
from switchboard.server.contacts.repository import contacts as contacts_table
from switchboard.server.contacts.repository import groups as groups_table
from switchboard.server.core.db import table_of
from switchboard.server.event_handlers import service as event_handlers
from switchboard.server.messaging.content import attachments, keywords, message_templates
from switchboard.server.messaging.requests import message_requests, messages
from switchboard.server.messaging.senders import channels, reference
from switchboard.server.messaging.senders import service as senders
from switchboard.server.sms import service as sms
from switchboard.server.sms.models import SmsRecord
from switchboard.server.templates import catalog, examples, inspection
from switchboard.server.templates import service as templates
from switchboard.server.templates.models import (
    CommunicationTypeRecord,
    ExampleRecord,
    TemplateVersionRecord,
)

pytestmark = pytest.mark.unit
SERVER = Path(switchboard.server.__file__).parent
_SNAPSHOT = re.compile(r"(^|_)snapshots?$")
NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
# Proto types whose JSON form is free (any keys): nothing to check below them.
_OPEN = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


def unknown_keys(snapshot: Mapping[str, Any], descriptor: Descriptor, path: str = "") -> list[str]:
    """The keys of `snapshot` (and of the dicts within it) that `descriptor` has no field for,
    by proto or JSON name, as ParseDict reads them."""
    by_name = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    unknown: list[str] = []
    for key, value in snapshot.items():
        field = by_name.get(key)
        if field is None:
            unknown.append(f"{path}{key}")
            continue
        nested = field.message_type
        if value is None or nested is None or nested.full_name in _OPEN:
            continue
        if nested.GetOptions().map_entry:
            value_field = nested.fields_by_name["value"]
            if value_field.message_type is not None and isinstance(value, Mapping):
                for k, v in value.items():
                    unknown += unknown_keys(v, value_field.message_type, f"{path}{key}[{k}].")
            continue
        if field.is_repeated:
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    unknown += unknown_keys(item, nested, f"{path}{key}[{i}].")
        elif isinstance(value, Mapping):
            unknown += unknown_keys(value, nested, f"{path}{key}.")
    return unknown


def row(table: Table, **values: Any) -> dict[str, Any]:
    """A row of `table` with every column set to a value of its type (`values` win)."""
    full: dict[str, Any] = {}
    for column in table.columns:
        sql_type = column.type
        while isinstance(sql_type, TypeDecorator):
            sql_type = sql_type.impl_instance
        try:
            kind: type = sql_type.python_type
        except NotImplementedError:
            kind = object
        if issubclass(kind, datetime):
            value: Any = NOW
        elif issubclass(kind, date):
            value = date(2026, 12, 7)
        elif issubclass(kind, bool):
            value = True
        elif issubclass(kind, int):
            value = 1
        elif issubclass(kind, float | Decimal):
            value = 1.5
        elif issubclass(kind, str):
            value = f"{column.name}-1"
        else:  # JSON
            value = {}
        full[column.name] = value
    return full | values


def _communication() -> dict[str, Any]:
    delivery = row(communications._deliveries, channel="sms", status="SENT")
    attachment = {"id": "att_1", "name": "a.pdf", "content_type": "application/pdf", "size": 3}
    record = row(
        communications._communications,
        sms_phone="+14155550100",
        whatsapp_phone="+14155550101",
        email_cc=["cc@example.com"],
        email_bcc=["bcc@example.com"],
        attachments=[attachment],
        arguments={"name": "Ada"},
    )
    return communications.communication_snapshot(record, [delivery])


def _short_url() -> dict[str, Any]:
    service = short_urls.ShortUrlService.__new__(short_urls.ShortUrlService)
    service.base_url = "https://sho.rt"
    return service.snapshot(row(short_urls._table))


def _job(kind: JobKind) -> dict[str, Any]:
    return jobs.snapshot(row(jobs.jobs, kind=kind.value, failures=["line 2: no address"]))


def _type() -> dict[str, Any]:
    arguments = [{"name": "name", "type": "STRING", "sensitive": True}]
    kind = catalog.from_row(row(table_of(CommunicationTypeRecord), arguments=arguments))
    return catalog.snapshot(kind)


def _channel_preview() -> dict[str, Any]:
    template = SimpleNamespace(id="tpl_1", version=2, sender_info="Acme")
    plan = communications.ChannelPlan(
        channel=ChannelName.SMS,
        template=cast(Any, template),
        language="en",
        masked=Rendering(subject="", content="Hello ****"),
    )
    service = communications.CommunicationService.__new__(communications.CommunicationService)
    return service._preview_snapshot(plan)


def _preview() -> dict[str, Any]:
    source = templates.TemplateSource("t", "en", "EMAIL", "from@example.com", "Hi", "Hello", "r")
    return templates.preview_snapshot(source, "Hello", "Hi")


# (name, snapshot builder, the message it becomes)
CASES: list[tuple[str, Callable[[], Mapping[str, Any]], type[Message]]] = [
    (
        "calling.bridge",
        lambda: bridges.bridge_snapshot(row(bridges.bridges_table)),
        bridge_pb2.Bridge,
    ),
    ("calling.call", lambda: calls.call_snapshot(row(calls.calls_table)), call_pb2.Call),
    ("calling.play", lambda: calls.play_snapshot(row(calls.plays_table)), call_pb2.Play),
    (
        "calling.conference",
        lambda: conferences.conference_snapshot(row(conferences.conferences_table)),
        conference_pb2.Conference,
    ),
    (
        "calling.member",
        lambda: conferences.member_snapshot(row(conferences.members_table), "conf-1"),
        conference_pb2.ConferenceMember,
    ),
    ("communications.communication", _communication, communication_pb2.Communication),
    (
        "event_handlers.handler",
        lambda: event_handlers.snapshot(row(event_handlers.handlers_table)),
        event_handler_pb2.EventHandler,
    ),
    (
        "event_handlers.delivery",
        lambda: event_handlers.delivery_snapshot(row(event_handlers.deliveries_table)),
        event_handler_pb2.EventDelivery,
    ),
    (
        "event_handlers.attempt",
        lambda: event_handlers.attempt_snapshot(row(event_handlers.attempts_table)),
        event_handler_pb2.DeliveryAttempt,
    ),
    (
        "event_handlers.replay",
        lambda: event_handlers.replay_snapshot(row(event_handlers.replays_table)),
        event_handler_pb2.EventReplay,
    ),
    (
        "communications.delivery",
        lambda: communications.delivery_snapshot(row(communications._deliveries)),
        communication_pb2.CommunicationChannel,
    ),
    (
        "communications.attachment",
        lambda: communications.attachment_snapshots(
            row(
                communications._communications,
                attachments=[{"id": "a", "name": "n", "content_type": "t", "size": 1}],
            )
        )[0],
        communication_pb2.CommunicationAttachment,
    ),
    ("communications.short_url", _short_url, short_url_pb2.ShortUrl),
    (
        "communications.phone_validation",
        lambda: phone_validation.validate(
            phone_validation.LineKind.MOBILE, "+14155550100", ""
        ).snapshot(),
        phone_number_pb2.PhoneNumberValidation,
    ),
    ("contacts.contact", lambda: contacts.snapshot(row(contacts_table)), contact_pb2.Contact),
    ("contacts.group", lambda: groups.snapshot(row(groups_table)), contact_group_pb2.ContactGroup),
    (
        "contacts.fast_access_rule",
        lambda: fast_access.snapshot(row(fast_access.rules_table)),
        fast_access_pb2.FastAccessRule,
    ),
    ("contacts.import_job", lambda: _job(JobKind.IMPORT), contact_job_pb2.ContactImportJob),
    ("contacts.export_job", lambda: _job(JobKind.EXPORT), contact_job_pb2.ContactExportJob),
    (
        "contacts.address_status",
        lambda: consent.status_snapshot(row(consent._statuses)),
        consent_pb2.ContactAddressStatus,
    ),
    (
        "contacts.address_history",
        lambda: consent.history_snapshot(row(consent._history)),
        consent_pb2.ContactAddressHistory,
    ),
    (
        "contacts.access_token",
        lambda: tokens.token_snapshot(row(tokens._tokens)),
        access_token_pb2.AccessToken,
    ),
    (
        "contacts.application_token",
        lambda: tokens.app_token_snapshot(row(tokens._app_tokens)),
        access_token_pb2.ContactApplicationToken,
    ),
    (
        "messaging.message_template",
        lambda: message_templates.snapshot(row(message_templates.templates_table)),
        message_template_pb2.MessageTemplate,
    ),
    (
        "messaging.keyword",
        lambda: keywords.snapshot(row(keywords.keywords_table)),
        keyword_pb2.Keyword,
    ),
    (
        "messaging.attachment",
        lambda: attachments.snapshot(row(attachments.attachments_table)),
        attachment_pb2.Attachment,
    ),
    (
        "messaging.message_request",
        lambda: message_requests.snapshot(row(message_requests.requests_table)),
        message_request_pb2.MessageRequest,
    ),
    (
        "messaging.message",
        lambda: messages.snapshot(row(messages.messages_table)),
        message_pb2.Message,
    ),
    (
        "messaging.sender_id_class",
        lambda: reference.class_snapshot(row(reference.classes)),
        sender_pb2.SenderIdClass,
    ),
    (
        "messaging.sender_id_type",
        lambda: reference.type_snapshot(row(reference.types)),
        sender_pb2.SenderIdType,
    ),
    ("messaging.sender_id", lambda: senders.snapshot(row(senders.senders)), sender_pb2.SenderId),
    ("messaging.channel", lambda: channels.snapshot(row(channels.channels)), channel_pb2.Channel),
    (
        "sms.message",
        lambda: sms.snapshot(row(table_of(SmsRecord))),
        sms_message_pb2.SmsMessageStatus,
    ),
    (
        "templates.template",
        lambda: templates.template_snapshot(row(table_of(TemplateVersionRecord))),
        template_pb2.Template,
    ),
    (
        "templates.example",
        lambda: examples.example_snapshot(row(table_of(ExampleRecord))),
        example_pb2.Example,
    ),
    ("templates.communication_type", _type, communication_type_pb2.CommunicationType),
    ("templates.preview", _preview, template_pb2.TemplatePreview),
    (
        "templates.problem",
        lambda: inspection.Problem("data.content", "is not closed", "{{#if", 2, 5).snapshot(),
        template_pb2.TemplateProblem,
    ),
    ("communications.channel_preview", _channel_preview, communication_pb2.ChannelPreview),
    # Not a snapshot function, but an event payload streamed as a message all the same.
    (
        "communications.delivery_event",
        lambda: (
            communications.delivery_event(row(communications._deliveries, status="SENT")).payload
        ),
        communications_service_pb2.CommunicationDelivery,
    ),
]


@pytest.mark.parametrize(("build", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_snapshot_keys_are_message_fields(
    build: Callable[[], Mapping[str, Any]], message: type[Message]
) -> None:
    snapshot = build()
    assert snapshot, "the snapshot is empty"
    assert unknown_keys(snapshot, cast(Descriptor, message.DESCRIPTOR)) == []
    # And the values parse as the fields' types (to_message, but refusing what it would drop).
    json_format.ParseDict({k: v for k, v in snapshot.items() if v is not None}, message())


def test_unknown_keys_are_found_at_any_depth() -> None:
    snapshot = {"id": "x", "data": {"content": "", "sujbect": ""}, "tpye": "t"}
    assert unknown_keys(snapshot, template_pb2.Template.DESCRIPTOR) == ["data.sujbect", "tpye"]


def _snapshot_functions() -> set[tuple[str, int]]:
    """Every function or method named `snapshot`, `*_snapshot` or `*_snapshots` in the server,
    as (file, line of its `def`)."""
    found: set[tuple[str, int]] = set()
    for path in SERVER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _SNAPSHOT.search(
                node.name
            ):
                found.add((str(path), node.lineno))
    return found


def test_every_snapshot_function_is_checked() -> None:
    """A new snapshot function needs a case in CASES (this notices one that has none)."""
    called: set[tuple[str, int]] = set()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            called.add((frame.f_code.co_filename, frame.f_code.co_firstlineno))

    sys.setprofile(profile)
    try:
        for _, build, _ in CASES:
            build()
    finally:
        sys.setprofile(None)
    missing = sorted(f"{file}:{line}" for file, line in _snapshot_functions() - called)
    assert missing == []
