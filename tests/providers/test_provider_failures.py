"""What the dispatcher does when a provider fails: transient failures are retried with backoff,
permanent ones fail the message at once, a provider that keeps crashing fails it after the last
attempt, and nothing is lost or sent twice along the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role
from switchboard.server.providers.base import (
    InboundSink,
    OutboundSms,
    Receipt,
    ReceiptSink,
    SubmitResult,
)
from tests.support.auth import Metadata
from tests.support.server import make_settings
from tests.support.sms import collect_events, sms


class ScriptedProvider:
    """A provider whose answers are scripted per submit call; delivers what it accepts."""

    name = "scripted"

    def __init__(self, script: Sequence[str]) -> None:
        self.script = list(script)  # per call: "ok", "transient", "permanent" or "crash"
        self.submitted: list[str] = []
        self._receipts: ReceiptSink | None = None
        self._reporting: set[asyncio.Task[None]] = set()

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        self._receipts = receipts

    async def stop(self) -> None:
        await asyncio.gather(*self._reporting)

    async def submit_many(self, messages: Sequence[OutboundSms]) -> list[SubmitResult]:
        step = self.script.pop(0) if self.script else "ok"
        self.submitted += [m.message_id for m in messages]
        if step == "crash":
            raise ConnectionError("gateway unreachable")
        if step == "transient":
            return [SubmitResult(error="throttled, try later", permanent=False)] * len(messages)
        if step == "permanent":
            return [SubmitResult(error="destination barred", permanent=True)] * len(messages)
        assert self._receipts is not None
        receipts = [Receipt(m.message_id, delivered=True) for m in messages]
        task = asyncio.create_task(self._receipts(receipts))
        self._reporting.add(task)
        task.add_done_callback(self._reporting.discard)
        return [SubmitResult(provider_message_id=f"p-{m.message_id}") for m in messages]

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        pass

    def healthy(self) -> bool:
        return True


Scripted = tuple[ScriptedProvider, sms_service_pb2_grpc.SmsServiceStub, Metadata]


@pytest.fixture
async def scripted(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database_url: str
) -> AsyncIterator[Scripted]:
    provider = ScriptedProvider(request.param)
    settings = make_settings(
        tmp_path,
        database_url=fresh_database_url,
        dispatcher_retry_base_seconds=0.05,
        dispatcher_max_attempts=3,
    )
    app: Application = build_application(settings, providers={"smpp": provider})
    await app.start()
    token = app.tokens.issue(org="org-providers", roles=[Role.CLIENT], subject="t")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = sms_service_pb2_grpc.SmsServiceStub(channel)
            yield provider, stub, [("authorization", f"Bearer {token}")]
    finally:
        await app.stop()


async def _send_and_follow(
    stub: sms_service_pb2_grpc.SmsServiceStub, auth: Metadata, until: int
) -> tuple[str, list[pb.SmsEvent]]:
    sent = await stub.SendSms(pb.SendSmsRequest(messages=[sms()]), metadata=auth)
    api_id = sent.smpp_msg_response.messages[0].api_message_id
    events = await collect_events(stub, auth, until=until, after="0", api_message_ids=[api_id])
    return api_id, events


@pytest.mark.parametrize("scripted", [["transient", "transient", "ok"]], indirect=True)
async def test_transient_failures_are_retried_until_sent(scripted: Scripted) -> None:
    provider, stub, auth = scripted
    api_id, events = await _send_and_follow(stub, auth, until=3)
    assert [e.envelope.type for e in events] == ["sms.accepted", "sms.sent", "sms.delivered"]
    assert provider.submitted == [api_id] * 3  # two retries, then the one that went through


@pytest.mark.parametrize("scripted", [["permanent"]], indirect=True)
async def test_permanent_failure_is_not_retried(scripted: Scripted) -> None:
    provider, stub, auth = scripted
    api_id, events = await _send_and_follow(stub, auth, until=2)
    assert [e.envelope.type for e in events] == ["sms.accepted", "sms.failed"]
    assert events[1].message.error == "destination barred"
    await asyncio.sleep(0.3)
    assert provider.submitted == [api_id]


@pytest.mark.parametrize("scripted", [["crash", "crash", "crash", "ok"]], indirect=True)
async def test_a_provider_that_keeps_crashing_fails_after_the_last_attempt(
    scripted: Scripted,
) -> None:
    provider, stub, auth = scripted
    api_id, events = await _send_and_follow(stub, auth, until=2)
    assert [e.envelope.type for e in events] == ["sms.accepted", "sms.failed"]
    assert events[1].message.error == "provider error: ConnectionError"
    assert provider.submitted == [api_id] * 3
    status = await stub.GetSmsMessage(pb.GetSmsMessageRequest(api_message_id=api_id), metadata=auth)
    assert status.status == "FAILED"
