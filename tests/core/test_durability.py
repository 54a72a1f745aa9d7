"""What survives: restarts, crashed workers, and the schema a deployment migrates to."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.orm import Session
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.db import create_engine
from switchboard.server.delivery import queue
from switchboard.server.migrations.metadata import metadata
from switchboard.server.migrations.migrate import upgrade
from switchboard.server.sms.models import SmsRecord, SmsStatus
from tests.support.auth import TEST_SECRET, Metadata
from tests.support.clock import TEST_CLOCK
from tests.support.server import free_port, make_settings
from tests.support.sms import collect_events, sms


async def _started(tmp: Path, url: str, delay: float) -> Application:
    app = build_application(
        make_settings(tmp, database_url=url, sandbox_delivery_delay=delay, drain_seconds=0.5)
    )
    await app.start()
    return app


async def _wait_status(
    stub: sms_service_pb2_grpc.SmsServiceStub, auth: Metadata, api_id: str, status: str
) -> None:
    request = pb.GetSmsMessageRequest(api_message_id=api_id)
    async with asyncio.timeout(10):
        while (await stub.GetSmsMessage(request, metadata=auth)).status != status:
            await asyncio.sleep(0.05)


async def test_sent_messages_are_delivered_after_a_restart(
    tmp_path: Path, fresh_database_url: str
) -> None:
    auth = [("authorization", "Bearer " + _token("org-restart"))]
    first = await _started(tmp_path, fresh_database_url, delay=3600)  # receipts never come
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as ch:
            stub = sms_service_pb2_grpc.SmsServiceStub(ch)
            sent = await stub.SendSms(pb.SendSmsRequest(messages=[sms()]), metadata=auth)
            api_id = sent.smpp_msg_response.messages[0].api_message_id
            await _wait_status(stub, auth, api_id, "SENT")
    finally:
        await first.stop()
    second = await _started(tmp_path, fresh_database_url, delay=0.1)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            stub = sms_service_pb2_grpc.SmsServiceStub(ch)
            await _wait_status(stub, auth, api_id, "DELIVERED")
            events = await collect_events(stub, auth, until=3, after="0")
            assert [e.envelope.type for e in events] == [
                "sms.accepted",
                "sms.sent",
                "sms.delivered",
            ]
    finally:
        await second.stop()


async def test_work_leased_by_a_crashed_worker_comes_back(
    app: Application, channel: grpc.aio.Channel, org: str, auth: Metadata
) -> None:
    now = app.clock.now()
    record = SmsRecord(
        id=f"sms_crash{uuid.uuid4().hex[:12]}",
        org_id=org,
        channel="smpp",
        destination="+27821234567",
        destination_type="MOBILE",
        content="orphaned",
        segments=1,
        status=SmsStatus.ACCEPTED.value,
        created_at=now,
        updated_at=now,
    )
    # Its queue row is leased: a worker claimed it, then died.
    leased = {
        "id": record.id,
        "kind": "sms",
        "org_id": org,
        "channel": "sms",
        "route": "smpp",
        "destination": record.destination,
        "priority": 1,
        "due_at": now,
        "lease_until": now + timedelta(seconds=1.5),
        "attempts": 1,
        "created_at": now,
    }

    def work(session: Session) -> None:
        session.add(record)
        session.flush()
        queue.enqueue(session, [leased])

    await app.db.run_write(work)
    app.bus.notify()
    stub = sms_service_pb2_grpc.SmsServiceStub(channel)
    request = pb.GetSmsMessageRequest(api_message_id=record.id)
    await asyncio.sleep(0.8)
    assert (await stub.GetSmsMessage(request, metadata=auth)).status == "ACCEPTED"
    await _wait_status(stub, auth, record.id, "DELIVERED")


async def test_migrations_match_the_models(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # idempotent: a second start changes nothing
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


_AT = datetime(2026, 11, 22, tzinfo=UTC)


async def test_upgrading_moves_messages_in_flight_into_the_queue(fresh_database_url: str) -> None:
    """Before 0006 each API queued in its own table: an upgrade must carry over what was
    waiting or awaiting a receipt, or those messages would never finish."""
    engine = create_engine(fresh_database_url)
    try:
        await upgrade(engine, "0005")
        async with engine.begin() as conn:
            for message_id, status, provider_id in (
                ("sms_waiting", "ACCEPTED", None),
                ("sms_sent", "SENT", "smsc-1"),
                ("sms_done", "DELIVERED", "smsc-2"),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO sms_messages (id, org_id, channel, destination, "
                        "destination_type, content, segments, status, provider_message_id, "
                        "attempts, created_at, updated_at) VALUES (:id, 'o', 'smpp', "
                        "'+27821234567', 'MOBILE', 'x', 1, :status, :pid, 0, :at, :at)"
                    ),
                    {"id": message_id, "status": status, "pid": provider_id, "at": _AT},
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id, state, provider_message_id FROM delivery_queue ORDER BY id")
            )
            assert [tuple(r) for r in rows] == [
                ("sms_sent", "SENT", "smsc-1"),
                ("sms_waiting", "QUEUED", ""),
            ]
    finally:
        await engine.dispose()


def test_cli_issues_tokens_and_upgrades(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "SWITCHBOARD_VAR_DIR": str(tmp_path),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
    }
    cli = [sys.executable, "-m", "switchboard.server.cli"]
    upgraded = subprocess.run([*cli, "db", "upgrade"], env=env, capture_output=True, text=True)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database is up to date" in upgraded.stdout
    issued = subprocess.run(
        [*cli, "token", "create", "--org", "acme", "--roles", "client,Admin", "--ttl", "2h"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert issued.returncode == 0, issued.stderr
    principal = TokenService(TEST_SECRET, TEST_CLOCK).verify(issued.stdout.strip())
    assert principal.org == "acme"
    assert principal.roles == {Role.CLIENT, Role.ADMIN}
    refused = subprocess.run(
        [*cli, "token", "create", "--org", "acme", "--roles", "Owner"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "unknown role 'Owner'" in refused.stderr


def _token(org: str) -> str:
    return TokenService(TEST_SECRET, TEST_CLOCK).issue(
        org=org, roles=[Role.CLIENT], subject="restart-test"
    )


async def test_serve_drains_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db",
        "SWITCHBOARD_VAR_DIR": str(tmp_path),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
        "SWITCHBOARD_GRPC_PORT": str(port),
        "SWITCHBOARD_DRAIN_SECONDS": "5",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard.server.cli",
        "serve",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    auth = [("authorization", "Bearer " + _token("org-drain"))]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = sms_service_pb2_grpc.SmsServiceStub(ch)
            request = pb.SendSmsRequest(messages=[sms()])
            reply = await stub.SendSms(request, metadata=auth, wait_for_ready=True, timeout=20)
            assert reply.smpp_msg_response.messages[0].accepted
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()[-2000:]
    logged = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert logged[-1]["msg"] == "stopped"


async def test_two_replicas_racing_on_one_client_message_id_send_once(
    tmp_path: Path, fresh_database_url: str
) -> None:
    """Replicas share a database; the unique key, not process memory, decides who wins."""
    auth = [("authorization", "Bearer " + _token("org-race"))]
    replicas = [await _started(tmp_path, fresh_database_url, delay=3600) for _ in range(2)]
    try:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{r.port}") for r in replicas]
        stubs = [sms_service_pb2_grpc.SmsServiceStub(ch) for ch in channels]
        request = pb.SendSmsRequest(messages=[sms(client_message_id="once-only")])
        replies = await asyncio.gather(
            *(stub.SendSms(request, metadata=auth) for stub in stubs for _ in range(10))
        )
        ids = {r.smpp_msg_response.messages[0].api_message_id for r in replies}
        assert len(ids) == 1 and "" not in ids
        accepted = await collect_events(stubs[0], auth, until=1, after="0", states=["ACCEPTED"])
        assert [e.message.api_message_id for e in accepted] == list(ids)
        for ch in channels:
            await ch.close()
    finally:
        for replica in replicas:
            await replica.stop()


@pytest.mark.skipif(
    not os.environ.get("SWITCHBOARD_TEST_DATABASE_URL", "").startswith("postgres"),
    reason="LISTEN/NOTIFY fan-out is PostgreSQL's; SQLite runs one process",
)
async def test_a_stream_on_one_replica_sees_another_replicas_events_at_once(
    tmp_path: Path, fresh_database_url: str
) -> None:
    auth = [("authorization", "Bearer " + _token("org-fanout"))]
    slow_polls = {"stream_poll_seconds": 30.0, "dispatcher_poll_seconds": 30.0}
    replicas = []
    for _ in range(2):
        settings = make_settings(tmp_path, database_url=fresh_database_url, **slow_polls)
        replica = build_application(settings)
        await replica.start()
        replicas.append(replica)
    try:
        writer, reader = (grpc.aio.insecure_channel(f"127.0.0.1:{r.port}") for r in replicas)
        follow = sms_service_pb2_grpc.SmsServiceStub(reader).StreamSmsEvents(
            pb.StreamSmsEventsRequest(heartbeat_seconds=60), metadata=auth
        )
        await follow.initial_metadata()  # the stream is open and has taken its start cursor
        sent = await sms_service_pb2_grpc.SmsServiceStub(writer).SendSms(
            pb.SendSmsRequest(messages=[sms()]), metadata=auth
        )
        # Without the notification the reader would only look again after 30 s.
        event = await asyncio.wait_for(follow.read(), 3)
        assert event.envelope.type == "sms.accepted"
        assert event.message.api_message_id == sent.smpp_msg_response.messages[0].api_message_id
        follow.cancel()
        await writer.close()
        await reader.close()
    finally:
        for replica in replicas:
            await replica.stop()
