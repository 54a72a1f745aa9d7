"""kill -9 with 10,000 messages in flight: the server (a subprocess) sends over SMPP to the
development SMSC and is killed mid-stream; after a restart every accepted message reaches a
final state, none is lost, and the SMSC's duplicates stay within one claimed batch (the only
work whose outcome can be lost is a batch submitted but not yet recorded)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.db import create_engine, table_of
from switchboard.server.sms.models import SmsRecord
from tests.support.auth import TEST_SECRET
from tests.support.clock import TEST_CLOCK
from tests.support.server import free_port
from tests.support.smsc import Smsc

TOTAL = 10_000
BATCH = 1000
CLAIM_BATCH = 200  # the engine's claim size: the most work one crash can leave unrecorded
_sms = table_of(SmsRecord)


@pytest.fixture
def smsc() -> Iterator[Smsc]:
    peer = Smsc("--dlr-delay", "0.05")
    peer.start()
    yield peer
    peer.kill()


async def _serve(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard.server.cli",
        "serve",
        env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _statuses(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            query = select(_sms.c.status, func.count()).group_by(_sms.c.status)
            return {str(status): int(count) for status, count in await connection.execute(query)}
    finally:
        await engine.dispose()


async def test_kill_9_with_messages_in_flight_loses_nothing(
    tmp_path: Path, fresh_database_url: str, smsc: Smsc
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": fresh_database_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
        "SWITCHBOARD_GRPC_PORT": str(port),
        "SWITCHBOARD_SMS_MAX_BATCH": str(BATCH),
        "SWITCHBOARD_DISPATCHER_POLL_SECONDS": "0.2",
        "SWITCHBOARD_ROUTES": json.dumps(
            {
                "smpp": {
                    "type": "smpp",
                    "host": "127.0.0.1",
                    "port": smsc.port,
                    "system_id": "switchboard",
                    "password": "secret",
                }
            }
        ),
    }
    token = TokenService(TEST_SECRET, TEST_CLOCK).issue(
        org="org-crash", roles=[Role.CLIENT], subject="crash"
    )
    auth = [("authorization", f"Bearer {token}")]
    server = await _serve(env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = sms_service_pb2_grpc.SmsServiceStub(channel)
            # Numbers ending in 5: none of the SMSC's failure rules (…0013, …0411, …0429).
            for start in range(0, TOTAL, BATCH):
                messages = [
                    pb.SmsMessage(channel="smpp", to=f"+2782{i:06d}5", content=f"crash test {i}")
                    for i in range(start, start + BATCH)
                ]
                reply = await stub.SendSms(
                    pb.SendSmsRequest(messages=messages),
                    metadata=auth,
                    wait_for_ready=True,
                    timeout=60,
                )
                assert all(m.accepted for m in reply.smpp_msg_response.messages)
        # Kill once the SMSC is busy with them: some sent, some in the window, most queued.
        async with asyncio.timeout(60):
            while smsc.stats()["submits"] < TOTAL // 5:
                await asyncio.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        await server.wait()
        at_kill = smsc.stats()["messages"]
        assert at_kill < TOTAL, "everything went out before the kill: nothing was in flight"
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()

    restarted = await _serve(env)
    try:
        deadline = time.monotonic() + 120
        while True:
            statuses = await _statuses(fresh_database_url)
            if statuses.get("DELIVERED", 0) + statuses.get("FAILED", 0) == TOTAL:
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.2)
    finally:
        restarted.send_signal(signal.SIGTERM)
        await asyncio.wait_for(restarted.wait(), 30)
    assert statuses == {"DELIVERED": TOTAL}, statuses
    stats: dict[str, Any] = smsc.stats()
    received = {(m["destination"], m["text"]) for m in smsc.messages()}
    assert len(received) == TOTAL  # every message reached the SMSC
    duplicates = stats["duplicates"]
    print(
        f"\ncrash test: {TOTAL} accepted, killed at {at_kill} at the SMSC, "
        f"{duplicates} duplicates after restart"
    )
    assert duplicates <= CLAIM_BATCH, duplicates
