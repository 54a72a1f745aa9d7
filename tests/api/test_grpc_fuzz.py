"""Property-based fuzzing of every RPC of the contract over a real gRPC channel (issue 13).

For each method of every service in `SERVICES`, Hypothesis draws requests from the method's
request descriptor: any subset of fields, strings from hostile to plausible (empty, huge, NUL,
non-ASCII digits, numbers past 64 bits, the caller's own org), numbers at their limits, enum
numbers the contract never defined, nested and repeated messages, timestamps outside any
calendar; also raw bytes that are not protobuf at all and valid requests followed by unknown
fields. They go to a real in-process server with its own database (SQLite, or PostgreSQL with
SWITCHBOARD_TEST_DATABASE_URL), mostly with a token that holds every role, sometimes with none
or a forged one. The property: client input never gets UNKNOWN, INTERNAL or DATA_LOSS, no
status message shows exception classes or tracebacks, and a request without a valid token hears
UNAUTHENTICATED (public methods excepted). Server streams are read up to their first message or
status under a short deadline; client streams send one to three messages.

Deterministic: the same examples every run (`derandomize`, no example database). Bounded:
SWITCHBOARD_FUZZ_EXAMPLES per method (default 40: about 7,000 cases in two minutes here) and
SWITCHBOARD_FUZZ_SECONDS in all (default 240; methods past it are skipped, which the summary
says). SWITCHBOARD_FUZZ_SEED=<n> explores other examples. `make fuzz` runs this module alone
and prints how many cases ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from switchboard.server.app.server import SERVICES, Application, build_application
from switchboard.server.core.auth import Role
from switchboard.server.core.rpc import AccessPolicy
from tests.support.server import fresh_database, make_settings

EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "40"))
SECONDS = float(os.environ.get("SWITCHBOARD_FUZZ_SECONDS", "240"))
SEED = os.environ.get("SWITCHBOARD_FUZZ_SEED")
UNARY_TIMEOUT = 20.0  # a unary answer slower than this is a hang, and fails
STREAM_TIMEOUT = 0.5  # a stream that is accepted has nothing to say this early

# Statuses that mean "the server broke", never an answer to what a client sent.
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
LEAKS = re.compile(
    r"Traceback|<class |Exception\b|Error:|\w+Error\b(?! *code)|File \"|\.py\b|sqlalchemy|"
    r"asyncpg|sqlite3|google\.protobuf|_pb2"
)
POLICY = AccessPolicy(SERVICES)
METHODS = [method for service in SERVICES for method in service.methods]

# Strings worth trying anywhere: empty, blank, hostile, and plausible values that get requests
# past the first checks (numbers, E.164, emails, states, times, languages).
SPECIAL_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u0000\u0000",
    "²",
    "١٢٣",
    "\uff11\uff12",  # fullwidth digits
    "-1",
    "0",
    "1",
    "9" * 20,
    "9" * 40,
    "-9223372036854775809",
    "1e400",
    "NaN",
    "null",
    "true",
    "{}",
    "[]",
    '{"all":[{"field":"country","op":"eq","value":"ES"}]}',
    '{"any": 1}',
    "%FF%FE",
    "../../../etc/passwd",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "${7*7}",
    "[(${x})]",
    "\u202e\ufeff",
    "🙂" * 10,
    "x" * 70,
    "x" * 300,
    "x" * 5000,
    "+27821234567",
    "+14155550123",
    "+34600111222",
    "0034600111222",
    "ana@example.com",
    "not an email@",
    "2026-01-01",
    "2026-13-45",
    "2026-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "yesterday",
    "ES",
    "en",
    "en-US",
    "Europe/Madrid",
    "Mars/Olympus",
    "ACTIVE",
    "ATIVE",
    "PENDING",
    "DELIVERED",
    "CANCELED",
    "TRANSMITTING",
    "STATIC",
    "DYNAMIC",
    "OPTIN",
    "OPTOUT",
    "BLACKLIST",
    "MDN",
    "EMAIL",
    "sms",
    "email",
    "whatsapp",
    "smpp",
    "draft",
    "stable",
    "URL",
    "ATTACHMENT",
    "application/json",
    "text/csv",
    "image/png",
    "multipart/form-data; boundary=x",
    "https://example.com/a?b=c",
    "http://",
    "sender_id:snd_1",
    "channel-ch_1",
]
INT_EDGES = {
    32: [0, 1, -1, 2**31 - 1, -(2**31), 1000, 1001, 100000],
    64: [0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1, 10**12],
}
UINT_EDGES = {32: [0, 1, 2**32 - 1, 1000, 1001], 64: [0, 1, 2**64 - 1, 2**63]}
MAX_DEPTH = 3
# Unknown fields appended to valid requests: numbers no request uses, every wire type.
UNKNOWN_FIELDS = [
    b"\xf8\x3e\x01",  # field 1007, varint 1
    b"\xfa\x3e\x03abc",  # field 1007, length-delimited
    b"\xfd\x3e\x00\x00\x80\x3f",  # field 1007, fixed32
    b"\xf9\x3e" + b"\x00" * 8,  # field 1007, fixed64
    b"\xfb\x3e\xfc\x3e",  # field 1007, an empty group
]


@dataclass
class Tally:
    """What the run did, for the summary (printed by `make fuzz`)."""

    started: float = field(default_factory=time.monotonic)
    cases: int = 0
    methods: int = 0
    skipped: list[str] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)

    def count(self, code: grpc.StatusCode) -> None:
        self.cases += 1
        self.codes[code.name] = self.codes.get(code.name, 0) + 1


TALLY = Tally()


@dataclass(frozen=True)
class Case:
    """One request to send: its messages' bytes (one unless a client stream) and the token."""

    messages: list[bytes]
    token: str  # "valid", "none" or "forged"


# -- strategies from descriptors ------------------------------------------------------------------


def strings(org: str) -> st.SearchStrategy[str]:
    plain = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
    return st.one_of(st.sampled_from([*SPECIAL_STRINGS, org]), plain)


def scalars(f: FieldDescriptor, org: str) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return strings(org)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        assert f.enum_type is not None
        defined = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(defined), st.integers(-3, 300))
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32) if t == FieldDescriptor.TYPE_FLOAT else st.floats()
    signed64 = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64)
    if t in (*signed64, FieldDescriptor.TYPE_SFIXED64):
        return st.one_of(st.sampled_from(INT_EDGES[64]), st.integers(-(2**63), 2**63 - 1))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.sampled_from(UINT_EDGES[64]), st.integers(0, 2**64 - 1))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(st.sampled_from(UINT_EDGES[32]), st.integers(0, 2**32 - 1))
    return st.one_of(st.sampled_from(INT_EDGES[32]), st.integers(-(2**31), 2**31 - 1))


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, org: str, depth: int = 0) -> Message:
    """A message of `descriptor` with any subset of its fields set (every one, often)."""
    message = GetMessageClass(descriptor)()
    fields = list(descriptor.fields)
    if not fields or depth > MAX_DEPTH:
        return message
    everything = draw(st.booleans())
    chosen = fields if everything else draw(st.lists(st.sampled_from(fields), max_size=6))
    for f in chosen:
        _set(draw, message, f, org, depth)
    return message


def _set(draw: st.DrawFn, message: Message, f: FieldDescriptor, org: str, depth: int) -> None:
    target = getattr(message, f.name)
    entry = f.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for key in draw(st.lists(scalars(key_field, org), max_size=3)):
            if value_field.message_type is not None:
                value = draw(messages(value_field.message_type, org, depth + 1))
                target[key].CopyFrom(value)
            else:
                _assign(lambda v, k=key: target.__setitem__(k, v), draw(scalars(value_field, org)))
        return
    if f.is_repeated:
        count = draw(st.sampled_from([0, 1, 2, 3, 30] if depth == 0 else [0, 1, 2]))
        for _ in range(count):
            if entry is not None:
                target.add().CopyFrom(draw(messages(entry, org, depth + 1)))
            else:
                _assign(target.append, draw(scalars(f, org)))
        return
    if entry is not None:
        target.CopyFrom(draw(messages(entry, org, depth + 1)))
        return
    _assign(lambda v: setattr(message, f.name, v), draw(scalars(f, org)))


def _assign(setter: Any, value: Any) -> None:
    with contextlib.suppress(ValueError, TypeError):  # a value the runtime refuses to hold
        setter(value)


def cases(method: MethodDescriptor, org: str) -> st.SearchStrategy[Case]:
    request = messages(method.input_type, org).map(lambda m: m.SerializeToString())
    garbage = st.binary(min_size=1, max_size=48)
    with_unknown = st.tuples(request, st.sampled_from(UNKNOWN_FIELDS)).map(lambda t: t[0] + t[1])
    one = st.one_of(request, request, request, garbage, with_unknown)
    if method.client_streaming:
        bodies = st.lists(one, min_size=1, max_size=3)
    else:
        bodies = one.map(lambda data: [data])
    tokens = st.sampled_from(["valid"] * 6 + ["none", "forged"])
    return st.builds(Case, bodies, tokens)


# -- the server under fuzz ------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Application]:
    """A server of its own: admin RPCs change deployment-wide reference data, which the rest of
    the suite must not see."""
    TALLY.started = time.monotonic()  # the budget counts this module's time only
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    async with fresh_database(tmp) as url:
        settings = make_settings(tmp, database_url=url, drain_seconds=0.2)
        application = build_application(settings)
        await application.start()
        try:
            yield application
        finally:
            await application.stop()
            print(summary())


def summary() -> str:
    seconds = time.monotonic() - TALLY.started
    codes = ", ".join(f"{k} {v}" for k, v in sorted(TALLY.codes.items(), key=lambda i: -i[1]))
    skipped = f"; {len(TALLY.skipped)} methods skipped (time budget)" if TALLY.skipped else ""
    return (
        f"\ngrpc fuzz: {TALLY.cases} cases over {TALLY.methods} methods in {seconds:.0f} s "
        f"({EXAMPLES} examples per method{skipped}); statuses: {codes}"
    )


@pytest.fixture(scope="module")
async def fuzz_channel(fuzz_app: Application) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fuzz_app.port}") as channel:
        yield channel


def _metadata(case: Case, token: str) -> list[tuple[str, str]]:
    if case.token == "none":
        return []
    if case.token == "forged":
        return [("authorization", f"Bearer {token[:-4]}AAAA")]
    return [("authorization", f"Bearer {token}")]


async def _send(
    channel: grpc.aio.Channel, method: MethodDescriptor, case: Case, token: str
) -> tuple[grpc.StatusCode, str]:
    """The call's status code and message."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    raw = {"request_serializer": None, "response_deserializer": None}
    metadata = _metadata(case, token)
    try:
        if method.client_streaming:
            upload = channel.stream_unary(path, **raw)
            await upload(iter(case.messages), metadata=metadata, timeout=UNARY_TIMEOUT)
        elif method.server_streaming:
            stream = channel.unary_stream(path, **raw)
            call = stream(case.messages[0], metadata=metadata, timeout=STREAM_TIMEOUT)
            try:
                await call.read()  # the first message, or the status
            finally:
                call.cancel()
        else:
            unary = channel.unary_unary(path, **raw)
            await unary(case.messages[0], metadata=metadata, timeout=UNARY_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def judge(method: MethodDescriptor, case: Case, code: grpc.StatusCode, details: str) -> None:
    """The property every answer must have."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    assert code not in BROKEN, f"{path}: {code.name} {details!r}"
    assert not LEAKS.search(details), f"{path}: leaks internals: {details!r}"
    if case.token != "valid" and not POLICY.is_public(path):
        assert code == grpc.StatusCode.UNAUTHENTICATED, (path, code, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert method.server_streaming, f"{path}: no answer in {UNARY_TIMEOUT} s"


def _ids() -> Iterator[str]:
    for method in METHODS:
        yield f"{method.containing_service.name}.{method.name}"


@pytest.mark.parametrize("method", METHODS, ids=list(_ids()))
async def test_no_request_breaks_the_server(
    method: MethodDescriptor, fuzz_app: Application, fuzz_channel: grpc.aio.Channel
) -> None:
    if time.monotonic() - TALLY.started > SECONDS:
        TALLY.skipped.append(method.full_name)
        pytest.skip(f"the fuzz budget of {SECONDS:.0f} s is spent")
    org = f"fuzz-{METHODS.index(method)}"
    token = fuzz_app.tokens.issue(org=org, roles=list(Role), subject="fuzzer")
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=EXAMPLES,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=cases(method, org))
    def property_holds(case: Case) -> None:
        # Hypothesis runs in a worker thread; the request runs on the server's event loop.
        future = asyncio.run_coroutine_threadsafe(_send(fuzz_channel, method, case, token), loop)
        code, details = future.result(timeout=UNARY_TIMEOUT + 10)
        TALLY.count(code)
        judge(method, case, code, details)

    if SEED is not None:
        property_holds = seed(int(SEED))(property_holds)
    TALLY.methods += 1
    await asyncio.to_thread(property_holds)
