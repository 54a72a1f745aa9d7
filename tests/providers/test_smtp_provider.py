"""The SMTP provider against a real SMTP server (aiosmtpd on this loop): what arrives is the
message `build_email` made, byte for byte in its parts; refusals map to permanent or transient
failures as the reply code says; connections are reused across messages and batches."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Sequence
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from switchboard.server.communications.email import EmailParts, InlinePart, build_email, cid
from switchboard.server.providers.base import ChannelProvider, Outbound, Receipt
from switchboard.server.providers.smtp import SmtpProvider
from tests.support.server import free_port
from tests.support.smtp import Recorder, Server, serve

PNG = bytes(range(256)) * 4  # binary content that any text mangling would change
PDF = b"%PDF-1.4\n" + bytes(range(255, -1, -1)) * 8


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"relay", b"s3cret")
    return AuthResult(success=ok, handled=False)  # unhandled: aiosmtpd answers 535


@pytest.fixture
async def smtp() -> AsyncIterator[Server]:
    server = await serve(Recorder())
    yield server
    server.server.close()
    await server.server.wait_closed()


class Sink:
    def __init__(self) -> None:
        self.receipts: list[Receipt] = []

    async def __call__(self, receipts: Sequence[Receipt]) -> None:
        self.receipts.extend(receipts)


def outbound(
    delivery_id: str, to: str, cc: Sequence[str] = (), html: str = "<p>Hi</p>"
) -> Outbound:
    mime = build_email(
        EmailParts(
            sender_name="Yoigo",
            sender_address="no-reply@switchboard.test",
            to=to,
            cc=cc,
            reply_to="",
            subject=f"Message {delivery_id}",
            html=html,
        )
    )
    return Outbound(
        delivery_id=delivery_id,
        org_id="org",
        channel="email",
        to=to,
        to_type="",
        sender="Yoigo",
        subject=f"Message {delivery_id}",
        content=html,
        recipients=(to, *cc),
        mime=mime,
    )


async def _started(port: int, **options: Any) -> tuple[SmtpProvider, Sink]:
    provider = SmtpProvider("127.0.0.1", port, timeout=5, receipt_delay=0.05, **options)
    sink = Sink()
    await provider.start(sink)
    return provider, sink


async def _wait_receipts(sink: Sink, count: int) -> None:
    for _ in range(100):
        if len(sink.receipts) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} receipts, got {sink.receipts}")


async def test_rich_email_arrives_intact(smtp: Server) -> None:
    html = (
        '<h1>Your code</h1><p>Scan <img src="cid:qr@switchboard" alt="QR code"> or '
        '<a href="https://example.com/reset?t=1">reset here</a>.<br>Thanks</p>'
    )
    mime = build_email(
        EmailParts(
            sender_name="Yoigo",
            sender_address="no-reply@switchboard.test",
            to="juan@example.com",
            cc=["boss@example.com"],
            reply_to="help@switchboard.test",
            subject="Reset ✓",
            html=html,
            inline=[InlinePart("qr.png", "image/png", PNG, cid("qr"))],
            attachments=[InlinePart("terms.pdf", "application/pdf", PDF)],
        )
    )
    message = Outbound(
        "d-rich",
        "org",
        "email",
        "juan@example.com",
        "",
        "Yoigo",
        "Reset ✓",
        html,
        recipients=("juan@example.com", "boss@example.com", "hidden@example.com"),
        mime=mime,
    )
    provider, sink = await _started(smtp.port)
    try:
        [result] = await provider.submit_many([message])
        await _wait_receipts(sink, 1)
    finally:
        await provider.stop()

    [(mail_from, rcpt_tos, content, _)] = smtp.recorder.messages
    assert mail_from == "no-reply@switchboard.test"
    assert rcpt_tos == ["juan@example.com", "boss@example.com", "hidden@example.com"]
    received = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    assert result.accepted and result.provider_message_id == received["Message-ID"]
    assert sink.receipts == [Receipt("d-rich", delivered=True)]
    assert received["Subject"] == "Reset ✓" and "Bcc" not in received
    assert received.get_content_type() == "multipart/mixed"
    [alternative, attachment] = received.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.iter_parts()
    assert plain.get_content_type() == "text/plain"
    text = plain.get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert (
        "Your code\n\nScan QR code or reset here (https://example.com/reset?t=1).\nThanks" in text
    )
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.iter_parts()
    assert html_part.get_content_type() == "text/html"
    assert 'src="cid:qr@switchboard"' in html_part.get_content()
    assert image["Content-ID"] == "<qr@switchboard>" and image.get_content_type() == "image/png"
    assert image.get_content() == PNG
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "terms.pdf" and attachment.get_content() == PDF


async def test_refusals_map_to_permanent_and_transient(smtp: Server) -> None:
    smtp.recorder.refuse = {
        "gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected",
        "busy@example.com": "451 4.3.0 Mailbox temporarily unavailable",
    }
    provider, sink = await _started(smtp.port, pool_size=1)
    try:
        results = await provider.submit_many(
            [
                outbound("d-ok", "ok@example.com"),
                outbound("d-gone", "gone@example.com"),
                outbound("d-busy", "busy@example.com"),
                outbound("d-cc", "gone@example.com", cc=["ok@example.com"]),
                outbound("d-after", "ok2@example.com"),
            ]
        )
        await _wait_receipts(sink, 2)
        assert provider.healthy()
    finally:
        await provider.stop()
    ok, gone, busy, cc, after = results
    assert ok.accepted and after.accepted
    assert not gone.accepted and gone.permanent
    assert (
        gone.error is not None
        and "550 5.1.1" in gone.error
        and "Recipient address rejected" in gone.error
    )
    assert (
        not busy.accepted and not busy.permanent and busy.error is not None and "451" in busy.error
    )
    # The cc got it: a retry would send it twice, so the failure for `to` is final.
    assert not cc.accepted and cc.permanent and cc.error is not None and "550" in cc.error
    assert sorted(r.message_id for r in sink.receipts) == ["d-after", "d-ok"]
    assert [m[1] for m in smtp.recorder.messages] == [
        ["ok@example.com"],
        ["ok@example.com"],
        ["ok2@example.com"],
    ]


async def test_server_down_is_transient_and_unhealthy() -> None:
    provider, sink = await _started(free_port())
    try:
        results = await provider.submit_many(
            [outbound("d1", "a@example.com"), outbound("d2", "b@example.com")]
        )
        assert all(not r.accepted and not r.permanent for r in results)
        assert all(r.error is not None and "unavailable" in r.error for r in results)
        assert not provider.healthy()
        await asyncio.sleep(0.1)
        assert sink.receipts == []
    finally:
        await provider.stop()


async def test_recovers_when_the_server_comes_back() -> None:
    port = free_port()
    provider, _ = await _started(port)
    try:
        [down] = await provider.submit_many([outbound("d1", "a@example.com")])
        assert not down.permanent and not provider.healthy()
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(Recorder(), hostname="mx.test"), "127.0.0.1", port
        )
        try:
            [up] = await provider.submit_many([outbound("d1", "a@example.com")])
            assert up.accepted and provider.healthy()
        finally:
            server.close()
            await server.wait_closed()
    finally:
        await provider.stop()


async def test_many_messages_share_pooled_connections(smtp: Server) -> None:
    provider, sink = await _started(smtp.port, pool_size=2)
    channel: ChannelProvider = provider  # what the communications dispatcher takes
    assert channel.name == "smtp"
    try:
        first = await provider.submit_many(
            [outbound(f"a{i}", f"u{i}@example.com") for i in range(20)]
        )
        second = await provider.submit_many(
            [outbound(f"b{i}", f"v{i}@example.com") for i in range(20)]
        )
        await _wait_receipts(sink, 40)
    finally:
        await provider.stop()
    assert all(r.accepted for r in first + second)
    assert len({r.provider_message_id for r in first + second}) == 40
    # Two connections carried all 40 messages of both batches.
    assert provider.connections_opened == 2
    assert len({peer for *_, peer in smtp.recorder.messages}) == 2
    # Every message arrived once (two connections interleave, so the order is free).
    received = sorted(m[1][0] for m in smtp.recorder.messages)
    expected = sorted(
        [f"u{i}@example.com" for i in range(20)] + [f"v{i}@example.com" for i in range(20)]
    )
    assert received == expected


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_login_and_bad_credentials() -> None:
    server = await serve(
        Recorder(), authenticator=_authenticate, auth_require_tls=False, auth_required=True
    )
    try:
        good, _ = await _started(server.port, username="relay", password="s3cret")
        bad, _ = await _started(server.port, username="relay", password="wrong")
        try:
            [sent] = await good.submit_many([outbound("d1", "a@example.com")])
            [refused] = await bad.submit_many([outbound("d2", "b@example.com")])
        finally:
            await good.stop()
            await bad.stop()
        assert sent.accepted and good.healthy()
        # A wrong password is the operator's mistake: the message waits instead of failing.
        assert not refused.accepted and not refused.permanent and not bad.healthy()
        assert refused.error is not None and "535" in refused.error
        assert len(server.recorder.messages) == 1
    finally:
        server.server.close()
        await server.server.wait_closed()


async def test_resume_reports_delivered() -> None:
    provider, sink = await _started(free_port())
    try:
        provider.resume([outbound("d-old", "a@example.com")])
        await _wait_receipts(sink, 1)
    finally:
        await provider.stop()
    assert sink.receipts == [Receipt("d-old", delivered=True)]
