"""Webhook delivery end to end: a real server (its own, with private URLs allowed and a clock
the tests move) POSTs to a real aiohttp receiver on 127.0.0.1, and the receiver verifies the
signatures with the `standardwebhooks` library as an integrator would."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import pytest
from standardwebhooks import webhooks as standard
from standardwebhooks.webhooks import WebhookVerificationError
from switchboard.messaging.v1 import (
    channel_pb2,
    event_handler_pb2,
    message_request_pb2,
    message_template_pb2,
    messaging_service_pb2_grpc,
    sender_pb2,
)
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role
from switchboard.server.core.clock import OffsetClock
from tests.support.clock import CLOCK_OFFSET_SECONDS
from tests.support.messaging import ALWAYS_OPEN, us_number
from tests.support.server import fresh_database, make_settings
from tests.support.webhooks import Behaviour, Received, Receiver, eventually

SVIX = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class Platform:
    """A server of the tests' own, its clock, a gRPC stub and tokens."""

    def __init__(self, app: Application, clock: OffsetClock, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.clock = clock
        self.channel = channel
        self.stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)

    def auth(self, org: str, subject: str = "test-app") -> list[tuple[str, str]]:
        token = self.app.tokens.issue(
            org=org, roles=[Role.CLIENT], subject=subject, ttl=timedelta(days=30)
        )
        return [("authorization", f"Bearer {token}")]

    def advance(self, seconds: float) -> None:
        self.clock.offset += timedelta(seconds=seconds)


def _settings(tmp: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "webhooks_allow_private_urls": True,
        "webhooks_poll_seconds": 0.1,
        "webhooks_attempt_timeout_seconds": 5.0,
        "webhooks_retry_schedule_seconds": SVIX,
        "webhooks_retry_jitter": 0.1,
        # Below the default (16), so the slow-receiver test fills a handler's slots quickly.
        "webhooks_max_in_flight_per_handler": 4,
    }
    values.update(overrides)
    return make_settings(tmp, **values)


@pytest.fixture(scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """A database of its own: on PostgreSQL the suite's server would otherwise be a replica
    that shares (and refuses, not allowing private URLs) these deliveries."""
    clock = OffsetClock(timedelta(seconds=CLOCK_OFFSET_SECONDS))
    tmp = tmp_path_factory.mktemp("hooks")
    async with fresh_database(tmp) as url:
        app = build_application(_settings(tmp, database_url=url), clock=clock)
        await app.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Platform(app, clock, channel)
        await app.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4().hex[:12]}"


@contextmanager
def receiver_clock(now: datetime) -> Iterator[None]:
    """The library checks webhook-timestamp against the receiver's clock; the receiver here
    shares the platform's (which a pinned test run moves away from the machine's)."""

    class Pinned(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return now.astimezone(tz or UTC)

    with mock.patch.object(standard, "datetime", Pinned):
        yield


def verify(secret: str, received: Received, now: datetime) -> dict[str, Any]:
    with receiver_clock(now):
        value: dict[str, Any] = standard.Webhook(secret).verify(received.body, received.headers)
    return value


async def create_handler(
    platform: Platform, org: str, url: str, types: list[str], **fields: Any
) -> tuple[str, str]:
    body = event_handler_pb2.EventHandlerInput(url=url, event_types=types, **fields)
    created = await platform.stub.CreateEventHandler(
        pb.CreateEventHandlerRequest(body=body), metadata=platform.auth(org)
    )
    return created.id, created.secret


async def template_event(platform: Platform, org: str, subject: str = "test-app") -> str:
    """Append one `message_template.created` event of `org` (its resource id returned)."""
    body = message_template_pb2.MessageTemplateInput(
        designation="TEMPLATE", name=f"t-{uuid.uuid4().hex[:10]}", pattern="Hi"
    )
    created = await platform.stub.CreateMessageTemplate(
        pb.CreateMessageTemplateRequest(body=body), metadata=platform.auth(org, subject)
    )
    return str(created.id)


async def deliveries(platform: Platform, org: str, handler_id: str, **filters: Any) -> list[Any]:
    response = await platform.stub.ListEventDeliveries(
        pb.ListEventDeliveriesRequest(event_handler_id=handler_id, **filters),
        metadata=platform.auth(org),
    )
    return list(response.deliveries)


async def test_signed_delivery_verifies_with_standardwebhooks(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    handler_id, secret = await create_handler(
        platform, org, receiver.url("signed"), ["message_template.*"]
    )
    assert secret.startswith("whsec_")
    resource = await template_event(platform, org)
    [got] = await eventually(lambda: receiver.at("signed"), what="the webhook")
    payload = verify(secret, got, platform.clock.now())
    assert payload["type"] == "message_template.created" and payload["org"] == org
    assert payload["resource_id"] == resource and payload["data"]["id"] == resource
    assert payload["id"] == payload["cursor"] and payload["time"].endswith("Z")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "Switchboard-Webhooks/1"
    assert got.webhook_id.startswith("msg_evd_")
    [delivery] = await eventually(
        lambda: _delivered(platform, org, handler_id), what="DELIVERED state"
    )
    assert got.webhook_id == f"msg_{delivery.id}" and delivery.cursor == payload["cursor"]
    attempts = await platform.stub.ListDeliveryAttempts(
        pb.ListDeliveryAttemptsRequest(event_handler_id=handler_id), metadata=platform.auth(org)
    )
    [attempt] = attempts.attempts
    assert attempt.status_code == 200 and attempt.succeeded
    assert attempt.response_excerpt == "answer 200" and attempt.delivery_id == delivery.id
    # a tampered body does not verify
    forged = Received(got.path, got.headers, got.body.replace(b"Hi", b"Ho"), got.at)
    with pytest.raises(WebhookVerificationError):
        verify(secret, forged, platform.clock.now())


async def _delivered(platform: Platform, org: str, handler_id: str) -> list[Any]:
    found = await deliveries(platform, org, handler_id)
    return found if found and all(d.state == "DELIVERED" for d in found) else []


async def test_retries_on_the_schedule_with_one_webhook_id(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    receiver.on("flaky", Behaviour(statuses=[500, 503]))
    handler_id, secret = await create_handler(
        platform, org, receiver.url("flaky"), ["message_template.created"]
    )
    await template_event(platform, org)
    await eventually(lambda: len(receiver.at("flaky")) == 1, what="the first attempt")
    [delivery] = await eventually(
        lambda: _in_state(platform, org, handler_id, "FAILED"), what="FAILED"
    )
    assert delivery.attempts == 1
    # the second attempt is due 5 s (±10 %) later on the platform's clock
    platform.advance(6)
    await eventually(lambda: len(receiver.at("flaky")) == 2, what="the second attempt")
    await eventually(lambda: _attempts(platform, org, handler_id, 2), what="2 attempts logged")
    await asyncio.sleep(0)
    assert len(receiver.at("flaky")) == 2  # nothing more until the 5 min step
    platform.advance(331)
    await eventually(lambda: len(receiver.at("flaky")) == 3, what="the third attempt")
    first, second, third = receiver.at("flaky")
    assert first.webhook_id == second.webhook_id == third.webhook_id
    verify(secret, third, platform.clock.now())
    assert first.body == third.body  # the same event, the same envelope
    assert int(third.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    await eventually(lambda: _delivered(platform, org, handler_id), what="DELIVERED")
    attempts = await platform.stub.ListDeliveryAttempts(
        pb.ListDeliveryAttemptsRequest(event_handler_id=handler_id, succeeded="false"),
        metadata=platform.auth(org),
    )
    assert sorted(a.status_code for a in attempts.attempts) == [500, 503]


async def _in_state(platform: Platform, org: str, handler_id: str, state: str) -> list[Any]:
    found = await deliveries(platform, org, handler_id, state=state)
    return found


async def _attempts(platform: Platform, org: str, handler_id: str, count: int) -> bool:
    response = await platform.stub.ListDeliveryAttempts(
        pb.ListDeliveryAttemptsRequest(event_handler_id=handler_id), metadata=platform.auth(org)
    )
    return len(response.attempts) >= count


async def test_exhausted_schedule_dead_letters(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    receiver.on("down", Behaviour(then=500))
    handler_id, _ = await create_handler(
        platform, org, receiver.url("down"), ["message_template.created"]
    )
    await template_event(platform, org)
    for attempt, delay in enumerate(SVIX, start=1):
        if attempt > 1:
            platform.advance(delay * 1.1 + 1)
        await eventually(lambda n=attempt: len(receiver.at("down")) >= n, what=f"attempt {attempt}")
        await eventually(
            lambda n=attempt: _attempts(platform, org, handler_id, n), what=f"log {attempt}"
        )
    [dead] = await eventually(lambda: _in_state(platform, org, handler_id, "DEAD"), what="DEAD")
    assert dead.attempts == len(SVIX)
    assert len({r.webhook_id for r in receiver.at("down")}) == 1
    platform.advance(40000)
    await asyncio.sleep(0.5)
    assert len(receiver.at("down")) == len(SVIX)  # dead letters are not retried


async def test_gone_disables_the_handler(platform: Platform, receiver: Receiver, org: str) -> None:
    receiver.on("gone", Behaviour(then=410))
    await create_handler(platform, org, receiver.url("watch"), ["event_handler.disabled"])
    handler_id, _ = await create_handler(
        platform, org, receiver.url("gone"), ["message_template.created"]
    )
    await template_event(platform, org)

    async def disabled() -> Any:
        handler = await platform.stub.GetEventHandler(
            pb.GetEventHandlerRequest(event_handler_id=handler_id), metadata=platform.auth(org)
        )
        return handler if handler.state == "DISABLED" else None

    handler = await eventually(disabled, what="DISABLED")
    assert "410" in handler.disabled_reason
    # the org hears about it through another handler
    [notice] = await eventually(lambda: receiver.at("watch"), what="event_handler.disabled")
    assert notice.json["type"] == "event_handler.disabled"
    assert notice.json["resource_id"] == handler_id
    assert notice.json["data"]["state"] == "DISABLED" and "secret" not in notice.body.decode()
    [gone] = await deliveries(platform, org, handler_id)
    assert gone.state == "DEAD"
    await template_event(platform, org)
    await asyncio.sleep(0.5)
    assert len(receiver.at("gone")) == 1  # nothing more goes to a disabled handler


async def test_replay_resends_exactly_the_range(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    handler_id, _ = await create_handler(
        platform, org, receiver.url("replay"), ["message_template.created"]
    )
    for _ in range(5):
        await template_event(platform, org)
    await eventually(lambda: len(receiver.at("replay")) == 5, what="5 deliveries")
    firsts = sorted(receiver.at("replay"), key=lambda r: int(r.json["cursor"]))
    cursors = [r.json["cursor"] for r in firsts]
    ids = {r.json["cursor"]: r.webhook_id for r in firsts}
    replay = await platform.stub.CreateEventReplay(
        pb.CreateEventReplayRequest(
            event_handler_id=handler_id,
            body=event_handler_pb2.EventReplayInput(
                after_cursor=cursors[0], until_cursor=cursors[3]
            ),
        ),
        metadata=platform.auth(org),
    )

    async def completed() -> Any:
        job = await platform.stub.GetEventReplay(
            pb.GetEventReplayRequest(event_handler_id=handler_id, replay_id=replay.id),
            metadata=platform.auth(org),
        )
        return job if job.state == "COMPLETED" else None

    job = await eventually(completed, what="the replay to complete")
    assert job.events_total == 3 and job.events_queued == 3
    await eventually(lambda: len(receiver.at("replay")) == 8, what="3 re-sent")
    await asyncio.sleep(0.3)
    again = receiver.at("replay")[5:]
    assert len(receiver.at("replay")) == 8
    assert sorted((r.json["cursor"] for r in again), key=int) == cursors[1:4]
    assert all(r.webhook_id == ids[r.json["cursor"]] for r in again)


async def test_channel_and_application_scopes(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    auth = platform.auth(org)
    channels = []
    for name in ("a", "b"):
        created = await platform.stub.CreateChannel(
            pb.CreateChannelRequest(
                body=channel_pb2.ChannelInput(name=f"{name}-{uuid.uuid4().hex[:6]}")
            ),
            metadata=auth,
        )
        channels.append(created.id)
    await create_handler(platform, org, receiver.url("chan"), ["channel.*"], channel_id=channels[0])
    await create_handler(
        platform, org, receiver.url("app"), ["message_template.*"], application_id="app-b"
    )
    for channel_id in channels:
        await platform.stub.UpdateChannel(
            pb.UpdateChannelRequest(
                channel_id=channel_id, body=channel_pb2.ChannelInput(description="x")
            ),
            metadata=auth,
        )
    await template_event(platform, org, subject="app-a")
    wanted = await template_event(platform, org, subject="app-b")
    await eventually(lambda: receiver.at("chan") and receiver.at("app"), what="scoped events")
    await asyncio.sleep(0.5)
    assert {r.json["resource_id"] for r in receiver.at("chan")} == {channels[0]}
    assert [r.json["type"] for r in receiver.at("chan")] == ["channel.updated"]
    assert [r.json["resource_id"] for r in receiver.at("app")] == [wanted]


async def _sender(platform: Platform, org: str) -> str:
    created = await platform.stub.CreateSenderId(
        pb.CreateSenderIdRequest(
            body=sender_pb2.SenderIdInput(
                type_id="sms-long-code", class_id=ALWAYS_OPEN, address=us_number()
            )
        ),
        metadata=platform.auth(org),
    )
    return str(created.id)


async def _send(platform: Platform, org: str, sender: str, application: str) -> str:
    body = message_request_pb2.MessageRequestInput(to=[us_number()], body="hi")
    setattr(body, "from", sender)  # `from` is a Python keyword
    submitted = await platform.stub.SubmitMessageRequest(
        pb.SubmitMessageRequestRequest(body=body), metadata=platform.auth(org, application)
    )
    return str(submitted.id)


async def test_a_channel_scope_gets_the_messages_sent_through_the_channel_by_the_application(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    """The seed's event handler "on the channel, associated with the application": receipts of
    the messages that application sends through one of the channel's sender IDs, no others."""
    inside, outside = await _sender(platform, org), await _sender(platform, org)
    created = await platform.stub.CreateChannel(
        pb.CreateChannelRequest(body=channel_pb2.ChannelInput(name=f"c-{uuid.uuid4().hex[:6]}")),
        metadata=platform.auth(org),
    )
    await platform.stub.AddChannelSenderIds(
        pb.AddChannelSenderIdsRequest(channel_id=created.id, sender_ids=[inside]),
        metadata=platform.auth(org),
    )
    scoped_id, _ = await create_handler(
        platform,
        org,
        receiver.url("scoped"),
        ["message.*", "message_request.*"],
        channel_id=created.id,
        application_id="app-x",
    )
    await create_handler(platform, org, receiver.url("all"), ["message.*"])
    wanted = await _send(platform, org, inside, "app-x")
    others = [
        await _send(platform, org, inside, "app-y"),
        await _send(platform, org, outside, "app-x"),
    ]

    def requests_heard_of() -> set[str]:
        return {r.json["data"].get("message_request_id") for r in receiver.at("all")}

    # Each request's messages reached the unscoped handler: the matcher has decided on them for
    # the scoped one too (one transaction matches an event for every handler); then wait for
    # every delivery it made to arrive.
    await eventually(lambda: {wanted, *others} <= requests_heard_of(), what="every message")
    made = await deliveries(platform, org, scoped_id)
    await eventually(lambda: len(receiver.at("scoped")) >= len(made), what="scoped deliveries")
    scoped = [r.json for r in receiver.at("scoped")]
    requests = {e["resource_id"] for e in scoped if e["type"].startswith("message_request.")}
    assert requests == {wanted}
    messages = [e["data"] for e in scoped if e["type"].startswith("message.")]
    assert messages
    assert {m["message_request_id"] for m in messages} == {wanted}
    assert {m["customer_sender_id"] for m in messages} == {inside}


async def test_a_slow_receiver_delays_no_one_else(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    receiver.on("slow", Behaviour(sleep=30))
    await create_handler(platform, org, receiver.url("slow"), ["message_template.created"])
    await create_handler(platform, org, receiver.url("fast"), ["message_template.created"])
    other_org = f"org-{uuid.uuid4().hex[:12]}"
    await create_handler(platform, other_org, receiver.url("other"), ["message_template.created"])
    for _ in range(6):  # more than the slow handler's 4 slots
        await template_event(platform, org)
    await eventually(lambda: len(receiver.at("slow")) >= 4, what="slots held by the slow one")
    started = time.monotonic()
    await template_event(platform, org)
    await template_event(platform, other_org)
    await eventually(lambda: len(receiver.at("fast")) == 7, timeout=5, what="the fast handler")
    await eventually(lambda: receiver.at("other"), timeout=5, what="the other org's handler")
    fast_latency = time.monotonic() - started
    assert fast_latency < 2.0, fast_latency
    assert len(receiver.at("slow")) == 4  # bounded per handler

    # message delivery does not wait either: a message request completes meanwhile
    auth = platform.auth(org)
    sender = await platform.stub.CreateSenderId(
        pb.CreateSenderIdRequest(
            body=sender_pb2.SenderIdInput(
                type_id="sms-long-code", class_id="alerts-na", address="+14155550142"
            )
        ),
        metadata=auth,
    )
    started = time.monotonic()
    request = await platform.stub.SubmitMessageRequest(
        pb.SubmitMessageRequestRequest(body=_message_input(sender.id)),
        metadata=auth,
    )

    async def completed() -> bool:
        got = await platform.stub.ReadMessageRequest(
            pb.ReadMessageRequestRequest(message_request_id=request.id), metadata=auth
        )
        return bool(got.state == "COMPLETED")

    await eventually(completed, timeout=10, what="the message request")
    assert time.monotonic() - started < 5.0


def _message_input(sender_id: str) -> message_request_pb2.MessageRequestInput:
    body = message_request_pb2.MessageRequestInput(to=["+14155550143"], body="hi")
    setattr(body, "from", f"sender_id:{sender_id}")  # a Python keyword
    return body


async def test_rotation_sends_both_signatures_during_grace(
    platform: Platform, receiver: Receiver, org: str
) -> None:
    handler_id, old = await create_handler(
        platform, org, receiver.url("rotate"), ["message_template.created"]
    )
    rotated = await platform.stub.RotateEventHandlerSecret(
        pb.RotateEventHandlerSecretRequest(
            event_handler_id=handler_id,
            body=event_handler_pb2.RotateSecretInput(grace_seconds=3600),
        ),
        metadata=platform.auth(org),
    )
    new = rotated.secret
    assert new.startswith("whsec_") and new != old
    await template_event(platform, org)
    [during] = await eventually(lambda: receiver.at("rotate"), what="a delivery in grace")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    now = platform.clock.now()
    assert verify(new, during, now) == verify(old, during, now)

    platform.advance(3601)
    await template_event(platform, org)
    await eventually(lambda: len(receiver.at("rotate")) == 2, what="a delivery after grace")
    after = receiver.at("rotate")[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    verify(new, after, platform.clock.now())
    with pytest.raises(WebhookVerificationError):
        verify(old, after, platform.clock.now())


async def test_a_restart_mid_schedule_loses_nothing(
    tmp_path: Path, receiver: Receiver, org: str
) -> None:
    receiver.on("restart", Behaviour(statuses=[500]))
    clock = OffsetClock(timedelta(seconds=CLOCK_OFFSET_SECONDS))
    async with fresh_database(tmp_path) as url:
        await _restart_mid_schedule(_settings(tmp_path, database_url=url), clock, receiver, org)


async def _restart_mid_schedule(
    settings: Any, clock: OffsetClock, receiver: Receiver, org: str
) -> None:
    first = build_application(settings, clock=clock)
    await first.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            platform = Platform(first, clock, channel)
            handler_id, secret = await create_handler(
                platform, org, receiver.url("restart"), ["message_template.created"]
            )
            await template_event(platform, org)
            await eventually(lambda: receiver.at("restart"), what="the first attempt")
            await eventually(lambda: _in_state(platform, org, handler_id, "FAILED"), what="FAILED")
    finally:
        await first.stop()

    clock.offset += timedelta(seconds=6)  # the retry fell due while no server ran
    second = build_application(settings, clock=clock)
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            platform = Platform(second, clock, channel)
            await eventually(lambda: len(receiver.at("restart")) == 2, what="the retry")
            await eventually(lambda: _delivered(platform, org, handler_id), what="DELIVERED")
            before, after = receiver.at("restart")
            assert before.webhook_id == after.webhook_id
            verify(secret, after, clock.now())
    finally:
        await second.stop()


async def test_two_server_processes_share_the_work_without_duplicates(
    tmp_path: Path, receiver: Receiver, org: str
) -> None:
    """Two servers on one database (replicas; on PostgreSQL they claim with SKIP LOCKED): every
    event is delivered once, whichever server committed it."""
    clock = OffsetClock(timedelta(seconds=CLOCK_OFFSET_SECONDS))
    async with fresh_database(tmp_path) as url:
        settings = _settings(tmp_path, database_url=url)
        apps = [build_application(settings, clock=clock) for _ in range(2)]
        for app in apps:
            await app.start()
        try:
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{apps[0].port}") as one,
                grpc.aio.insecure_channel(f"127.0.0.1:{apps[1].port}") as two,
            ):
                platforms = [Platform(apps[0], clock, one), Platform(apps[1], clock, two)]
                await create_handler(
                    platforms[0], org, receiver.url("shared"), ["message_template.created"]
                )
                created = {await template_event(platforms[i % 2], org) for i in range(30)}
                await eventually(
                    lambda: len(receiver.at("shared")) >= 30, timeout=20, what="30 deliveries"
                )
                await asyncio.sleep(0.5)  # a duplicate would arrive meanwhile
                got = receiver.at("shared")
                assert len(got) == 30
                assert {r.json["resource_id"] for r in got} == created
                assert len({r.webhook_id for r in got}) == 30
        finally:
            for app in apps:
                await app.stop()
