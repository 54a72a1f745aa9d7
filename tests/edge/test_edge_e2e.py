"""The edge end to end: HTTP client -> real Envoy (edge.lua + transcoder) -> in-test gRPC servers.

The upstream servicers do what the request's ``x-edge-test`` header (which Envoy forwards as gRPC
metadata) tells them: succeed, set a success status, fail with a rich google.rpc.Status, crash,
or hold a stream open until the test releases it. Every call is recorded, so a test can look up
what the upstream received by the x-request-id it sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, empty_pb2, message_factory
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from grpc_tools import protoc  # type: ignore[import-untyped]
from switchboard.common.v1 import diagnostics_service_pb2, diagnostics_service_pb2_grpc, event_pb2
from switchboard.contacts.v1 import (
    contact_pb2,
    contacts_service_pb2,
    contacts_service_pb2_grpc,
    fast_access_pb2,
)
from switchboard.sms.v1 import sms_message_pb2, sms_service_pb2_grpc

from switchboard.server.app.services import TRANSCODED_SERVICES
from switchboard.server.edge.envoy import EnvoyProcess, EnvoySettings

pytestmark = pytest.mark.envoy

REPO = Path(__file__).resolve().parents[2]
TEST_SERVICE = "edgetest.v1.EdgeTestService"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# Contracts: the real ones plus tests/edge/edgetest.proto (a family A and a family B binding
# with a path variable and body "*", which no real RPC has yet).
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("descriptors") / "edge.binpb"
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").rglob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    argv = [
        "protoc",
        f"-I{REPO / 'proto'}",
        f"-I{REPO / 'third_party' / 'googleapis'}",
        f"-I{Path(__file__).parent}",
        f"-I{well_known}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        *protos,
        "edgetest.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
    ]
    assert protoc.main(argv) == 0, "protoc failed"
    return out


@dataclass(frozen=True)
class ThingMessages:
    """Message classes of edgetest.proto, by full name."""

    pool: descriptor_pool.DescriptorPool

    def __call__(self, name: str) -> type[Message]:
        cls: type[Message] = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(name))
        return cls

    @property
    def request(self) -> type[Message]:
        return self("edgetest.v1.CreateThingRequest")

    @property
    def response(self) -> type[Message]:
        return self("edgetest.v1.Thing")


@pytest.fixture(scope="session")
def thing_messages(descriptor_set: Path) -> ThingMessages:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:  # protoc lists dependencies first
        pool.Add(file)
    return ThingMessages(pool)


# ---------------------------------------------------------------------------------------------
# Scripted upstream
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    server: str
    method: str
    metadata: dict[str, str | bytes]
    request: Message


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    def by_request_id(self, request_id: str) -> Call:
        found = [c for c in self.calls if c.metadata.get("x-request-id") == request_id]
        assert len(found) == 1, f"{len(found)} upstream calls with x-request-id {request_id}"
        return found[0]

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())


def rich_status(
    code: int,
    message: str,
    reason: str,
    http_status: int,
    violations: Iterable[tuple[str, str, str]] = (),
) -> Any:
    """grpc.Status with google.rpc.Status, ErrorInfo (+ BadRequest): what the server sends."""
    status = status_pb2.Status(code=code, message=message)
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain="switchboard", metadata={"http_status": str(http_status)}
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    status.details.append(packed)
    violations = list(violations)
    if violations:
        bad = error_details_pb2.BadRequest()
        for field_path, description, violation_reason in violations:
            bad.field_violations.add(
                field=field_path, description=description, reason=violation_reason
            )
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
    return rpc_status.to_status(status)


INVALID = rich_status(
    code_pb2.INVALID_ARGUMENT,
    "2 invalid fields",
    "1023",
    400,
    [
        ("Messages[0].content", "must be at most 1600 characters", "Length"),
        ("Messages[1].to", "not a phone number", ""),
    ],
)
# What JSON can make hard for the Lua codec: quotes, backslashes, control characters, HTML
# characters (protobuf escapes them as \u003c), non-ASCII and a character outside the BMP.
TRICKY = '<b>"quoted"</b>\n\tC:\\path \x01 é € 😀'
# In list elements: what would trip a careless cut of the array out of its wrapper.
LIST_TEXT = 'a "]}," [{ \\" next_page_token'
SCENARIOS: dict[str, Any] = {
    "tricky": rich_status(code_pb2.INVALID_ARGUMENT, TRICKY, "400", 400, [(TRICKY, TRICKY, "")]),
    "invalid": INVALID,
    "payment": rich_status(code_pb2.FAILED_PRECONDITION, "insufficient credit", "402", 402),
    "conflict": rich_status(code_pb2.ABORTED, "version mismatch", "1001", 409),
    "unauthenticated": rich_status(code_pb2.UNAUTHENTICATED, "token expired", "401", 401),
}


async def play(
    recorder: Recorder,
    server: str,
    method: str,
    request: Message,
    context: Any,
    initial: Sequence[tuple[str, str]] = (),
) -> None:
    """Record the call, then do what its x-edge-test metadata says; send `initial` metadata."""
    metadata = dict(context.invocation_metadata())
    recorder.calls.append(Call(server, method, metadata, request))
    scenario = str(metadata.get("x-edge-test", ""))
    if scenario in SCENARIOS:
        await context.abort_with_status(SCENARIOS[scenario])
    elif scenario.startswith("status:"):
        initial = (*initial, ("x-switchboard-http-status", scenario[7:]))
    elif scenario == "late-error":
        # Initial metadata (with a success code) first, then the failure.
        await context.send_initial_metadata((*initial, ("x-switchboard-http-status", "201")))
        await context.abort_with_status(SCENARIOS["payment"])
    elif scenario == "slow":
        await asyncio.sleep(1)
    elif scenario == "crash":
        raise RuntimeError("secret internals: /srv/switchboard.db password=hunter2")
    if initial:
        await context.send_initial_metadata(tuple(initial))


class Diagnostics(diagnostics_service_pb2_grpc.DiagnosticsServiceServicer):
    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder, self.name = recorder, name

    async def InjectInboundMessage(
        self, request: diagnostics_service_pb2.InjectInboundMessageRequest, context: Any
    ) -> diagnostics_service_pb2.InjectInboundMessageResponse:
        return diagnostics_service_pb2.InjectInboundMessageResponse()

    async def ListOutbox(
        self, request: diagnostics_service_pb2.ListOutboxRequest, context: Any
    ) -> diagnostics_service_pb2.ListOutboxResponse:
        return diagnostics_service_pb2.ListOutboxResponse()

    async def Ping(
        self, request: diagnostics_service_pb2.PingRequest, context: Any
    ) -> diagnostics_service_pb2.PingResponse:
        await play(self.recorder, self.name, "Ping", request, context)
        return diagnostics_service_pb2.PingResponse(
            org="acme", server_time=Timestamp(seconds=1_700_000_000)
        )


class Sms(sms_service_pb2_grpc.SmsServiceServicer):
    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder, self.name = recorder, name

    async def SendSms(
        self, request: sms_message_pb2.SendSmsRequest, context: Any
    ) -> sms_message_pb2.SmsMsgResponse:
        await play(self.recorder, self.name, "SendSms", request, context)
        outcome = sms_message_pb2.GrandcomResponseMsg(
            api_message_id="m-1", accepted=True, to=request.messages[0].to
        )
        return sms_message_pb2.SmsMsgResponse(
            grandcom_msg_response=sms_message_pb2.GrandcomMsgResponse(messages=[outcome])
        )

    async def GetSmsMessage(
        self, request: sms_message_pb2.GetSmsMessageRequest, context: Any
    ) -> sms_message_pb2.SmsMessageStatus:
        await play(self.recorder, self.name, "GetSmsMessage", request, context)
        return sms_message_pb2.SmsMessageStatus(api_message_id=request.api_message_id)

    async def StreamSmsEvents(
        self, request: sms_message_pb2.StreamSmsEventsRequest, context: Any
    ) -> AsyncIterator[sms_message_pb2.SmsEvent]:
        await play(self.recorder, self.name, "StreamSmsEvents", request, context)
        gate = dict(context.invocation_metadata()).get("x-edge-gate")
        for cursor in (1, 2):
            if cursor == 2 and gate:
                await self.recorder.gate(gate).wait()
            envelope = event_pb2.EventEnvelope(cursor=str(cursor), type="sms.sent")
            yield sms_message_pb2.SmsEvent(envelope=envelope)


@dataclass
class Upstream:
    name: str
    port: int
    server: Any


# x-switchboard-json-fields alone may take 8 KiB: with gRPC's default limits (8 KiB soft, 16 KiB
# hard, for all metadata) a server refuses such calls at random, as RESOURCE_EXHAUSTED.
METADATA_LIMITS = (("grpc.max_metadata_size", 32768), ("grpc.absolute_max_metadata_size", 32768))


BARE_LIST = "x-switchboard-bare-list"


class Contacts(contacts_service_pb2_grpc.ContactsServiceServicer):
    """The real contract's RPCs whose REST paths need a route or path-matching care."""

    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder, self.name = recorder, name

    async def ListContacts(
        self, request: contacts_service_pb2.ListContactsRequest, context: Any
    ) -> contacts_service_pb2.ListContactsResponse:
        await play(
            self.recorder, self.name, "ListContacts", request, context, [(BARE_LIST, "contacts")]
        )
        contacts = [contact_pb2.Contact(id=f"c{i}", first_name="Ada") for i in range(2)]
        return contacts_service_pb2.ListContactsResponse(contacts=contacts, next_page_token="p2")

    async def ListFastAccessRules(
        self, request: contacts_service_pb2.ListFastAccessRulesRequest, context: Any
    ) -> contacts_service_pb2.ListFastAccessRulesResponse:
        await play(
            self.recorder,
            self.name,
            "ListFastAccessRules",
            request,
            context,
            [(BARE_LIST, "rules")],
        )
        return contacts_service_pb2.ListFastAccessRulesResponse()

    async def GetFastAccessRule(
        self, request: contacts_service_pb2.GetFastAccessRuleRequest, context: Any
    ) -> fast_access_pb2.FastAccessRule:
        await play(self.recorder, self.name, "GetFastAccessRule", request, context)
        return fast_access_pb2.FastAccessRule(id=request.rule_id)

    async def GetContact(
        self, request: contacts_service_pb2.GetContactRequest, context: Any
    ) -> contact_pb2.Contact:
        await play(self.recorder, self.name, "GetContact", request, context)
        return contact_pb2.Contact(id=request.contact_id)

    async def ReplaceContact(
        self, request: contacts_service_pb2.ReplaceContactRequest, context: Any
    ) -> empty_pb2.Empty:
        await play(self.recorder, self.name, "ReplaceContact", request, context)
        return empty_pb2.Empty()

    async def RemoveBlacklistEntry(
        self, request: contacts_service_pb2.RemoveBlacklistEntryRequest, context: Any
    ) -> contacts_service_pb2.RemoveBlacklistEntryResponse:
        await play(self.recorder, self.name, "RemoveBlacklistEntry", request, context)
        return contacts_service_pb2.RemoveBlacklistEntryResponse(id=request.address)

    async def DownloadContactExport(
        self, request: contacts_service_pb2.DownloadContactExportRequest, context: Any
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        await play(self.recorder, self.name, "DownloadContactExport", request, context)
        gate = dict(context.invocation_metadata()).get("x-edge-gate")
        for index, chunk in enumerate(export_chunks(request.job_id)):
            if index == 1 and gate:
                await self.recorder.gate(str(gate)).wait()
            # Only the first message's content_type counts.
            content_type = "text/csv" if index == 0 else "application/x-ignored"
            yield httpbody_pb2.HttpBody(content_type=content_type, data=chunk)

    async def StreamContactsEvents(
        self, request: contacts_service_pb2.StreamContactsEventsRequest, context: Any
    ) -> AsyncIterator[contacts_service_pb2.ContactsEvent]:
        await play(self.recorder, self.name, "StreamContactsEvents", request, context)
        for cursor in (1, 2):
            envelope = event_pb2.EventEnvelope(
                cursor=str(cursor), type="contact.created", resource_id=f"c{cursor}"
            )
            yield contacts_service_pb2.ContactsEvent(
                envelope=envelope, contact=contact_pb2.Contact(id=f"c{cursor}")
            )


EXPORT_CHUNK = 256 * 1024
EXPORT_CHUNKS = 12  # 3 MiB: past every buffer limit on the way


def export_chunks(job_id: str) -> list[bytes]:
    """A CSV file of EXPORT_CHUNKS chunks; every line says where it is, so any loss shows."""
    chunks = []
    for index in range(EXPORT_CHUNKS):
        line = f"{job_id},{index:04d},".encode()
        lines = (line + b"x" * (63 - len(line)) + b"\n") * (EXPORT_CHUNK // 64)
        chunks.append(lines)
    return chunks


def new(cls: type[Message], **fields: Any) -> Message:
    """``cls(**fields)`` for a class built from a descriptor at run time: no stub knows its
    fields (protobuf's stubs type ``Message()`` as taking none)."""
    factory: Callable[..., Message] = cls
    return factory(**fields)


def thing_handlers(
    recorder: Recorder, name: str, messages: ThingMessages
) -> grpc.GenericRpcHandler:
    """edgetest.v1.EdgeTestService: echoes, in the shape of the RPC it mirrors."""
    Thing = messages("edgetest.v1.Thing")
    ListThingsResponse = messages("edgetest.v1.ListThingsResponse")

    async def create_thing(request: Any, context: Any) -> Message:
        await play(recorder, name, "CreateThing", request, context)
        return Thing.FromString(request.SerializeToString())  # same field numbers

    async def list_things(request: Any, context: Any) -> Message:
        field = request.list_field or "things"
        await play(recorder, name, "ListThings", request, context, [(BARE_LIST, field)])
        things = [
            new(Thing, org=f"o{i}", display_name=LIST_TEXT, count=i, active=i % 2 == 1, tags=["t"])
            for i in range(request.count)
        ]
        return new(
            ListThingsResponse,
            things=things,
            next_page_token=request.page_token,
            total=request.count,
        )

    async def list_special_things(request: Any, context: Any) -> Message:
        await play(recorder, name, "ListSpecialThings", request, context)
        return ListThingsResponse()

    async def get_thing(request: Any, context: Any) -> Message:
        await play(recorder, name, "GetThing", request, context)
        return new(Thing, org=request.org, display_name=request.thing_id)

    async def get_special_thing(request: Any, context: Any) -> Message:
        await play(recorder, name, "GetSpecialThing", request, context)
        return new(Thing, display_name=request.thing_id)

    async def replace_thing(request: Message, context: Any) -> Message:
        await play(recorder, name, "ReplaceThing", request, context)
        return request

    implementations = {
        "CreateThing": (create_thing, "CreateThingRequest", "Thing"),
        "ListThings": (list_things, "ListThingsRequest", "ListThingsResponse"),
        "ListSpecialThings": (list_special_things, None, "ListThingsResponse"),
        "GetThing": (get_thing, "GetThingRequest", "Thing"),
        "GetSpecialThing": (get_special_thing, "GetThingRequest", "Thing"),
        "ReplaceThing": (replace_thing, "ReplaceThingRequest", "ReplaceThingRequest"),
    }
    handlers = {}
    for method, (function, request_name, response_name) in implementations.items():
        request_class = messages(f"edgetest.v1.{request_name}") if request_name else empty_pb2.Empty
        response_class = messages(f"edgetest.v1.{response_name}")
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            function,
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(TEST_SERVICE, handlers)


async def start_upstream(name: str, recorder: Recorder, messages: ThingMessages) -> Upstream:
    server = grpc.aio.server(options=METADATA_LIMITS)
    diagnostics_service_pb2_grpc.add_DiagnosticsServiceServicer_to_server(
        Diagnostics(recorder, name), server
    )
    sms_service_pb2_grpc.add_SmsServiceServicer_to_server(Sms(recorder, name), server)
    # Contacts implements only the RPCs these tests call; the others answer UNIMPLEMENTED.
    contacts = Contacts(recorder, name)  # type: ignore[abstract]
    contacts_service_pb2_grpc.add_ContactsServiceServicer_to_server(contacts, server)
    server.add_generic_rpc_handlers((thing_handlers(recorder, name, messages),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Upstream(name, port, server)


def edge_settings(
    descriptor: Path, upstreams: Sequence[tuple[str, int]], access_log: Path
) -> EnvoySettings:
    return EnvoySettings(
        listen_port=free_port(),
        admin_port=free_port(),
        upstreams=upstreams,
        descriptor_path=descriptor,
        listen_host="127.0.0.1",
        access_log_path=str(access_log),
        services=(*TRANSCODED_SERVICES, TEST_SERVICE),
    )


@dataclass
class Edge:
    envoy: EnvoyProcess
    recorder: Recorder
    upstreams: list[Upstream]
    access_log: Path


@pytest.fixture(scope="module")
async def edge(
    descriptor_set: Path, thing_messages: ThingMessages, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    recorder = Recorder()
    upstreams = [await start_upstream(n, recorder, thing_messages) for n in ("one", "two")]
    work = tmp_path_factory.mktemp("edge")
    settings = edge_settings(
        descriptor_set, [("127.0.0.1", u.port) for u in upstreams], work / "access.log"
    )
    try:
        async with EnvoyProcess(settings, work) as envoy:
            yield Edge(envoy, recorder, upstreams, work / "access.log")
            # A Lua runtime error would have let some response through unshaped.
            assert "[lua]" not in envoy.stderr(), envoy.stderr()
    finally:
        for upstream in upstreams:
            await upstream.server.stop(None)


@pytest.fixture
async def client(edge: Edge) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=edge.envoy.base_url, timeout=10.0, trust_env=False
    ) as http:
        yield http


def rid() -> str:
    return f"test-{uuid.uuid4()}"


# ---------------------------------------------------------------------------------------------
# Successes
# ---------------------------------------------------------------------------------------------


async def test_family_b_prints_snake_case(client: httpx.AsyncClient) -> None:
    response = await client.get("/diagnostics/ping")
    assert response.status_code == 200
    assert response.json() == {"org": "acme", "server_time": "2023-11-14T22:13:20Z"}


async def test_families_a_and_c_print_camel_case(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/orgs/acme/things", json={"displayName": "Ada", "count": 2})
    assert response.status_code == 200
    assert response.json() == {
        "org": "acme",
        "displayName": "Ada",
        "count": 2,
        "active": False,  # always_print_primitive_fields
        "tags": [],
    }
    response = await client.post(
        "/communication/message/sms",
        json={"Messages": [{"channel": "grandcom", "to": "+27821234567", "content": "hi"}]},
    )
    assert response.status_code == 200
    outcome = response.json()["grandcomMsgResponse"]["messages"][0]
    assert outcome["apiMessageId"] == "m-1"
    assert outcome["to"] == "+27821234567"


@pytest.mark.parametrize("code", ["201", "202", "206"])
async def test_success_status_comes_from_metadata(client: httpx.AsyncClient, code: str) -> None:
    response = await client.get("/diagnostics/ping", headers={"x-edge-test": f"status:{code}"})
    assert response.status_code == int(code)
    assert response.json()["org"] == "acme"
    assert "x-switchboard-http-status" not in response.headers


# ---------------------------------------------------------------------------------------------
# Errors from the server, in each family's shape
# ---------------------------------------------------------------------------------------------


async def test_family_a_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/orgs/acme/things", json={"displayName": "x"}, headers={"x-edge-test": "invalid"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    ref = response.headers["x-request-id"]
    assert response.json() == {
        "errors": [
            {
                "code": "1023",
                "title": "Bad Request",
                "details": "2 invalid fields",
                "ref": ref,
                "httpStatusCode": 400,
            },
            {
                "code": "Length",
                "title": "Messages[0].content",
                "details": "must be at most 1600 characters",
                "ref": ref,
                "httpStatusCode": 400,
            },
            {
                "code": "1023",
                "title": "Messages[1].to",
                "details": "not a phone number",
                "ref": ref,
                "httpStatusCode": 400,
            },
        ]
    }


async def test_family_b_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/diagnostics/ping", headers={"x-edge-test": "invalid"})
    assert response.status_code == 400
    assert response.json() == {
        "error_code": "1023",
        "error_description": "2 invalid fields; Messages[0].content: must be at most 1600 "
        "characters; Messages[1].to: not a phone number",
    }


async def test_error_text_survives_the_json_round_trip(client: httpx.AsyncClient) -> None:
    response = await client.get("/diagnostics/ping", headers={"x-edge-test": "tricky"})
    assert response.status_code == 400
    assert response.json() == {
        "error_code": "400",
        "error_description": f"{TRICKY}; {TRICKY}: {TRICKY}",
    }
    response = await client.post("/v2/orgs/acme/things", json={}, headers={"x-edge-test": "tricky"})
    errors = response.json()["errors"]
    assert [e["details"] for e in errors] == [TRICKY, TRICKY]
    assert errors[1]["title"] == TRICKY


async def test_family_c_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/communication/message/sms",
        json={"Messages": [{"channel": "grandcom", "to": "+1", "content": "x"}]},
        headers={"x-edge-test": "invalid"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "ResponseStatus": {
            "ErrorCode": "ValidationException",
            "Message": "2 invalid fields",
            "Errors": [
                {
                    "ErrorCode": "Length",
                    "FieldName": "Messages[0].content",
                    "Message": "must be at most 1600 characters",
                },
                {
                    "ErrorCode": "Invalid",
                    "FieldName": "Messages[1].to",
                    "Message": "not a phone number",
                },
            ],
        }
    }


@pytest.mark.parametrize(
    ("scenario", "status", "family_b", "family_c"),
    [
        ("payment", 402, "402", "PaymentRequired"),  # FAILED_PRECONDITION alone would be 400
        ("conflict", 409, "1001", "Conflict"),
        ("unauthenticated", 401, "401", "Unauthorized"),
        ("late-error", 402, "402", "PaymentRequired"),  # headers with 201 came first
    ],
)
async def test_http_status_comes_from_error_info(
    client: httpx.AsyncClient, scenario: str, status: int, family_b: str, family_c: str
) -> None:
    headers = {"x-edge-test": scenario}
    response = await client.get("/diagnostics/ping", headers=headers)
    assert response.status_code == status
    assert response.json()["error_code"] == family_b
    response = await client.get("/communication/message/sms/m-1", headers=headers)
    assert response.status_code == status
    assert response.json()["ResponseStatus"]["ErrorCode"] == family_c
    response = await client.post("/v2/orgs/acme/things", json={}, headers=headers)
    assert response.status_code == status
    assert response.json()["errors"][0]["httpStatusCode"] == status


async def test_crash_hides_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/communication/message/sms/m-1", headers={"x-edge-test": "crash"})
    assert response.status_code == 500
    assert response.json() == {
        "ResponseStatus": {
            "ErrorCode": "InternalServerError",
            "Message": "internal server error",
            "Errors": [],
        }
    }
    response = await client.get("/diagnostics/ping", headers={"x-edge-test": "crash"})
    assert response.json() == {"error_code": "500", "error_description": "internal server error"}
    assert "secret" not in response.text


# ---------------------------------------------------------------------------------------------
# Envoy's own replies
# ---------------------------------------------------------------------------------------------


async def test_unknown_query_parameter(client: httpx.AsyncClient) -> None:
    response = await client.get("/communication/message/sms/m-1", params={"colour": "red"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    status = response.json()["ResponseStatus"]
    assert status["ErrorCode"] == "ValidationException"
    assert "colour" in status["Message"]
    assert status["Errors"] == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/communication/message/sms", '{"Messages": [{"to": '),
        ("/communication/message/sms", '{"Messages": "not a list"}'),
        ("/communication/message/sms", '{"Messages": [], "x": 1,,}'),  # lax, not that lax
        ("/v2/orgs/acme/things", "displayName=Ada"),
        ("/contacts/acme/things", '{"display_name": "Ada"'),
        ("/contacts/acme/things", '"Ada"'),
    ],
)
async def test_malformed_json(edge: Edge, client: httpx.AsyncClient, path: str, body: str) -> None:
    request_id = rid()
    response = await client.post(
        path,
        content=body,
        # edge.lua lists no keys for these, and the client's own list goes nowhere.
        headers={"content-type": "application/json", "x-request-id": request_id, FIELDS: "x"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    if path.startswith("/v2/"):
        assert document["errors"][0]["code"] == "400"
        assert document["errors"][0]["title"] == "Bad Request"
        assert document["errors"][0]["details"]
    elif path.startswith("/contacts/"):
        assert document["error_code"] == "400"
        assert document["error_description"]
    else:
        assert document["ResponseStatus"]["ErrorCode"] == "ValidationException"
        assert document["ResponseStatus"]["Message"]
    assert not [c for c in edge.recorder.calls if c.metadata.get("x-request-id") == request_id]


async def test_unknown_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/communication/nothing/here")
    assert response.status_code == 404
    assert response.json()["ResponseStatus"]["ErrorCode"] == "NotFound"
    response = await client.get("/nothing/here")
    assert response.status_code == 404
    assert response.json()["error_code"] == "404"
    response = await client.delete("/diagnostics/ping")  # known path, unbound method
    assert response.status_code == 404
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    error = response.json()["errors"][0]
    assert (error["code"], error["title"], error["httpStatusCode"]) == ("404", "Not Found", 404)
    assert error["ref"] == response.headers["x-request-id"]


async def test_body_field_colliding_with_path_field(edge: Edge, client: httpx.AsyncClient) -> None:
    request_id = rid()
    response = await client.post(
        "/v2/orgs/acme/things", json={"org": "evil"}, headers={"x-request-id": request_id}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "400"
    assert not [c for c in edge.recorder.calls if c.metadata.get("x-request-id") == request_id]


# ---------------------------------------------------------------------------------------------
# Form bodies (family B)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_family_b_form_body_becomes_json(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(
        method,
        "/contacts/acme/things",
        content="display_name=Ada+Lovelace%20%C3%A9&count=7&active=true&tags=x&tags=y%26z",
        headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "org": "acme",
        "display_name": "Ada Lovelace é",
        "count": 7,
        "active": True,
        "tags": ["x", "y&z"],
    }


async def test_family_b_json_body_still_works(client: httpx.AsyncClient) -> None:
    response = await client.post("/contacts/acme/things", json={"display_name": "Ada", "tags": "x"})
    assert response.status_code == 200
    assert response.json()["display_name"] == "Ada"
    assert response.json()["tags"] == ["x"]


async def test_form_body_errors_keep_the_family_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/contacts/acme/things",
        data={"count": "many"},
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "400"


@pytest.mark.parametrize("form", ["=x", "display_name=Ada&=x", "=", "=true"])
async def test_a_form_pair_without_a_name_is_refused_like_json(
    client: httpx.AsyncClient, form: str
) -> None:
    # It was dropped and the rest accepted (found by fuzzing); JSON {"": "x"} is a 400.
    response = await client.post(
        "/contacts/acme/things",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error_code", "error_description"}


# ---------------------------------------------------------------------------------------------
# The keys of a JSON body, listed for the server's unknown-field check
# ---------------------------------------------------------------------------------------------

FIELDS = "x-switchboard-json-fields"
FIELDS_MAX = 8192


def capped(paths: Iterable[str]) -> str:
    """The header edge.lua sends for these paths: sorted, and only as many as fit."""
    kept: list[str] = []
    size = -1  # no comma before the first
    for path in sorted(set(paths)):
        size += 1 + len(path)
        if size > FIELDS_MAX:
            break
        kept.append(path)
    return ",".join(kept)


async def upstream_fields(
    edge: Edge,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: str | bytes,
    content_type: str | None = "application/json",
    client_fields: str | None = None,
) -> str | bytes | None:
    """Send a request; what the upstream received as x-switchboard-json-fields."""
    request_id = rid()
    headers = {"x-request-id": request_id}
    if content_type is not None:
        headers["content-type"] = content_type
    if client_fields is not None:
        headers[FIELDS] = client_fields
    response = await client.request(method, path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return edge.recorder.by_request_id(request_id).metadata.get(FIELDS)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/communication/message/sms",
            '{"Messages":[{"channel":"smpp","chanel":"x"}],"extra":{"a":[1]}}',
            "Messages,Messages[].chanel,Messages[].channel,extra,extra.a",
        ),
        (  # arrays in arrays; every element's keys, each path once
            "/communication/message/sms",
            '{"Messages":[{"channel":"smpp","to":"+1"},{"chanel":"x"}],"x":{"y":[[{"z":1}]]}}',
            "Messages,Messages[].chanel,Messages[].channel,Messages[].to,x,x.y,x.y[][].z",
        ),
        (  # null values, empty containers and null elements still count
            "/communication/message/sms",
            '{"Messages":[{"to":"+1","chanel":null}],"a":null,"b":[],"c":{},"d":[null,{"e":1}]}',
            "Messages,Messages[].chanel,Messages[].to,a,b,c,d,d[].e",
        ),
        (  # a top-level array (body: "items")
            "/contacts/acme/things/items",
            '[{"name":"a","nmae":"b"},{"name":"c"}]',
            "[].name,[].nmae",
        ),
        ("/contacts/acme/things", "{}", ""),
        (  # what the transcoder's parser also accepts: bare keys, single quotes, trailing commas,
            # escapes in keys, \f and \v as space
            "/communication/message/sms",
            "{Messages: [{to: '+1', 'ch\\u0061nnel': 'x',},],\f'chan\\el':\v\"\\q\",}",
            "Messages,Messages[].channel,Messages[].to,chanel",
        ),
        (  # keys that would be ambiguous, or unsafe in a header, are percent-encoded
            "/v2/orgs/acme/things",
            '{"displayName":"Ada","a.b":1,"c,d":{"e[0]":1},"100%":1,"\u00e9":1,"sp ace":1,'
            '"tab\\t":1,"\\u0000":1}',
            "%00,%C3%A9,100%25,a%2Eb,c%2Cd,c%2Cd.e%5B0%5D,displayName,sp%20ace,tab%09",
        ),
    ],
)
async def test_json_body_keys_reach_upstream(
    edge: Edge, client: httpx.AsyncClient, path: str, body: str, expected: str
) -> None:
    assert await upstream_fields(edge, client, "POST", path, body.encode()) == expected
    # The client's own list is replaced.
    received = await upstream_fields(edge, client, "POST", path, body.encode(), client_fields="x")
    assert received == expected


async def test_form_body_keys_reach_upstream(edge: Edge, client: httpx.AsyncClient) -> None:
    body = "display_name=Ada&dispaly_name=x&tags=a&tags=b&a.b=1&%C3%A9=1"
    form = "application/x-www-form-urlencoded"
    received = await upstream_fields(edge, client, "POST", "/contacts/acme/things", body, form, "x")
    assert received == "%C3%A9,a%2Eb,dispaly_name,display_name,tags"


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "expected"),
    [
        ("GET", "/diagnostics/ping", b"", None, None),
        ("GET", "/diagnostics/ping", b"", "application/json", None),
        ("GET", "/communication/message/sms/events", b"", None, None),
        # The transcoder takes any body as JSON, so any body is listed, whatever its type says.
        (
            "POST",
            "/communication/message/sms",
            b'{"Messages":[{"to":"+1"}]}',
            "text/plain",
            "Messages,Messages[].to",
        ),
        (
            "POST",
            "/communication/message/sms",
            b'{"Messages":[{"to":"+1"}]}',
            None,
            "Messages,Messages[].to",
        ),
    ],
)
async def test_client_json_fields_header_is_removed(
    edge: Edge,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    expected: str | None,
) -> None:
    received = await upstream_fields(edge, client, method, path, body, content_type, "evil")
    assert received == expected


async def test_json_fields_header_is_capped(edge: Edge, client: httpx.AsyncClient) -> None:
    extra = {f"field_{i:05d}": i for i in range(3000)}
    body = json.dumps({"Messages": [{"to": "+1"}], "extra": extra})
    received = await upstream_fields(edge, client, "POST", "/communication/message/sms", body)
    assert isinstance(received, str)
    assert len(received) <= FIELDS_MAX
    expected = capped(["Messages", "Messages[].to", "extra", *(f"extra.{k}" for k in extra)])
    assert received == expected
    assert len(expected) > FIELDS_MAX - len(",extra.field_00000")  # as many as fit

    # Nested as deep as the transcoder allows: still listed (up to the cap).
    body = '{"Messages":[{"to":"+1"}],"x":' + '{"a":' * 98 + "1" + "}" * 98 + "}"
    received = await upstream_fields(edge, client, "POST", "/communication/message/sms", body)
    assert received == capped(["Messages", "Messages[].to", *("x" + ".a" * n for n in range(99))])

    # A path that could never fit is left out rather than ending the list.
    body = json.dumps({"Messages": [{"to": "+1"}], "A" * (FIELDS_MAX + 1): 1})
    received = await upstream_fields(edge, client, "POST", "/communication/message/sms", body)
    assert received == "Messages,Messages[].to"


async def test_native_grpc_json_fields_metadata_is_untouched(edge: Edge) -> None:
    port = edge.envoy.settings.listen_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)
        request_id = rid()
        metadata = (("x-request-id", request_id), (FIELDS, "from,the.client"))
        await stub.Ping(diagnostics_service_pb2.PingRequest(), metadata=metadata)
    assert edge.recorder.by_request_id(request_id).metadata[FIELDS] == "from,the.client"


# ---------------------------------------------------------------------------------------------
# Native gRPC on the same port
# ---------------------------------------------------------------------------------------------


async def test_native_grpc_passes_through(edge: Edge) -> None:
    port = edge.envoy.settings.listen_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)
        request_id = rid()
        call = stub.Ping(
            diagnostics_service_pb2.PingRequest(),
            metadata=(("x-request-id", request_id), ("x-edge-test", "status:201")),
        )
        reply = await call
        assert reply.org == "acme"
        # Lua does not run for gRPC: the metadata reaches the client untouched.
        initial = dict(await call.initial_metadata())
        assert initial["x-switchboard-http-status"] == "201"
        assert edge.recorder.by_request_id(request_id).method == "Ping"

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Ping(
                diagnostics_service_pb2.PingRequest(), metadata=(("x-edge-test", "invalid"),)
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(raised.value)
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == "1023"

        sms = sms_service_pb2_grpc.SmsServiceStub(channel)
        events = [e async for e in sms.StreamSmsEvents(sms_message_pb2.StreamSmsEventsRequest())]
        assert [e.envelope.cursor for e in events] == ["1", "2"]


# ---------------------------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------------------------

EVENTS = "/communication/message/sms/events"


async def test_sse_delivers_events_incrementally(edge: Edge, client: httpx.AsyncClient) -> None:
    gate = f"gate-{uuid.uuid4()}"
    headers = {"x-edge-gate": gate, "accept": "text/event-stream"}
    async with client.stream("GET", EVENTS, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        first = await asyncio.wait_for(anext(lines), 5)
        # The upstream is still holding the second event back: this one was not buffered.
        assert not edge.recorder.gate(gate).is_set()
        # Each event's frame carries its cursor as the SSE id (an EventSource's Last-Event-ID).
        assert first == "id: 1"
        data = await asyncio.wait_for(anext(lines), 5)
        assert data.startswith("data: ")
        assert json.loads(data[6:])["envelope"]["cursor"] == "1"
        edge.recorder.gate(gate).set()
        rest = [line async for line in lines if line]
    assert rest[0] == "id: 2"
    assert [json.loads(line[6:])["envelope"]["cursor"] for line in rest[1:]] == ["2"]


@pytest.mark.parametrize(
    ("query", "last_event_id", "after"),
    [
        ({}, "41", "41"),
        ({"states": "SENT"}, "41", "41"),
        ({"after": "5"}, "41", "5"),  # an explicit cursor wins
        ({}, None, ""),
    ],
)
async def test_sse_last_event_id_becomes_after(
    edge: Edge,
    client: httpx.AsyncClient,
    query: dict[str, str],
    last_event_id: str | None,
    after: str,
) -> None:
    request_id = rid()
    headers = {"x-request-id": request_id}
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    response = await client.get(EVENTS, params=query, headers=headers)
    assert response.status_code == 200
    request = edge.recorder.by_request_id(request_id).request
    assert isinstance(request, sms_message_pb2.StreamSmsEventsRequest)
    assert request.after == after
    assert list(request.states) == ([query["states"]] if "states" in query else [])


async def test_sse_error_before_first_event_is_rewritten(client: httpx.AsyncClient) -> None:
    response = await client.get(EVENTS, headers={"x-edge-test": "invalid"})
    assert response.status_code == 400
    assert response.json()["ResponseStatus"]["ErrorCode"] == "ValidationException"
    assert len(response.json()["ResponseStatus"]["Errors"]) == 2


# ---------------------------------------------------------------------------------------------
# Request ids, access log, balancing
# ---------------------------------------------------------------------------------------------


async def access_log_entry(edge: Edge, request_id: str) -> dict[str, Any]:
    for _ in range(50):  # Envoy flushes the access log every second
        for line in (await asyncio.to_thread(edge.access_log.read_text)).splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry["request_id"] == request_id:
                return entry
        await asyncio.sleep(0.1)
    raise AssertionError(f"no access log line with request_id {request_id}")


async def test_client_request_id_reaches_upstream_and_access_log(
    edge: Edge, client: httpx.AsyncClient
) -> None:
    ok, failed = rid(), rid()
    response = await client.get("/diagnostics/ping", headers={"x-request-id": ok})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == ok
    assert edge.recorder.by_request_id(ok).method == "Ping"
    response = await client.get(
        "/communication/message/sms/m-1?x=1", headers={"x-request-id": failed}
    )
    assert response.status_code == 400

    entry = await access_log_entry(edge, ok)
    assert entry["method"] == "GET"  # as the client sent it, not the transcoded POST
    assert entry["path"] == "/diagnostics/ping"
    assert entry["grpc_path"] == "/switchboard.common.v1.DiagnosticsService/Ping"
    assert entry["status"] == 200
    assert entry["grpc_status"] == 0
    assert isinstance(entry["duration_ms"], int)
    entry = await access_log_entry(edge, failed)
    assert (entry["method"], entry["path"]) == ("GET", "/communication/message/sms/m-1?x=1")
    assert entry["status"] == 400


async def test_error_grpc_status_is_logged(edge: Edge, client: httpx.AsyncClient) -> None:
    request_id = rid()
    response = await client.get(
        "/diagnostics/ping", headers={"x-request-id": request_id, "x-edge-test": "payment"}
    )
    assert response.status_code == 402
    entry = await access_log_entry(edge, request_id)
    assert (entry["status"], entry["grpc_status"]) == (402, code_pb2.FAILED_PRECONDITION)


async def test_generated_request_id(edge: Edge, client: httpx.AsyncClient) -> None:
    before = len(edge.recorder.calls)
    response = await client.get("/diagnostics/ping")
    generated = response.headers["x-request-id"]
    assert uuid.UUID(generated)
    assert edge.recorder.calls[before].metadata["x-request-id"] == generated


async def test_round_robin_over_upstreams(edge: Edge, client: httpx.AsyncClient) -> None:
    before = len(edge.recorder.calls)
    for _ in range(4):
        assert (await client.get("/diagnostics/ping")).status_code == 200
    assert {c.server for c in edge.recorder.calls[before:]} == {"one", "two"}


# ---------------------------------------------------------------------------------------------
# Upstreams down
# ---------------------------------------------------------------------------------------------


async def test_upstream_down_is_503_json(descriptor_set: Path, tmp_path: Path) -> None:
    settings = edge_settings(descriptor_set, [("127.0.0.1", free_port())], tmp_path / "a.log")
    async with (
        EnvoyProcess(settings, tmp_path) as envoy,
        httpx.AsyncClient(base_url=envoy.base_url, trust_env=False) as http,
    ):
        response = await http.get("/diagnostics/ping")
        assert response.status_code == 503
        assert response.json() == {
            "error_code": "503",
            "error_description": "service unavailable",
        }
        response = await http.get("/communication/message/sms/m-1")
        assert response.status_code == 503
        assert response.json()["ResponseStatus"]["ErrorCode"] == "ServiceUnavailable"
        response = await http.get("/v2/orgs/acme/things")  # unbound GET: 404 before any upstream
        assert response.status_code == 404

        async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.listen_port}") as channel:
            stub = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Ping(diagnostics_service_pb2.PingRequest())
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            # gRPC-native: Envoy's local reply is a status, not the REST families' JSON body.
            assert raised.value.details() == "service unavailable"
            assert rpc_status.from_call(raised.value) is None


async def test_grpc_deadline_replies_stay_grpc_native(edge: Edge) -> None:
    # The client's deadline and Envoy's (grpc-timeout) race: whichever fires, the message is
    # a gRPC status message, never {"code":504,...}.
    port = edge.envoy.settings.listen_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)

        async def late() -> grpc.aio.AioRpcError:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Ping(
                    diagnostics_service_pb2.PingRequest(),
                    metadata=(("x-edge-test", "slow"),),
                    timeout=0.05,
                )
            return raised.value

        errors = await asyncio.gather(*(late() for _ in range(24)))
    for error in errors:
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not error.details().lstrip().startswith("{"), error.details()
        assert "service unavailable" not in error.details()


async def test_dead_replica_is_skipped(edge: Edge, descriptor_set: Path, tmp_path: Path) -> None:
    live = ("127.0.0.1", edge.upstreams[0].port)
    settings = edge_settings(descriptor_set, [live, ("127.0.0.1", free_port())], tmp_path / "a.log")
    async with (
        EnvoyProcess(settings, tmp_path) as envoy,
        httpx.AsyncClient(base_url=envoy.base_url, trust_env=False) as http,
    ):
        for _ in range(6):
            assert (await http.get("/diagnostics/ping")).status_code == 200


# ---------------------------------------------------------------------------------------------
# Family B lists: bare arrays (x-switchboard-bare-list), next_page_token as a header
# ---------------------------------------------------------------------------------------------


def printed_thing(i: int) -> str:
    """A Thing as the transcoder prints it (field order, always_print_primitive_fields)."""
    text = json.dumps(LIST_TEXT)
    active = "true" if i % 2 else "false"
    return f'{{"org":"o{i}","display_name":{text},"count":{i},"active":{active},"tags":["t"]}}'


async def test_list_is_a_bare_array(client: httpx.AsyncClient) -> None:
    response = await client.get("/things", params={"count": 3, "page_token": "p2]},"})
    assert response.status_code == 200, response.text
    # The array exactly as the transcoder printed it: elements, key order, escapes.
    assert response.text == "[" + ",".join(printed_thing(i) for i in range(3)) + "]"
    assert response.headers["x-next-page-token"] == "p2]},"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["content-type"] == "application/json"
    assert BARE_LIST not in response.headers


@pytest.mark.parametrize(
    "params",
    [
        {"count": 0},  # the field prints as []
        {"count": 2, "list_field": "nothing"},  # no such field
    ],
)
async def test_empty_list_is_an_empty_array(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await client.get("/things", params=params)
    assert response.status_code == 200, response.text
    assert response.text == "[]"
    assert "x-next-page-token" not in response.headers
    assert response.headers["content-length"] == "2"


async def test_large_list_is_unwrapped(client: httpx.AsyncClient) -> None:
    # Past the listener's 1 MiB buffer limit, where the transcoder (both families) and edge.lua
    # (family B) would answer 500 without max_response_body_size.
    count = 12000
    params: dict[str, str | int] = {"count": count, "page_token": "p"}
    response = await client.get("/v2/things", params=params)
    assert response.status_code == 200, response.text[:300]
    assert len(response.content) > 1 << 20
    assert response.json()["nextPageToken"] == "p"  # family A: wrapped
    response = await client.get("/things", params=params)
    assert response.status_code == 200, response.text[:300]
    assert len(response.content) > 1 << 20
    assert [t["count"] for t in response.json()] == list(range(count))
    assert response.headers["x-next-page-token"] == "p"


async def test_list_with_success_code_and_errors(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/things", params={"count": 1}, headers={"x-edge-test": "status:206"}
    )
    assert response.status_code == 206
    assert response.text == f"[{printed_thing(0)}]"
    for scenario, status, code in (("invalid", 400, "1023"), ("late-error", 402, "402")):
        response = await client.get(
            "/things", params={"count": 1}, headers={"x-edge-test": scenario}
        )
        assert response.status_code == status
        assert response.json()["error_code"] == code
        assert BARE_LIST not in response.headers


async def test_real_list_contract(client: httpx.AsyncClient) -> None:
    response = await client.get("/contacts", params={"limit": 2})
    assert response.status_code == 200, response.text
    assert [c["id"] for c in response.json()] == ["c0", "c1"]
    assert response.headers["x-next-page-token"] == "p2"
    response = await client.get("/contacts/fast_access")
    assert (response.status_code, response.text) == (200, "[]")


async def test_family_a_list_is_not_unwrapped(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/things", params={"count": 1, "page_token": "p"})
    assert response.status_code == 200
    assert BARE_LIST not in response.headers
    assert "x-next-page-token" not in response.headers
    document = response.json()
    assert (len(document["things"]), document["nextPageToken"], document["total"]) == (1, "p", 1)


# ---------------------------------------------------------------------------------------------
# Path matching: a literal segment wins over a variable one
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "rpc", "field", "value"),
    [
        ("GET", "/things/special", "ListSpecialThings", None, None),
        ("GET", "/things/special/s1", "GetSpecialThing", "thing_id", "s1"),
        ("GET", "/things/t1", "GetThing", "thing_id", "t1"),
        ("GET", "/things/specials", "GetThing", "thing_id", "specials"),
        # The real contract: /contacts/{contact_id} next to its literal siblings.
        ("GET", "/contacts/fast_access", "ListFastAccessRules", None, None),
        ("GET", "/contacts/fast_access/r1", "GetFastAccessRule", "rule_id", "r1"),
        ("GET", "/contacts/c1", "GetContact", "contact_id", "c1"),
        ("GET", "/contacts/events", "StreamContactsEvents", None, None),
        ("GET", "/contacts/fast_access_x", "GetContact", "contact_id", "fast_access_x"),
        # A method the literal path lacks falls back to the variable one.
        ("PUT", "/contacts/fast_access", "ReplaceContact", "contact_id", "fast_access"),
    ],
)
async def test_literal_path_wins_over_variable(
    edge: Edge,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    rpc: str,
    field: str | None,
    value: str | None,
) -> None:
    request_id = rid()
    body: dict[str, str] | None = {} if method == "PUT" else None
    response = await client.request(method, path, json=body, headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    call = edge.recorder.by_request_id(request_id)
    assert call.method == rpc
    if field is not None:
        assert getattr(call.request, field) == value


# ---------------------------------------------------------------------------------------------
# Form bodies into a sub-field (body: "body", like ReplaceContact)
# ---------------------------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


async def test_form_put_into_sub_field_body(edge: Edge, client: httpx.AsyncClient) -> None:
    request_id = rid()
    response = await client.put(
        "/things/t1",
        content="display_name=Ada+L%C3%B6velace&note=&version_number=3&tags=a&active=false",
        headers={"content-type": FORM, "x-request-id": request_id},
    )
    assert response.status_code == 200, response.text
    call = edge.recorder.by_request_id(request_id)
    request: Any = call.request
    assert request.thing_id == "t1"
    assert request.body.display_name == "Ada Lövelace"
    assert request.body.HasField("note") and request.body.note == ""  # present, empty
    assert request.body.version_number == 3  # sent as the JSON string "3"
    assert list(request.body.tags) == ["a"]
    assert request.body.HasField("active") and request.body.active is False
    # Keys relative to the HTTP body, i.e. to the sub-field.
    assert call.metadata[FIELDS] == "active,display_name,note,tags,version_number"


async def test_form_put_into_real_replace_contact(edge: Edge, client: httpx.AsyncClient) -> None:
    request_id = rid()
    response = await client.put(
        "/contacts/c1",
        content="first_name=Ada&primary_mdn=%2B34600111222&version_number=3",
        headers={"content-type": FORM, "x-request-id": request_id},
    )
    assert response.status_code == 200, response.text
    request = edge.recorder.by_request_id(request_id).request
    assert isinstance(request, contacts_service_pb2.ReplaceContactRequest)
    assert request.contact_id == "c1"
    assert request.body.first_name == "Ada"
    assert request.body.primary_mdn == "+34600111222"
    assert request.body.HasField("version_number") and request.body.version_number == 3
    assert not request.body.HasField("last_name")


async def test_form_put_bad_number_is_a_family_b_400(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/things/t1", content="version_number=three", headers={"content-type": FORM}
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "400"


# ---------------------------------------------------------------------------------------------
# Percent-encoded path variables arrive decoded
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("%2B34600111222", "+34600111222"),
        ("+34600111222", "+34600111222"),  # a literal + in a path is not a space
        ("ada%40example.com", "ada@example.com"),
        ("ada@example.com", "ada@example.com"),
        ("ada.lovelace%2Btag@example.com", "ada.lovelace+tag@example.com"),
        ("a%20b%3Ac%2Cd", "a b:c,d"),
        ("a%2Fb", "a/b"),  # a single-segment variable is decoded whole
    ],
)
async def test_path_variables_are_decoded(
    edge: Edge, client: httpx.AsyncClient, segment: str, expected: str
) -> None:
    request_id = rid()
    headers = {"x-request-id": request_id}
    # Family A (DELETE /v2/orgs/{org}/blacklist/{address}'s pattern) and family B.
    response = await client.delete(f"/v2/orgs/o1/thing-blacklist/{segment}", headers=headers)
    assert response.status_code == 200, response.text
    request: Any = edge.recorder.by_request_id(request_id).request
    assert (request.org, request.thing_id) == ("o1", expected)
    request_id = rid()
    response = await client.get(f"/things/{segment}", headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    request = edge.recorder.by_request_id(request_id).request
    assert request.thing_id == expected


async def test_real_blacklist_address_is_decoded(edge: Edge, client: httpx.AsyncClient) -> None:
    for segment, expected in (("%2B34600111222", "+34600111222"), ("a%40b.es", "a@b.es")):
        request_id = rid()
        response = await client.delete(
            f"/v2/orgs/o1/blacklist/{segment}", headers={"x-request-id": request_id}
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"] == expected
        request = edge.recorder.by_request_id(request_id).request
        assert isinstance(request, contacts_service_pb2.RemoveBlacklistEntryRequest)
        assert (request.org, request.address) == ("o1", expected)


# ---------------------------------------------------------------------------------------------
# Contacts streams: SSE events, and the export download (stream google.api.HttpBody)
# ---------------------------------------------------------------------------------------------


async def test_contacts_events_are_sse_in_snake_case(edge: Edge, client: httpx.AsyncClient) -> None:
    request_id = rid()
    response = await client.get(
        "/contacts/events", headers={"x-request-id": request_id, "last-event-id": "41"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = response.text.split("\n\n")
    assert frames[-1] == ""
    assert [f.split("\n")[0] for f in frames[:-1]] == ["id: 1", "id: 2"]
    events = [json.loads(f.split("\n")[1].removeprefix("data: ")) for f in frames[:-1]]
    assert [e["envelope"]["resource_id"] for e in events] == ["c1", "c2"]
    assert events[0]["contact"]["id"] == "c1"
    request: Any = edge.recorder.by_request_id(request_id).request
    assert request.after == "41"


async def test_export_download_streams_intact(edge: Edge, client: httpx.AsyncClient) -> None:
    response = await client.get("/contactexport/j1/content")
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "text/csv"
    assert response.content == b"".join(export_chunks("j1"))  # 3 MiB, in order


async def test_export_download_is_not_buffered(edge: Edge, client: httpx.AsyncClient) -> None:
    gate = f"gate-{uuid.uuid4()}"
    async with client.stream(
        "GET", "/contactexport/j2/content", headers={"x-edge-gate": gate}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv"
        received = b""
        chunks = response.aiter_raw()
        while len(received) < EXPORT_CHUNK:
            received += await asyncio.wait_for(anext(chunks), 5)
        # The upstream still holds the rest back: the first chunk was not buffered.
        assert not edge.recorder.gate(gate).is_set()
        edge.recorder.gate(gate).set()
        received += b"".join([chunk async for chunk in chunks])
    assert received == b"".join(export_chunks("j2"))


async def test_export_download_error_keeps_family_b_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/contactexport/j1/content", headers={"x-edge-test": "conflict"})
    assert response.status_code == 409
    assert response.json()["error_code"] == "1001"


async def test_stream_routes_have_no_timeout(edge: Edge) -> None:
    """The download and events routes use the stream settings, not the unary 60 s timeout."""
    url = f"{edge.envoy.admin_url}/config_dump?resource=static_listeners"
    dump = await asyncio.to_thread(lambda: httpx.get(url, trust_env=False).json())
    manager = dump["configs"][0]["listener"]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    by_match = {json.dumps(r["match"], sort_keys=True): r for r in routes}
    for match in (
        {"path": "/contacts/events"},
        {"safe_regex": {"regex": "^/(contactexport/[^/]+/content|contactimport/[^/]+/failures)$"}},
    ):
        route = by_match[json.dumps(match, sort_keys=True)]
        assert route["route"]["timeout"] == "0s"
        assert route["route"]["idle_timeout"] == "0s"
    assert by_match[json.dumps({"prefix": "/"}, sort_keys=True)]["route"]["timeout"] == "60s"
