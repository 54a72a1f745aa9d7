"""Hostile requests get a clean 4xx, every time (issue 13): request bytes that are not the method's
message, invalid UTF-8 in path ids and query filters, NUL characters in strings, resume cursors
beyond the log's range. Over gRPC to the real server and through the real Envoy for every REST
family; who is not admitted hears 401 before anything about their request."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from switchboard.communications.v1 import communications_service_pb2 as communications_pb
from switchboard.contacts.v1 import contacts_service_pb2 as contacts_pb
from switchboard.contacts.v1 import contacts_service_pb2_grpc
from switchboard.messaging.v1 import messaging_service_pb2 as messaging_pb
from switchboard.sms.v1 import sms_message_pb2 as sms_pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from switchboard.server.app.server import SERVICES
from switchboard.server.core.auth import Role
from switchboard.server.core.events import MAX_CURSOR
from switchboard.server.core.rpc import AccessPolicy
from tests.support.auth import Metadata, TokenFactory
from tests.support.errors import error_details

# What an answer to a client must never contain: the server's insides.
LEAKS = re.compile(r"Traceback|<class |DecodeError|google\.protobuf|_pb2|Error parsing|\.py\b")
POLICY = AccessPolicy(SERVICES)
BYTES = {"request_serializer": None, "response_deserializer": None}


def raw_unary(channel: grpc.aio.Channel, path: str) -> Any:
    return channel.unary_unary(path, **BYTES)


def assert_clean_invalid_argument(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert not LEAKS.search(error.details() or ""), error.details()
    reason, metadata, fields = error_details(error)
    assert (reason, metadata["http_status"]) == ("400", "400")
    return fields


# -- request bytes that are not the method's message ----------------------------------------------

GARBAGE = [
    b"\xff\xff\xff",  # a truncated varint key
    b"\x0a\x05ab",  # a string claiming more bytes than there are
    b"\x0b\x0a\x01a",  # a group that never ends
    b"\x07",  # wire type 7 does not exist
]


async def test_bytes_that_are_not_protobuf_are_invalid_argument_after_authentication(
    channel: grpc.aio.Channel, auth: Metadata
) -> None:
    unary = raw_unary(channel, "/switchboard.contacts.v1.ContactsService/GetContact")
    server_stream = channel.unary_stream("/switchboard.sms.v1.SmsService/StreamSmsEvents", **BYTES)
    for data in GARBAGE:
        # No token: the caller learns that first, and nothing about the request.
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await unary(data)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unary(data, metadata=auth)
        assert assert_clean_invalid_argument(refused.value) == []
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in server_stream(data, metadata=auth, timeout=5):
                pass
        assert_clean_invalid_argument(streamed.value)


async def test_client_streams_parse_each_message_after_authentication(
    channel: grpc.aio.Channel, auth: Metadata
) -> None:
    upload = channel.stream_unary(
        "/switchboard.contacts.v1.ContactsService/UploadContactImportFile", **BYTES
    )
    good = contacts_pb.UploadContactImportFileRequest(data=b"id\n").SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await upload(iter([b"\xff"]))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await upload(iter([good, b"\xff"]), metadata=auth, timeout=5)
    assert_clean_invalid_argument(refused.value)


async def test_invalid_utf8_names_the_field_in_the_clients_names(
    channel: grpc.aio.Channel, auth: Metadata
) -> None:
    get_contact = raw_unary(channel, "/switchboard.contacts.v1.ContactsService/GetContact")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await get_contact(b"\x0a\x02\xff\xfe", metadata=auth)  # contact_id = FF FE
    assert assert_clean_invalid_argument(refused.value) == [("contact_id", "Format")]

    # Nested and repeated: the SMS API names fields by their JSON names, with the index.
    good = sms_pb.SmsMessage(channel="smpp", to="+27821234567", content="hi")
    bad = sms_pb.SmsMessage(channel="smpp", to="+27821234567", content="@@")
    data = sms_pb.SendSmsRequest(messages=[good, bad]).SerializeToString()
    data = data.replace(b"@@", b"\xc3\x28")
    send = raw_unary(channel, "/switchboard.sms.v1.SmsService/SendSms")
    with pytest.raises(grpc.aio.AioRpcError) as nested:
        await send(data, metadata=auth)
    assert assert_clean_invalid_argument(nested.value) == [("Messages[1].content", "Format")]

    # A REST body field's prefix (`body`) is not part of the client's names.
    create = contacts_pb.CreateContactRequest()
    create.body.first_name = "@@"
    data = create.SerializeToString().replace(b"@@", b"\xe2\x82")
    create_contact = raw_unary(channel, "/switchboard.contacts.v1.ContactsService/CreateContact")
    with pytest.raises(grpc.aio.AioRpcError) as body:
        await create_contact(data, metadata=auth)
    assert assert_clean_invalid_argument(body.value) == [("first_name", "Format")]


# -- NUL characters -------------------------------------------------------------------------------


async def test_nul_in_any_string_is_refused_naming_the_field(
    channel: grpc.aio.Channel, auth: Metadata
) -> None:
    contacts = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    request = contacts_pb.CreateContactRequest()
    request.body.first_name = "Ana\x00"
    request.body.last_name = "\x00"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await contacts.CreateContact(request, metadata=auth)
    fields = assert_clean_invalid_argument(refused.value)
    assert sorted(fields) == [("first_name", "Format"), ("last_name", "Format")]

    sms = sms_service_pb2_grpc.SmsServiceStub(channel)
    ok = sms_pb.SmsMessage(channel="smpp", to="+27821234567", content="hi")
    message = sms_pb.SmsMessage(channel="smpp", to="+27821234567", content="hi\x00")
    with pytest.raises(grpc.aio.AioRpcError) as content:
        await sms.SendSms(sms_pb.SendSmsRequest(messages=[ok, message]), metadata=auth)
    assert assert_clean_invalid_argument(content.value) == [("Messages[1].content", "Format")]

    # Maps and free-form values (Struct) are named as a whole, keys included.
    submit = messaging_pb.SubmitMessageRequestRequest()
    submit.body.template_values["name\x00"] = "Ana"
    submit_path = "/switchboard.messaging.v1.MessagingService/SubmitMessageRequest"
    with pytest.raises(grpc.aio.AioRpcError) as mapped:
        await raw_unary(channel, submit_path)(submit.SerializeToString(), metadata=auth)
    assert assert_clean_invalid_argument(mapped.value) == [("template_values", "Format")]
    send = communications_pb.SendCommunicationRequest(org="x")
    send.body.arguments.update({"link": ["https://a.example/\x00"]})
    send_path = "/switchboard.communications.v1.CommunicationsService/SendCommunication"
    with pytest.raises(grpc.aio.AioRpcError) as struct:
        await raw_unary(channel, send_path)(send.SerializeToString(), metadata=auth)
    assert assert_clean_invalid_argument(struct.value) == [("arguments", "Format")]

    # Zero bytes outside strings (numbers, bytes fields) are fine.
    message = sms_pb.SmsMessage(channel="smpp", to="+27821234567", content="hi")
    reply = await sms.SendSms(sms_pb.SendSmsRequest(messages=[message]), metadata=auth)
    assert reply.smpp_msg_response.messages[0].accepted


@pytest.mark.envoy
async def test_nul_through_envoy_is_a_400_naming_the_field(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    response = await http.post("/contacts", json={"first_name": "A\u0000"}, headers=bearer)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "400"
    assert "first_name" in response.json()["error_description"]
    sms = {"Messages": [{"channel": "smpp", "to": "+27821234567", "content": "x\u0000"}]}
    response = await http.post("/communication/message/sms", json=sms, headers=bearer)
    assert response.status_code == 400, response.text
    errors = response.json()["ResponseStatus"]["Errors"]
    assert [e["FieldName"] for e in errors] == ["Messages[0].content"]


# -- invalid UTF-8 in every path id and query filter, through Envoy -------------------------------


@dataclass(frozen=True)
class Route:
    method: MethodDescriptor
    verb: str
    template: str

    @property
    def rpc(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def family(self) -> str:
        if self.template.startswith(("/v2/", "/s/")):
            return "A"
        return "C" if self.template.startswith("/communication/") else "B"

    def variables(self) -> list[str]:
        return re.findall(r"\{([^}=]+)\}", self.template)

    def path(self, org: str, hostile: str | None) -> str:
        def value(match: re.Match[str]) -> str:
            name = match[1]
            if name == hostile:
                return "%FF%FE"
            return org if name == "org" else f"x-{name}"

        return re.sub(r"\{([^}=]+)\}", value, self.template)


def routes() -> Iterator[Route]:
    for service in SERVICES:
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            for binding in [rule, *rule.additional_bindings]:
                verb = binding.WhichOneof("pattern")
                if verb in ("get", "post", "put", "delete", "patch"):
                    yield Route(method, verb, getattr(binding, verb))


def query_filters(route: Route) -> list[FieldDescriptor]:
    bound = set(route.variables())
    return [
        f
        for f in route.method.input_type.fields
        if f.type == FieldDescriptor.TYPE_STRING and f.name not in bound
    ]


def client_name(route: Route, field: FieldDescriptor) -> str:
    """The field as the route's family names it: proto names in B, JSON names in A and C."""
    name = field.name if route.family == "B" else field.json_name
    return f"{name}[0]" if field.is_repeated else name


def assert_family_400(route: Route, response: httpx.Response, field: str) -> None:
    where = f"{route.verb.upper()} {route.template}"
    assert response.status_code == 400, (where, response.status_code, response.text)
    body = response.json()
    if route.family == "A":
        # The first error is the status itself, then one per field.
        assert [e["title"] for e in body["errors"][1:]] == [field], (where, body)
    elif route.family == "B":
        assert body["error_code"] == "400" and field in body["error_description"], (where, body)
    else:
        assert [e["FieldName"] for e in body["ResponseStatus"]["Errors"]] == [field], body
    assert not LEAKS.search(response.text), (where, response.text)


async def send(
    http: httpx.AsyncClient, route: Route, url: str, headers: dict[str, str]
) -> httpx.Response:
    body: dict[str, Any] | None = {} if route.verb in ("post", "put", "patch") else None
    if route.method.server_streaming:
        # Streams answer errors before the first event; a success would never end.
        async with asyncio.timeout(10):
            request = http.build_request(route.verb.upper(), url, json=body, headers=headers)
            response = await http.send(request, stream=True)
            await response.aread()
            return response
    return await http.request(route.verb.upper(), url, json=body, headers=headers)


@pytest.mark.envoy
async def test_invalid_utf8_in_every_path_id_and_query_filter(
    http: httpx.AsyncClient, make_token: TokenFactory, org: str
) -> None:
    bearer = {"Authorization": f"Bearer {make_token(org, roles=list(Role))}"}  # may call all
    checked = 0
    for route in routes():
        fields = route.method.input_type.fields_by_name
        cases = [(route.path(org, v), client_name(route, fields[v])) for v in route.variables()]
        if route.verb in ("get", "delete"):
            cases += [
                (f"{route.path(org, None)}?{f.name}=%FF", client_name(route, f))
                for f in query_filters(route)
            ]
        for url, field in cases:
            anonymous = await send(http, route, url, {})
            if POLICY.is_public(route.rpc):
                assert_family_400(route, anonymous, field)
            else:
                assert anonymous.status_code == 401, (url, anonymous.text)
            assert_family_400(route, await send(http, route, url, bearer), field)
            checked += 1
    assert checked > 150  # every path id and query filter of the contract (ok if it grows)


# -- resume cursors -------------------------------------------------------------------------------

STREAMS = [
    "/communication/message/sms/events",
    "/contacts/events",
    "/calling/events",
    "/v2/orgs/{org}/communications/events",
]


@pytest.mark.envoy
@pytest.mark.parametrize("stream", STREAMS)
async def test_out_of_range_cursors_are_a_400_naming_after(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, stream: str
) -> None:
    url = stream.format(org=org)
    for cursor in ["9" * 40, "9" * 20, str(MAX_CURSOR + 1), "9" * 5000]:
        for how in ({"params": {"after": cursor}}, {"headers": {"Last-Event-ID": cursor}}):
            headers = {**bearer, **how.get("headers", {})}
            response = await http.get(url, params=how.get("params"), headers=headers)
            assert response.status_code == 400, (url, how, response.text)
            assert "after" in response.text and "Internal" not in response.text
    # The largest cursor is a cursor: the stream starts (and has nothing to say).
    async with http.stream(
        "GET", url, params={"after": str(MAX_CURSOR), "heartbeatSeconds": "1"}, headers=bearer
    ) as response:
        assert response.status_code == 200
        async with asyncio.timeout(10):
            first = await anext(response.aiter_lines())
        assert first  # an SSE line: the heartbeat


# -- a JSON body of null --------------------------------------------------------------------------


@pytest.mark.envoy
async def test_a_null_body_is_refused_on_every_write(
    http: httpx.AsyncClient, make_token: TokenFactory, org: str
) -> None:
    """The transcoder would read `null` as "no body"; the edge refuses it on every write, in the
    route family's shape (`{}` is an empty body, judged by each service). gRPC clients that leave
    a REQUIRED body out are refused by the gateway (next test)."""
    bearer = {
        "Authorization": f"Bearer {make_token(org, roles=list(Role))}",
        "content-type": "application/json",
    }
    checked = 0
    for route in routes():
        rule = route.method.GetOptions().Extensions[annotations_pb2.http]
        if route.verb not in ("post", "put", "patch") or route.method.name in NOT_ALLOWED:
            continue
        if rule.body != "*":
            body = route.method.input_type.fields_by_name[rule.body]
            if getattr(body.message_type, "full_name", "") == "google.api.HttpBody":
                continue  # raw uploads: any bytes are a body
        url = route.path(org, None)
        response = await http.request(route.verb.upper(), url, content=b"null", headers=bearer)
        where = (route.verb, route.template, response.text)
        assert response.status_code == 400, where
        assert "must be a JSON object, not null" in response.text, where
        checked += 1
    assert checked > 60

    # An empty object is a body: a contact whose attributes are all optional is created.
    response = await http.post("/contacts", content=b"{}", headers=bearer)
    assert response.status_code == 200, response.text


# Writes that are never allowed (403 whatever the body, which is therefore not REQUIRED).
NOT_ALLOWED = {"CreateMessage", "CreateMessageRequestMessage", "CreateMessageAttachment"}


async def test_grpc_requests_without_their_required_body_are_refused(
    channel: grpc.aio.Channel, auth: Metadata
) -> None:
    contacts = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await contacts.UpdateContact(
            contacts_pb.UpdateContactRequest(contact_id="ct_x"), metadata=auth
        )
    assert assert_clean_invalid_argument(refused.value) == [("body", "Required")]


async def test_if_match_that_is_no_version_is_a_400(
    channel: grpc.aio.Channel, auth: Metadata
) -> None:
    contacts = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    request = contacts_pb.UpdateContactRequest(contact_id="ct_x")
    request.body.first_name = "Ana"
    for value in ("9" * 5000, 'W/"-1"', "1.5", "12345678901"):  # int() refuses 4301+ digits
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await contacts.UpdateContact(request, metadata=[*auth, ("if-match", value)])
        assert assert_clean_invalid_argument(refused.value) == [("If-Match", "Invalid")]
