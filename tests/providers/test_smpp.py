"""The SMPP provider against the development SMSC (a real subprocess speaking SMPP over TCP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest

from switchboard.server.providers.base import InboundSms, OutboundSms, Receipt
from switchboard.server.providers.smpp import SmppProvider, source_address
from switchboard.server.telephony import gsm
from switchboard.server.telephony.encoding import segment_count
from switchboard.server.telephony.phone import PhoneNumber
from tests.support.smsc import Smsc

SYSTEM_ID, PASSWORD = "switchboard", "secret"


class Sinks:
    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbound: list[InboundSms] = []
        self.fail_next = 0  # how many sink calls raise before one succeeds

    async def on_receipts(self, receipts: Sequence[Receipt]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database unavailable")
        self.receipts.extend(receipts)

    async def on_inbound(self, messages: Sequence[InboundSms]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database unavailable")
        self.inbound.extend(messages)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def provider_for(smsc: Smsc, **overrides: Any) -> SmppProvider:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": SYSTEM_ID,
        "password": PASSWORD,
        "default_source": "Switchbd",
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "early_receipt_ttl": 5.0,
    }
    options.update(overrides)
    return SmppProvider(**options)


def sms(message_id: str, to: str, content: str, sender: str = "", pmid: str = "") -> OutboundSms:
    return OutboundSms(message_id, "org_1", "sms", PhoneNumber(to, "MOBILE"), content, sender, pmid)


@pytest.fixture(scope="session")
def smsc() -> Iterator[Smsc]:
    server = Smsc("--system-id", SYSTEM_ID, "--password", PASSWORD, "--dlr-delay", "0.05")
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def env(smsc: Smsc) -> AsyncIterator[tuple[SmppProvider, Sinks, Smsc]]:
    smsc.post("/reset", {})
    smsc.post("/config", {"dlr_delay": 0.05, "resp_delay": 0, "dlr_before_resp": False})
    sinks = Sinks()
    provider = provider_for(smsc)
    await provider.start(sinks.on_receipts, sinks.on_inbound)
    await until(provider.healthy)
    yield provider, sinks, smsc
    await provider.stop()


Env = tuple[SmppProvider, Sinks, Smsc]


async def test_short_gsm7_message_is_delivered_and_its_receipt_matched(env: Env) -> None:
    provider, sinks, smsc = env
    [result] = await provider.submit_many(
        [sms("m1", "+27821230001", "Hi {you} €5", "+27820000099")]
    )
    assert result.accepted and result.provider_message_id
    await until(lambda: len(sinks.receipts) == 1)
    assert sinks.receipts == [Receipt("m1", delivered=True)]
    [message] = smsc.messages()
    assert message["text"] == "Hi {you} €5" and message["data_coding"] == 0
    assert (message["source"], message["source_ton"], message["source_npi"]) == (
        "27820000099",
        1,
        1,
    )
    assert message["destination"] == "27821230001" and message["registered_delivery"] == 1


async def test_failed_receipt_is_reported_with_the_smsc_error(env: Env) -> None:
    provider, sinks, _ = env
    [result] = await provider.submit_many([sms("m2", "+27821230013", "no handset")])
    assert result.accepted
    await until(lambda: len(sinks.receipts) == 1)
    assert sinks.receipts == [Receipt("m2", delivered=False, error="UNDELIV err:013")]


async def test_long_unicode_message_is_split_and_reassembled_exactly(env: Env) -> None:
    provider, sinks, smsc = env
    text = ("Привет 😀 мир! " * 15)[:200]
    [result] = await provider.submit_many([sms("m3", "+27821230002", text)])
    assert result.provider_message_id is not None
    assert len(result.provider_message_id.split(" ")) == segment_count(text) == 4
    await until(lambda: len(sinks.receipts) == 1)
    assert sinks.receipts == [Receipt("m3", delivered=True)]
    [message] = smsc.messages()
    assert message["text"] == text and message["parts"] == 4 and message["data_coding"] == 8
    assert message["message_ids"] == result.provider_message_id.split(" ")


async def test_long_gsm7_message_keeps_escape_pairs_whole(env: Env) -> None:
    provider, _, smsc = env
    # Extension characters fall exactly on the 153-septet part boundaries.
    text = "a" * 152 + "€" + "b" * 151 + "[]" + "c" * 100 + "|"
    encoded = gsm.encode(text, 1)
    assert len(encoded.parts) == segment_count(text) == 3
    assert all(len(part) - 6 <= 153 and not part.endswith(b"\x1b") for part in encoded.parts)
    [result] = await provider.submit_many([sms("m4", "+27821230003", text)])
    assert result.accepted
    await until(lambda: len(smsc.messages()) == 1)
    [message] = smsc.messages()
    assert message["text"] == text and message["parts"] == 3 and message["data_coding"] == 0


async def test_submit_errors_are_mapped_and_addresses_typed(env: Env) -> None:
    provider, _, smsc = env
    results = await provider.submit_many(
        [
            sms("t1", "+27821230429", "throttled"),
            sms("t2", "+27821230411", "bad destination"),
            sms("t3", "+27821230004", "short code", "12345"),
            sms("t4", "+27821230005", "default source"),
            sms("t5", "+27821230006", "too long alpha", "ABCDEFGHIJKL"),
        ]
    )
    assert not results[0].accepted and results[0].permanent is False
    assert "THROTTLED" in (results[0].error or "")
    assert not results[1].accepted and results[1].permanent is True
    assert results[2].accepted and results[3].accepted
    assert not results[4].accepted and results[4].permanent is True
    sources = {m["text"]: (m["source"], m["source_ton"]) for m in smsc.messages()}
    assert sources == {"short code": ("12345", 3), "default source": ("Switchbd", 5)}
    assert source_address("+27821234567") == ("27821234567", 1, 1)


async def test_receipt_before_submit_response_is_still_matched(env: Env) -> None:
    provider, sinks, smsc = env
    smsc.post("/config", {"dlr_before_resp": True})
    results = await provider.submit_many(
        [sms("e1", "+27821230007", "early"), sms("e2", "+27821230013", "early fail")]
    )
    assert all(r.accepted for r in results)
    await until(lambda: len(sinks.receipts) == 2)
    assert set(sinks.receipts) == {
        Receipt("e1", delivered=True),
        Receipt("e2", delivered=False, error="UNDELIV err:013"),
    }


async def test_resume_matches_receipts_of_submits_before_a_restart(env: Env) -> None:
    provider, sinks, smsc = env
    smsc.post("/config", {"dlr_delay": 0.4})
    messages = [sms("r1", "+27821230008", "before restart"), sms("r2", "+27821230009", "x" * 200)]
    results = await provider.submit_many(messages)
    await provider.stop()  # receipts arrive while nobody is bound: the SMSC keeps them
    assert sinks.receipts == []
    pending = [
        sms(m.message_id, m.to.e164, m.content, pmid=r.provider_message_id or "")
        for m, r in zip(messages, results, strict=True)
    ]
    await asyncio.sleep(0.5)
    again = Sinks()
    restarted = provider_for(smsc)
    restarted.resume(pending)
    await restarted.start(again.on_receipts, again.on_inbound)
    try:
        await until(lambda: len(again.receipts) == 2)
        assert set(again.receipts) == {Receipt("r1", True), Receipt("r2", True)}
    finally:
        await restarted.stop()


async def test_mo_plain_and_concatenated(env: Env) -> None:
    _, sinks, smsc = env
    long_text = "Ответ: да 👍 " * 20
    assert smsc.post("/mo", {"from": "+27825550000", "to": "12345", "text": "STOP"})["parts"] == 1
    assert smsc.post("/mo", {"from": "+27825550000", "to": "12345", "text": long_text})["parts"] > 1
    gsm_long = "Reply with [YES] or {NO} €" * 10
    smsc.post("/mo", {"from": "+27825550001", "to": "+27820000099", "text": gsm_long})
    await until(lambda: len(sinks.inbound) == 3)
    got = {(m.from_address, m.to_address, m.content, m.provider) for m in sinks.inbound}
    assert got == {
        ("+27825550000", "12345", "STOP", "smpp"),
        ("+27825550000", "12345", long_text, "smpp"),
        ("+27825550001", "+27820000099", gsm_long, "smpp"),
    }
    await until(lambda: smsc.stats()["deliver_acked"] >= 2 + 3 + 2)


async def test_failing_sink_gets_an_error_status_and_the_smsc_resends(env: Env) -> None:
    provider, sinks, smsc = env
    sinks.fail_next = 1
    [result] = await provider.submit_many([sms("f1", "+27821230010", "retry me")])
    assert result.accepted
    await until(lambda: len(sinks.receipts) == 1)
    assert sinks.receipts == [Receipt("f1", delivered=True)]
    stats = smsc.stats()
    assert stats["deliver_errors"] == 1 and stats["redeliveries"] == 1
    sinks.fail_next = 1
    smsc.post("/mo", {"from": "+27825550002", "to": "12345", "text": "Привет " * 20})
    await until(lambda: len(sinks.inbound) == 1)
    assert sinks.inbound[0].content == "Привет " * 20
    assert smsc.stats()["deliver_errors"] == 2


async def test_mo_without_inbound_sink_is_refused(smsc: Smsc) -> None:
    smsc.post("/reset", {})
    smsc.post("/config", {"max_redeliveries": 0})
    sinks = Sinks()
    provider = provider_for(smsc)
    await provider.start(sinks.on_receipts)
    try:
        await until(provider.healthy)
        smsc.post("/mo", {"from": "+27825550003", "to": "12345", "text": "hello"})
        await until(lambda: smsc.stats()["deliver_errors"] == 1)
        assert smsc.stats()["deliver_acked"] == 0
    finally:
        smsc.post("/config", {"max_redeliveries": 5})
        await provider.stop()


async def test_window_bounds_outstanding_submits(env: Env) -> None:
    _, sinks, smsc = env
    smsc.post("/config", {"resp_delay": 0.03})
    provider = provider_for(smsc, window=4)
    await provider.start(sinks.on_receipts, sinks.on_inbound)
    try:
        await until(provider.healthy)
        messages = [sms(f"w{i}", f"+2782124{i:04d}", f"window {i}") for i in range(40)]
        results = await provider.submit_many(messages)
        assert all(r.accepted for r in results)
        assert smsc.stats()["max_outstanding"] == 4
    finally:
        await provider.stop()


async def test_submit_timeout_is_transient(env: Env) -> None:
    _, sinks, smsc = env
    smsc.post("/config", {"resp_delay": 0.5})
    provider = provider_for(smsc, submit_timeout=0.1)
    await provider.start(sinks.on_receipts, sinks.on_inbound)
    try:
        await until(provider.healthy)
        [result] = await provider.submit_many([sms("slow", "+27821230011", "slow")])
        assert not result.accepted and result.permanent is False
        assert "submit_sm_resp" in (result.error or "")
    finally:
        await provider.stop()


async def test_bind_with_a_wrong_password_is_refused(smsc: Smsc) -> None:
    smsc.post("/reset", {})
    provider = provider_for(smsc, password="wrong")
    await provider.start(Sinks().on_receipts)
    try:
        await until(lambda: smsc.stats()["bind_failures"] >= 2)  # and it keeps retrying
        assert not provider.healthy()
        [result] = await provider.submit_many([sms("b1", "+27821230012", "x")])
        assert result.permanent is False and "not bound" in (result.error or "")
    finally:
        await provider.stop()


async def test_reconnects_after_the_smsc_restarts() -> None:
    server = Smsc("--dlr-delay", "0.01")
    server.start()
    sinks = Sinks()
    provider = provider_for(server)
    await provider.start(sinks.on_receipts, sinks.on_inbound)
    try:
        await until(provider.healthy)
        server.kill()
        await until(lambda: not provider.healthy())
        [result] = await provider.submit_many([sms("k1", "+27821230014", "down")])
        assert result.permanent is False
        server.start()
        await until(provider.healthy)
        [result] = await provider.submit_many([sms("k2", "+27821230015", "up again")])
        assert result.accepted
        await until(lambda: sinks.receipts == [Receipt("k2", delivered=True)])
    finally:
        await provider.stop()
        server.kill()


@pytest.mark.unit
def test_gsm_codec_round_trips_and_respects_pairs() -> None:
    basic = "@£$¥ Hello\n{[~]}|^€\\ ÄÖÑÜ§¿äöñüà"
    assert gsm.decode_gsm7(gsm.encode_gsm7(basic)) == basic
    assert gsm.encode_gsm7("€") == b"\x1b\x65"
    emoji = "x" * 66 + "😀" + "y" * 10  # the surrogate pair would straddle unit 67
    encoded = gsm.encode(emoji, 300)
    assert encoded.data_coding == 8 and encoded.esm_class == 0x40
    assert encoded.parts[0][:6] == bytes([5, 0, 3, 300 & 0xFF, 2, 1])
    bodies = [gsm.split_udh(part)[1] for part in encoded.parts]
    assert len(bodies[0]) == 132  # 66 units: the emoji moved whole to part 2
    assert "".join(gsm.decode(8, body) for body in bodies) == emoji
    assert gsm.decode(3, "café".encode("latin-1")) == "café"
    with pytest.raises(ValueError, match="too long"):
        gsm.encode("ж" * 67 * 256, 1)
