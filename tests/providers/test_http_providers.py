"""Clickatell, Grandcom and WhatsApp Cloud providers against local fakes of their APIs (real
HTTP servers): acceptance and refusals, rate limits, server errors, bad credentials, timeouts,
and receipts from callbacks, webhooks and polling matched back to our ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

import pytest

from switchboard.server.providers.base import (
    ChannelProvider,
    InboundSms,
    Outbound,
    OutboundSms,
    Receipt,
    SmsProvider,
)
from switchboard.server.providers.http_sms import (
    ClickatellProvider,
    GrandcomProvider,
    HttpSmsProvider,
)
from switchboard.server.providers.whatsapp import WhatsAppCloudProvider, verify_signature
from switchboard.server.telephony.phone import PhoneNumber
from tests.fakes import Canned
from tests.fakes.clickatell import FakeClickatell
from tests.fakes.grandcom import FakeGrandcom
from tests.fakes.whatsapp import FakeWhatsApp


class Sink:
    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbound: list[InboundSms] = []

    async def __call__(self, receipts: Sequence[Receipt]) -> None:
        self.receipts.extend(receipts)

    async def take_inbound(self, messages: Sequence[InboundSms]) -> None:
        self.inbound.extend(messages)


def sms(message_id: str, number: str, provider_message_id: str = "") -> OutboundSms:
    return OutboundSms(
        message_id=message_id,
        org_id="org",
        channel="default",
        to=PhoneNumber(number, "MOBILE"),
        content=f"Hello {message_id}",
        provider_message_id=provider_message_id,
    )


async def eventually(check: Callable[[], bool], seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- Clickatell and Grandcom share behaviour: the tests run against both -----------------------


@dataclass
class Gateway:
    fake: FakeClickatell | FakeGrandcom
    make: Callable[..., HttpSmsProvider]  # make(api_key=None, **options)
    delivered: str  # the gateway's final delivered status
    failed: str


@pytest.fixture(params=["clickatell", "grandcom"])
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    if request.param == "clickatell":
        fake: FakeClickatell | FakeGrandcom = FakeClickatell()

        def make_clickatell(api_key: str | None = None, **options: float) -> HttpSmsProvider:
            key = api_key or fake.api_key
            return ClickatellProvider(key, base_url=fake.base_url, **options)  # type: ignore[arg-type]

        gw = Gateway(fake, make_clickatell, "RECEIVED_BY_RECIPIENT", "ERROR_DELIVERING")
    else:
        fake = FakeGrandcom()

        def make_grandcom(api_key: str | None = None, **options: float) -> HttpSmsProvider:
            return GrandcomProvider(fake.base_url, api_key or fake.api_key, **options)  # type: ignore[arg-type]

        gw = Gateway(fake, make_grandcom, "DELIVERED", "FAILED")
    await fake.start()
    yield gw
    await fake.stop()


async def started(provider: HttpSmsProvider, sink: Sink) -> HttpSmsProvider:
    route: SmsProvider = provider  # what the SMS dispatcher takes
    await route.start(sink, sink.take_inbound)
    return provider


async def test_batch_accepted_and_refused(gateway: Gateway) -> None:
    gateway.fake.refuse["27820000000"] = "Invalid destination address"
    sink = Sink()
    provider = await started(gateway.make(), sink)
    try:
        results = await provider.submit_many(
            [sms("m1", "+27821234567"), sms("m2", "+27820000000"), sms("m3", "+34666123123")]
        )
    finally:
        await provider.stop()
    ok1, refused, ok2 = results
    assert ok1.accepted and ok2.accepted and ok1.provider_message_id != ok2.provider_message_id
    assert ok1.provider_message_id in gateway.fake.messages
    assert not refused.accepted and refused.permanent
    assert refused.error == "Invalid destination address"
    # One HTTP request for the batch, numbers without "+", our ids as clientMessageId.
    [(method, path, body)] = gateway.fake.requests
    assert (method, path) == ("POST", "/messages")
    assert [m["to"] for m in body["messages"]] == ["27821234567", "27820000000", "34666123123"]
    assert [m["clientMessageId"] for m in body["messages"]] == ["m1", "m2", "m3"]
    assert provider.healthy()


async def test_batches_split_at_max_batch(gateway: Gateway) -> None:
    provider = await started(gateway.make(max_batch=2), Sink())
    try:
        results = await provider.submit_many([sms(f"m{i}", "+27821234567") for i in range(5)])
    finally:
        await provider.stop()
    assert all(r.accepted for r in results)
    assert [len(body["messages"]) for _, _, body in gateway.fake.requests] == [2, 2, 1]


async def test_all_refused_is_permanent_per_message(gateway: Gateway) -> None:
    gateway.fake.refuse["27820000000"] = "Number blacklisted"
    provider = await started(gateway.make(), Sink())
    try:
        [result] = await provider.submit_many([sms("m1", "+27820000000")])
    finally:
        await provider.stop()
    assert not result.accepted and result.permanent and result.error == "Number blacklisted"


async def test_callbacks_become_receipts_also_after_resume(gateway: Gateway) -> None:
    sink = Sink()
    provider = await started(gateway.make(), sink)
    try:
        ok, failing = await provider.submit_many(
            [sms("m1", "+27821234567"), sms("m2", "+27821234568")]
        )
        assert ok.provider_message_id and failing.provider_message_id
        await provider.handle_callback(gateway.fake.callback(ok.provider_message_id, "QUEUED"))
        assert sink.receipts == []  # not final
        await provider.handle_callback(
            gateway.fake.callback(ok.provider_message_id, gateway.delivered)
        )
        assert sink.receipts == [Receipt("m1", delivered=True)]
    finally:
        await provider.stop()

    # A restart: a new provider knows the pending message only through resume().
    sink = Sink()
    restarted = await started(gateway.make(), sink)
    try:
        restarted.resume(
            [sms("m2", "+27821234568", provider_message_id=failing.provider_message_id)]
        )
        assert restarted.awaiting_receipts == 1
        callback = gateway.fake.callback(failing.provider_message_id, gateway.failed)
        callback.pop("clientMessageId")  # match through the rebuilt map alone
        await restarted.handle_callback(callback)
    finally:
        await restarted.stop()
    [receipt] = sink.receipts
    assert receipt.message_id == "m2" and not receipt.delivered and receipt.error
    assert restarted.awaiting_receipts == 0


async def test_polling_finds_final_statuses(gateway: Gateway) -> None:
    sink = Sink()
    provider = await started(gateway.make(poll_interval=0.05), sink)
    try:
        [result] = await provider.submit_many([sms("m1", "+27821234567")])
        assert result.provider_message_id
        await asyncio.sleep(0.15)
        assert sink.receipts == []  # still QUEUED at the gateway
        gateway.fake.callback(result.provider_message_id, gateway.delivered)  # status changes
        await eventually(lambda: bool(sink.receipts))
    finally:
        await provider.stop()
    assert sink.receipts == [Receipt("m1", delivered=True)]
    polls = [p for m, p, _ in gateway.fake.requests if m == "GET"]
    assert polls and set(polls) == {f"/messages/{result.provider_message_id}"}


async def test_rate_limit_is_transient_and_honours_retry_after(gateway: Gateway) -> None:
    gateway.fake.rate_limit = 1
    provider = await started(gateway.make(), Sink())
    try:
        [first] = await provider.submit_many([sms("m1", "+27821234567")])
        limited = await provider.submit_many([sms("m2", "+27821234567"), sms("m3", "+27821234567")])
        assert first.accepted
        assert all(not r.accepted and not r.permanent for r in limited)
        assert all(r.error is not None and "429" in r.error for r in limited)
        assert not provider.healthy()
        # Within Retry-After nothing is sent at all.
        [waiting] = await provider.submit_many([sms("m4", "+27821234567")])
        assert not waiting.permanent and len(gateway.fake.requests) == 2
    finally:
        await provider.stop()


async def test_server_error_is_transient(gateway: Gateway) -> None:
    gateway.fake.script.append(Canned(503, {"error": "Service Unavailable"}))
    provider = await started(gateway.make(), Sink())
    try:
        [failed] = await provider.submit_many([sms("m1", "+27821234567")])
        [retried] = await provider.submit_many([sms("m1", "+27821234567")])
    finally:
        await provider.stop()
    assert not failed.accepted and not failed.permanent and failed.error is not None
    assert "503" in failed.error and retried.accepted


async def test_bad_key_is_transient_and_unhealthy(gateway: Gateway) -> None:
    provider = await started(gateway.make(api_key="wrong"), Sink())
    try:
        [result] = await provider.submit_many([sms("m1", "+27821234567")])
        assert not provider.healthy()
    finally:
        await provider.stop()
    assert not result.accepted and not result.permanent
    assert result.error is not None and "401" in result.error


async def test_timeout_is_transient(gateway: Gateway) -> None:
    gateway.fake.script.append(Canned(202, {"messages": []}, delay=1.0))
    provider = await started(gateway.make(timeout=0.2), Sink())
    try:
        [result] = await provider.submit_many([sms("m1", "+27821234567")])
    finally:
        await provider.stop()
    assert not result.accepted and not result.permanent
    assert result.error is not None and "no answer" in result.error


async def test_gateway_down_is_transient() -> None:
    from tests.support.server import free_port

    provider = await started(
        ClickatellProvider("k", base_url=f"http://127.0.0.1:{free_port()}"), Sink()
    )
    try:
        [result] = await provider.submit_many([sms("m1", "+27821234567")])
    finally:
        await provider.stop()
    assert not result.accepted and not result.permanent and result.error is not None


async def test_grandcom_answers_matched_by_client_message_id() -> None:
    fake = FakeGrandcom()
    fake.reverse = True
    fake.refuse["27820000000"] = "Invalid number"
    await fake.start()
    provider = await started(GrandcomProvider(fake.base_url, fake.api_key), Sink())
    try:
        ok, refused = await provider.submit_many(
            [sms("m1", "+27821234567"), sms("m2", "+27820000000")]
        )
    finally:
        await provider.stop()
        await fake.stop()
    assert ok.accepted and fake.messages[str(ok.provider_message_id)]["clientMessageId"] == "m1"
    assert not refused.accepted and refused.permanent and refused.error == "Invalid number"


async def test_clickatell_inbound_callback() -> None:
    sink = Sink()
    provider = ClickatellProvider("k", base_url="http://127.0.0.1:9")
    await provider.start(sink, sink.take_inbound)
    try:
        await provider.handle_inbound(
            {
                "messageId": "mo1",
                "fromNumber": "27821234567",
                "toNumber": "27600000000",
                "text": "STOP",
            }
        )
    finally:
        await provider.stop()
    assert sink.inbound == [InboundSms("+27821234567", "27600000000", "STOP", "clickatell", "mo1")]


# -- WhatsApp Cloud ----------------------------------------------------------------------------


@pytest.fixture
async def whatsapp() -> AsyncIterator[FakeWhatsApp]:
    fake = FakeWhatsApp()
    await fake.start()
    yield fake
    await fake.stop()


def wa(delivery_id: str, to: str, content: str = "Hola") -> Outbound:
    return Outbound(delivery_id, "org", "whatsapp", to, "MOBILE", "Yoigo", "", content)


def wa_provider(fake: FakeWhatsApp, **options: object) -> WhatsAppCloudProvider:
    token = str(options.pop("token", fake.token))
    return WhatsAppCloudProvider(fake.phone_number_id, token, base_url=fake.base_url, **options)  # type: ignore[arg-type]


async def test_whatsapp_send_and_errors(whatsapp: FakeWhatsApp) -> None:
    whatsapp.errors["34600000001"] = (400, 131026)
    whatsapp.errors["34600000002"] = (400, 100)
    whatsapp.errors["34600000003"] = (400, 131056)
    whatsapp.errors["34600000004"] = (500, 1)
    sink = Sink()
    provider = wa_provider(whatsapp)
    await provider.start(sink)
    try:
        ok, undeliverable, invalid, pair_limit, server = await provider.submit_many(
            [
                wa("d1", "+34666123123"),
                wa("d2", "+34600000001"),
                wa("d3", "+34600000002"),
                wa("d4", "+34600000003"),
                wa("d5", "+34600000004"),
            ]
        )
    finally:
        await provider.stop()
    assert ok.accepted and str(ok.provider_message_id).startswith("wamid.")
    sent = whatsapp.sent[str(ok.provider_message_id)]
    assert sent["to"] == "34666123123" and sent["text"]["body"] == "Hola"
    assert sent["biz_opaque_callback_data"] == "d1"
    assert undeliverable.permanent and undeliverable.error is not None
    assert "131026" in undeliverable.error
    assert invalid.permanent and invalid.error is not None and "100" in invalid.error
    assert not pair_limit.permanent and not server.permanent


async def test_whatsapp_rate_limit_transient(whatsapp: FakeWhatsApp) -> None:
    whatsapp.rate_limit = 1
    provider = wa_provider(whatsapp)
    await provider.start(Sink())
    try:
        [ok] = await provider.submit_many([wa("d1", "+34666123123")])
        [limited] = await provider.submit_many([wa("d2", "+34666123123")])
        assert not provider.healthy()
    finally:
        await provider.stop()
    assert ok.accepted and not limited.accepted and not limited.permanent
    assert limited.error is not None and "130429" in limited.error


async def test_whatsapp_expired_token_and_timeout(whatsapp: FakeWhatsApp) -> None:
    expired = wa_provider(whatsapp, token="expired")
    slow = wa_provider(whatsapp, timeout=0.2)
    whatsapp.script.append(Canned(200, {"messages": [{"id": "wamid.late"}]}, delay=1.0))
    await expired.start(Sink())
    await slow.start(Sink())
    try:
        [timed_out] = await slow.submit_many([wa("d2", "+34666123123")])
        [refused] = await expired.submit_many([wa("d1", "+34666123123")])
        assert not expired.healthy() and slow.healthy()
    finally:
        await expired.stop()
        await slow.stop()
    assert not refused.permanent and refused.error is not None and "190" in refused.error
    assert (
        not timed_out.permanent and timed_out.error is not None and "no answer" in timed_out.error
    )


async def test_whatsapp_status_webhooks(whatsapp: FakeWhatsApp) -> None:
    sink = Sink()
    provider = wa_provider(whatsapp)
    await provider.start(sink)
    try:
        one, two, three = await provider.submit_many(
            [wa("d1", "+34666123121"), wa("d2", "+34666123122"), wa("d3", "+34666123123")]
        )
        first, second, third = (str(r.provider_message_id) for r in (one, two, three))
        result = await provider.handle_webhook(
            whatsapp.status_webhook(
                (first, "sent"), (first, "delivered"), (second, "read"), (third, "failed")
            )
        )
    finally:
        await provider.stop()
    assert sink.receipts == result.receipts
    assert result.receipts[:2] == [Receipt("d1", delivered=True), Receipt("d2", delivered=True)]
    failed = result.receipts[2]
    assert failed.message_id == "d3" and not failed.delivered
    assert failed.error is not None and "131026" in failed.error
    assert result.read == ["d2"] and result.inbound == []

    # After a restart the wamid map is gone: the webhook's callback data still names our id.
    sink = Sink()
    restarted = wa_provider(whatsapp)
    await restarted.start(sink)
    try:
        channel: ChannelProvider = restarted  # what the communications dispatcher takes
        channel.resume([replace(wa("d2", "+34666123122"), provider_message_id=second)])
        webhook = whatsapp.status_webhook((first, "read"), (second, "delivered"))
        webhook["entry"][0]["changes"][0]["value"]["statuses"][1].pop("biz_opaque_callback_data")
        await restarted.handle_webhook(webhook)
    finally:
        await restarted.stop()
    # d1 through its callback data alone, d2 through the map resume() rebuilt.
    assert sink.receipts == [Receipt("d1", delivered=True), Receipt("d2", delivered=True)]


async def test_whatsapp_inbound_and_signature(whatsapp: FakeWhatsApp) -> None:
    provider = wa_provider(whatsapp)
    payload = whatsapp.inbound_webhook("34666123123", "Hola, quiero info")
    raw, signature = whatsapp.sign(payload)
    assert verify_signature(whatsapp.app_secret, raw, signature)
    assert not verify_signature("other-secret", raw, signature)
    assert not verify_signature(whatsapp.app_secret, raw.replace(b"info", b"INFO"), signature)
    assert not verify_signature(whatsapp.app_secret, raw, None)
    assert not verify_signature(whatsapp.app_secret, raw, signature.removeprefix("sha256="))
    result = provider.parse_webhook(payload)
    [message] = result.inbound
    assert (message.from_address, message.to_address) == ("+34666123123", "+15550783881")
    assert message.content == "Hola, quiero info" and message.provider == "whatsapp-cloud"
    assert message.provider_message_id.startswith("wamid.") and result.receipts == []
