"""A bounded buffer per subscriber: one that stops reading is told it lagged (a `stream.lagged`
event with the cursor to resume from), never slows the others, and loses nothing when it resumes
from that cursor. On shutdown every open stream is told `stream.closing` before it ends."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from switchboard.contacts.v1 import contact_pb2, contacts_service_pb2, contacts_service_pb2_grpc

from switchboard.server.app.server import build_application
from switchboard.server.core.auth import Role
from switchboard.server.core.errors import StreamLagged
from switchboard.server.core.events import LAGGED, StreamNotice
from switchboard.server.core.models import EventRecord
from tests.support.server import make_settings

BUFFER = 20
EVENTS = 120


async def create_contact(stub: Any, metadata: list[tuple[str, str]]) -> str:
    reply = await stub.CreateContact(
        contacts_service_pb2.CreateContactRequest(
            body=contact_pb2.ContactInput(first_name="x", external_id=uuid.uuid4().hex)
        ),
        metadata=metadata,
    )
    return str(reply.id)


async def test_a_stalled_subscriber_is_told_it_lagged_and_slows_nobody(
    tmp_path: Path, fresh_database_url: str
) -> None:
    app = build_application(
        make_settings(tmp_path, database_url=fresh_database_url, stream_buffer_events=BUFFER)
    )
    await app.start()
    try:
        org = f"org-{uuid.uuid4().hex[:10]}"
        token = app.tokens.issue(org=org, roles=[Role.CLIENT], subject="t")
        metadata = [("authorization", f"Bearer {token}")]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
            # The stalled subscriber: live (caught up), takes its first event, then reads
            # nothing.
            stalled = app.feed.follow(
                org_id=org,
                after=0,
                types=["contact.created"],
                resource_ids=[],
                heartbeat_seconds=300,
            )
            waiting = asyncio.ensure_future(anext(stalled))
            async with asyncio.timeout(10):
                while app.feed.hub.subscribers == 0:
                    await asyncio.sleep(0.01)
            first_id = await create_contact(stub, metadata)
            first = await waiting
            assert isinstance(first, EventRecord) and first.resource_id == first_id
            # A subscriber that reads, over gRPC.
            live = stub.StreamContactsEvents(
                contacts_service_pb2.StreamContactsEventsRequest(
                    types=["contact.created"], heartbeat_seconds=300
                ),
                metadata=metadata,
            )
            await live.initial_metadata()
            created = [await create_contact(stub, metadata) for _ in range(EVENTS)]
            got: list[str] = []
            async with asyncio.timeout(15):  # no wait on the stalled one's account
                async for event in live:
                    got.append(event.contact.id)
                    if len(got) == EVENTS + 1:
                        break
            live.cancel()
            assert got == [first_id, *created]

            # The stalled one reads again: the lag notice with its last cursor, then the end.
            notice = await anext(stalled)
            assert isinstance(notice, StreamNotice)
            assert notice.type == LAGGED and notice.cursor == first.seq
            with pytest.raises(StreamLagged) as info:
                await anext(stalled)
            assert info.value.metadata["cursor"] == str(first.seq)

            # Resuming from that cursor loses nothing and repeats nothing.
            resumed: list[str] = []
            again = stub.StreamContactsEvents(
                contacts_service_pb2.StreamContactsEventsRequest(
                    types=["contact.created"], after=str(notice.cursor), heartbeat_seconds=300
                ),
                metadata=metadata,
            )
            async with asyncio.timeout(15):
                async for event in again:
                    resumed.append(event.contact.id)
                    if len(resumed) == EVENTS:
                        break
            again.cancel()
            assert resumed == created
    finally:
        await app.stop()


async def test_shutdown_tells_open_streams_where_to_resume(
    tmp_path: Path, fresh_database_url: str
) -> None:
    app = build_application(make_settings(tmp_path, database_url=fresh_database_url))
    await app.start()
    stopped = False
    try:
        org = f"org-{uuid.uuid4().hex[:10]}"
        token = app.tokens.issue(org=org, roles=[Role.CLIENT], subject="t")
        metadata = [("authorization", f"Bearer {token}")]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
            contact_id = await create_contact(stub, metadata)
            call = stub.StreamContactsEvents(
                contacts_service_pb2.StreamContactsEventsRequest(heartbeat_seconds=300),
                metadata=metadata,
            )
            first = await call.read()
            assert first.contact.id == contact_id
            stopping = asyncio.create_task(app.stop())
            stopped = True
            notice = await call.read()
            assert notice.envelope.type == "stream.closing"
            assert notice.envelope.cursor == first.envelope.cursor
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            await stopping
    finally:
        if not stopped:
            await app.stop()
