"""The server's half of unknown-field detection: key paths listed by the edge, checked against
the request message of the method they were sent to."""

from __future__ import annotations

import pytest
from switchboard.sms.v1 import sms_service_pb2

from switchboard.server.core.json_fields import BodyShape

pytestmark = pytest.mark.unit

SERVICE = sms_service_pb2.DESCRIPTOR.services_by_name["SmsService"]


def unknown(method: str, header: str) -> list[str]:
    return [v.field for v in BodyShape(SERVICE.methods_by_name[method]).unknown_fields(header)]


def test_known_paths_in_json_or_proto_spelling_pass() -> None:
    header = "Messages,Messages[].channel,Messages[].clientMessageId,messages[].client_message_id"
    assert unknown("SendSms", header) == []


def test_unknown_keys_are_named_once_at_their_shallowest_point() -> None:
    header = "Messages,Messages[].chanel,Priority,Priority.level,Priority.level.x"
    assert unknown("SendSms", header) == ["Messages[].chanel", "Priority"]


def test_escaped_keys_are_decoded() -> None:
    assert unknown("SendSms", "Mess%2Eages,%50riority") == ["Mess.ages", "Priority"]


def test_methods_without_a_body_ignore_the_list() -> None:
    assert unknown("GetSmsMessage", "anything,at.all") == []


def test_keys_below_scalars_are_left_to_the_transcoder() -> None:
    assert unknown("SendSms", "Messages[].to.nested") == []
