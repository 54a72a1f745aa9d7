"""The one stream contract (README "Streams: one contract"), driven as clients drive it: gRPC
clients and SSE through Envoy. The messaging stream; resume by `after` and by Last-Event-ID with
nothing lost or twice; the envelope's casing per REST family; 1,000 subscribers of 10 orgs each
getting exactly their own events; stream tokens for EventSource."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from switchboard.common.v1 import stream_tokens_service_pb2, stream_tokens_service_pb2_grpc
from switchboard.contacts.v1 import contact_pb2, contacts_service_pb2, contacts_service_pb2_grpc
from switchboard.messaging.v1 import messaging_service_pb2, messaging_service_pb2_grpc

from switchboard.server.app.server import Application
from switchboard.server.core.auth import STREAM_SCOPE, Role
from switchboard.server.edge.envoy import EnvoyProcess
from tests.support.clock import TEST_CLOCK
from tests.support.messaging import create_sender, done, submit, us_number, wait_request

pytestmark = pytest.mark.envoy


# -- helpers -----------------------------------------------------------------------------------


async def sse_frames(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], until: Any, seconds: float = 15
) -> list[tuple[str | None, dict[str, Any]]]:
    """(id, data) of each frame until `until(frames)` is true, then disconnects."""
    frames: list[tuple[str | None, dict[str, Any]]] = []
    async with asyncio.timeout(seconds), http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        frame_id: str | None = None
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                frame_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line == "" and data:
                frames.append((frame_id, json.loads("\n".join(data))))
                frame_id, data = None, []
                if until(frames):
                    return frames
    return frames


def events_of(frames: list[tuple[str | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [d for _, d in frames if d["envelope"]["type"] != "heartbeat"]


async def send_message(http: httpx.AsyncClient, bearer: dict[str, str]) -> str:
    sender = await create_sender(http, bearer)
    request_id = await submit(http, bearer, **{"from": sender, "to": [us_number()], "body": "hi"})
    await wait_request(http, bearer, request_id, done)
    return request_id


def messaging_stub(channel: grpc.aio.Channel) -> messaging_service_pb2_grpc.MessagingServiceStub:
    return messaging_service_pb2_grpc.MessagingServiceStub(channel)


async def collect(call: Any, until: Any, seconds: float = 15) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(seconds):
        async for event in call:
            if event.envelope.type != "heartbeat":
                got.append(event)
            if until(got):
                break
    call.cancel()
    return got


# -- the messaging stream ------------------------------------------------------------------------


async def test_messaging_stream_over_grpc_delivers_a_sent_messages_events(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    channel: grpc.aio.Channel,
    auth: list[tuple[str, str]],
) -> None:
    request_id = await send_message(http, bearer)
    # Empty after: from the org's first event (family B).
    call = messaging_stub(channel).StreamMessagingEvents(
        messaging_service_pb2.StreamMessagingEventsRequest(
            message_request_ids=[request_id], heartbeat_seconds=1
        ),
        metadata=auth,
    )
    got = await collect(call, lambda g: any(e.envelope.type == "message.sent" for e in g))
    types = [e.envelope.type for e in got]
    assert "message_request.accepted" in types and "message.sent" in types
    for event in got:
        kind = event.WhichOneof("resource")
        if event.envelope.type.startswith("message_request."):
            assert kind == "message_request" and event.message_request.id == request_id
        else:
            assert kind == "message" and event.message.message_request_id == request_id
    cursors = [int(e.envelope.cursor) for e in got]
    assert cursors == sorted(set(cursors))

    # Filters: a type pattern and a state.
    call = messaging_stub(channel).StreamMessagingEvents(
        messaging_service_pb2.StreamMessagingEventsRequest(
            message_request_ids=[request_id], types=["message.*"], states=["sent"]
        ),
        metadata=auth,
    )
    got = await collect(call, lambda g: len(g) >= 1)
    assert all(e.envelope.type.startswith("message.") for e in got)
    assert all(e.message.state == "SENT" for e in got)


async def test_messaging_stream_refuses_unknown_patterns(
    channel: grpc.aio.Channel, auth: list[tuple[str, str]]
) -> None:
    call = messaging_stub(channel).StreamMessagingEvents(
        messaging_service_pb2.StreamMessagingEventsRequest(types=["call.*", "message.*x"]),
        metadata=auth,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(call, lambda g: True)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_messaging_sse_is_snake_case_and_resumes_without_loss_or_duplicates(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    request_id = await send_message(http, bearer)
    second = await send_message(http, bearer)
    base = f"/messaging/events?message_request_ids={request_id}&message_request_ids={second}"

    async def read_all() -> list[dict[str, Any]]:
        return events_of(
            await sse_frames(
                http,
                base + "&heartbeat_seconds=1",
                bearer,
                lambda f: f[-1][1]["envelope"]["type"] == "heartbeat",
            )
        )

    # The messages go on changing (sent, delivered) for a while: compare resumed reads with the
    # log once it has settled, i.e. two whole reads in a row agree.
    everything, previous = await read_all(), None
    for _ in range(10):
        if everything == previous:
            break
        previous, everything = everything, await read_all()
    assert everything == previous, "the messages' events never settled"
    assert len(everything) >= 4
    envelope = everything[0]["envelope"]
    assert set(envelope) >= {"cursor", "type", "occur_time", "resource_id"}
    assert "message_request" in everything[0] or "message" in everything[0]

    # Disconnect after two events, resume by Last-Event-ID, then by ?after=.
    first = await sse_frames(http, base, bearer, lambda f: len(events_of(f)) == 2)
    last_id = first[-1][0]
    assert last_id == events_of(first)[-1]["envelope"]["cursor"]
    rest = await sse_frames(
        http,
        base + "&heartbeat_seconds=1",
        {**bearer, "Last-Event-ID": str(last_id)},
        lambda f: f[-1][1]["envelope"]["type"] == "heartbeat",
    )
    resumed = [e["envelope"]["cursor"] for e in events_of(first) + events_of(rest)]
    assert resumed == [e["envelope"]["cursor"] for e in everything]
    by_after = await sse_frames(
        http,
        base + f"&after={last_id}&heartbeat_seconds=1",
        bearer,
        lambda f: f[-1][1]["envelope"]["type"] == "heartbeat",
    )
    assert [e["envelope"]["cursor"] for e in events_of(by_after)] == resumed[2:]


# -- casing per family -------------------------------------------------------------------------

CASING = {
    "/communication/message/sms/events?heartbeatSeconds=1": "camel",  # family C
    "/v2/orgs/{org}/communications/events?heartbeatSeconds=1": "camel",  # family A
    "/contacts/events?heartbeat_seconds=1": "snake",  # family B
    "/calling/events?heartbeat_seconds=1": "snake",
    "/messaging/events?heartbeat_seconds=1": "snake",
}


@pytest.mark.parametrize("path", list(CASING))
async def test_envelope_casing_per_family(
    http: httpx.AsyncClient, org: str, bearer: dict[str, str], path: str
) -> None:
    frames = await sse_frames(http, path.format(org=org), bearer, lambda f: len(f) >= 1)
    envelope = frames[0][1]["envelope"]
    assert envelope["type"] == "heartbeat"
    if CASING[path] == "camel":
        assert {"occurTime", "resourceId"} <= set(envelope), envelope
    else:
        assert {"occur_time", "resource_id"} <= set(envelope), envelope


# -- 1,000 subscribers --------------------------------------------------------------------------


async def create_contacts(
    stub: contacts_service_pb2_grpc.ContactsServiceStub, token: str, count: int
) -> list[str]:
    ids = []
    for i in range(count):
        reply = await stub.CreateContact(
            contacts_service_pb2.CreateContactRequest(
                body=contact_pb2.ContactInput(first_name=f"c{i}", external_id=uuid.uuid4().hex)
            ),
            metadata=[("authorization", f"Bearer {token}")],
        )
        ids.append(reply.id)
    return ids


async def test_a_thousand_subscribers_of_ten_orgs_get_exactly_their_own_events(
    app: Application, make_token: Any
) -> None:
    orgs = [f"org-{uuid.uuid4().hex[:10]}" for _ in range(10)]
    tokens = {o: make_token(o) for o in orgs}
    per_org, events_each = 100, 5
    # One connection per org (a server takes 1,000 streams per connection), and one for writes.
    target = f"127.0.0.1:{app.port}"
    local = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=local) for _ in orgs]
    writes = grpc.aio.insecure_channel(target, options=local)
    try:
        stub = contacts_service_pb2_grpc.ContactsServiceStub(writes)
        calls = []
        for o, ch in zip(orgs, channels, strict=True):
            subscribe = contacts_service_pb2_grpc.ContactsServiceStub(ch).StreamContactsEvents
            for _ in range(per_org):
                request = contacts_service_pb2.StreamContactsEventsRequest(
                    types=["contact.created"], heartbeat_seconds=300
                )
                calls.append(
                    (o, subscribe(request, metadata=[("authorization", f"Bearer {tokens[o]}")]))
                )
        async with asyncio.timeout(30):
            await asyncio.gather(*(call.initial_metadata() for _, call in calls))
            made = await asyncio.gather(
                *(create_contacts(stub, tokens[o], events_each) for o in orgs)
            )
        created = dict(zip(orgs, made, strict=True))

        async def receive(call: Any) -> list[str]:
            got: list[str] = []
            async for event in call:
                if event.envelope.type == "contact.created":
                    got.append(event.contact.id)
                    if len(got) == events_each:
                        return got
            return got

        async with asyncio.timeout(45):
            received = await asyncio.gather(*(receive(call) for _, call in calls))
        for (o, call), got in zip(calls, received, strict=True):
            assert got == created[o]
            call.cancel()
    finally:
        for ch in [*channels, writes]:
            await ch.close()


# -- stream tokens -----------------------------------------------------------------------------


async def test_stream_token_opens_an_event_source_and_nothing_else(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    channel: grpc.aio.Channel,
    auth: list[tuple[str, str]],
    envoy: EnvoyProcess,
) -> None:
    response = await http.post("/stream_tokens", json={"ttl_seconds": 60}, headers=bearer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == 60
    token = body["access_token"]

    # EventSource: no header, the token in the query string.
    frames = await sse_frames(
        http,
        f"/messaging/events?heartbeat_seconds=1&access_token={token}",
        {},
        lambda f: len(f) >= 1,
    )
    assert frames[0][1]["envelope"]["type"] == "heartbeat"
    # Refused on a non-stream RPC, over REST and gRPC.
    refused = await http.get("/contacts", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401, refused.text
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream_tokens_service_pb2_grpc.StreamTokensServiceStub(channel).CreateStreamToken(
            stream_tokens_service_pb2.CreateStreamTokenRequest(),
            metadata=[("authorization", f"Bearer {token}")],
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Not a query parameter elsewhere: the transcoder refuses it.
    assert (await http.get(f"/contacts?access_token={token}", headers=bearer)).status_code == 400
    # Never in the access log.
    log = Path(envoy.settings.access_log_path)
    async with asyncio.timeout(10):
        while "access_token=REDACTED" not in log.read_text():
            await asyncio.sleep(0.1)
    text = log.read_text()
    leaked = [line for line in text.splitlines() if token in line]
    assert not leaked, leaked
    assert "access_token=REDACTED" in text


async def test_stream_token_lifetime_is_bounded_and_enforced(
    app: Application, http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    too_long = await http.post("/stream_tokens", json={"ttl_seconds": 301}, headers=bearer)
    assert too_long.status_code == 400
    # Issued 10 minutes ago (by the test run's clock) for 5 minutes: expired.
    expired = app.tokens.issue(
        org="org-x",
        roles=[Role.CLIENT],
        subject="app",
        ttl=timedelta(minutes=5),
        now=TEST_CLOCK.now() - timedelta(minutes=10),
        scope=STREAM_SCOPE,
    )
    response = await http.get(f"/messaging/events?access_token={expired}")
    assert response.status_code == 401
