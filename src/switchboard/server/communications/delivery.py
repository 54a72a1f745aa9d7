"""Channel providers for communications, on the provider layer SMS uses (providers/base.py).

Each channel has one provider with the SMS providers' contract: `submit_many` answers one
`SubmitResult` per message, receipts (`Receipt`) come back through the sink given to `start`.

- `sms`: any `SmsProvider` (the sandbox carrier by default; SMPP/HTTP routes when configured),
  wrapped by `SmsChannel`. Communications get their own provider instance, so the SMS API's
  dispatcher and this one each receive their own receipts.
- `email` and `whatsapp`: `SandboxChannel` until the delivery engine brings SMTP and WhatsApp
  Cloud. The email sandbox fails addresses under the reserved `.invalid` domain (RFC 6761), the
  WhatsApp sandbox numbers that are not mobile; everything else is delivered after a delay.

An email reaches its provider as a complete MIME message (`build_email`): the HTML body, inline
images and the QR code as `multipart/related` parts referenced by `cid:`, and the attachments.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Protocol

from switchboard.server.core.ids import new_id
from switchboard.server.providers.base import (
    OutboundSms,
    Receipt,
    ReceiptSink,
    SmsProvider,
    SubmitResult,
)
from switchboard.server.sms.phone import PhoneNumber

OUTBOX_SIZE = 1000  # recent hand-offs a sandbox keeps for inspection (tests, the run banner)


@dataclass(frozen=True)
class InlinePart:
    """A file of an email: inline (referenced as `cid:<content_id>`) or attached."""

    name: str
    content_type: str
    content: bytes
    content_id: str = ""  # set for inline parts


@dataclass(frozen=True)
class Outbound:
    """One delivery as its provider receives it: real content, never masked."""

    delivery_id: str
    org_id: str
    channel: str
    to: str  # E.164 or email address
    to_type: str  # libphonenumber type of a number; "" for email
    sender: str
    subject: str
    content: str
    recipients: tuple[str, ...] = ()  # email envelope: to, cc and bcc
    mime: bytes = b""  # email: the complete message


@dataclass
class EmailParts:
    sender_name: str
    sender_address: str
    to: str
    cc: Sequence[str]
    reply_to: str
    subject: str
    html: str
    inline: Sequence[InlinePart] = field(default_factory=list)
    attachments: Sequence[InlinePart] = field(default_factory=list)


def cid(name: str) -> str:
    """The Content-ID of an inline part named `name` (templates reference `cid:` + this)."""
    return f"{name}@switchboard"


def build_email(parts: EmailParts) -> bytes:
    message = EmailMessage()
    message["From"] = formataddr((parts.sender_name, parts.sender_address))
    message["To"] = parts.to
    if parts.cc:
        message["Cc"] = ", ".join(parts.cc)
    if parts.reply_to:
        message["Reply-To"] = parts.reply_to
    message["Subject"] = parts.subject
    message["Message-ID"] = make_msgid(domain="switchboard")
    message.set_content(parts.html, subtype="html")
    for part in parts.inline:
        maintype, _, subtype = part.content_type.partition("/")
        message.add_related(
            part.content, maintype, subtype, cid=f"<{part.content_id}>", filename=part.name
        )
    for part in parts.attachments:
        maintype, _, subtype = part.content_type.partition("/")
        message.add_attachment(part.content, maintype, subtype, filename=part.name)
    return message.as_bytes()


class ChannelProvider(Protocol):
    """What the communications dispatcher needs from a channel's provider."""

    name: str = "provider"

    async def start(self, receipts: ReceiptSink) -> None: ...

    async def stop(self) -> None: ...

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]: ...

    def resume(self, delivery_ids: Sequence[tuple[str, str, str]]) -> None:
        """After a restart: (delivery id, org, destination) of hand-offs awaiting receipts."""


class SmsChannel(ChannelProvider):
    """The `sms` channel through an SMS provider (sandbox carrier, SMPP, HTTP gateways)."""

    def __init__(self, provider: SmsProvider, route: str = "communications") -> None:
        self.provider = provider
        self.name = f"sms:{provider.name}"
        self._route = route
        self.outbox: collections.deque[Outbound] = collections.deque(maxlen=OUTBOX_SIZE)

    def _sms(self, message: Outbound) -> OutboundSms:
        return OutboundSms(
            message_id=message.delivery_id,
            org_id=message.org_id,
            channel=self._route,
            to=PhoneNumber(message.to, message.to_type),
            content=message.content,
        )

    async def start(self, receipts: ReceiptSink) -> None:
        await self.provider.start(receipts)

    async def stop(self) -> None:
        await self.provider.stop()

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]:
        self.outbox.extend(messages)
        return await self.provider.submit_many([self._sms(m) for m in messages])

    def resume(self, delivery_ids: Sequence[tuple[str, str, str]]) -> None:
        self.provider.resume(
            [
                OutboundSms(i, org, self._route, PhoneNumber(to, "MOBILE"), "")
                for i, org, to in delivery_ids
            ]
        )


def _email_problem(message: Outbound) -> str | None:
    for address in message.recipients or (message.to,):
        domain = address.rpartition("@")[2].lower()
        if domain == "invalid" or domain.endswith(".invalid"):
            return f"{address} does not exist (mailbox unavailable)"
    return None


def _whatsapp_problem(message: Outbound) -> str | None:
    if message.to_type in ("MOBILE", "FIXED_LINE_OR_MOBILE"):
        return None
    return f"{message.to} is not a mobile number and has no WhatsApp account"


class SandboxChannel(ChannelProvider):
    """A provider that needs no account: accepts, then reports DELIVERED after `delay` seconds;
    refuses what `problem` names (permanently, as a real provider would)."""

    def __init__(self, name: str, delay: float, problem: Callable[[Outbound], str | None]) -> None:
        self.name = name
        self._delay = delay
        self._problem = problem
        self._receipts: ReceiptSink | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._reporting: set[asyncio.Task[None]] = set()
        self.outbox: collections.deque[Outbound] = collections.deque(maxlen=OUTBOX_SIZE)

    @classmethod
    def email(cls, delay: float) -> SandboxChannel:
        return cls("sandbox-email", delay, _email_problem)

    @classmethod
    def whatsapp(cls, delay: float) -> SandboxChannel:
        return cls("sandbox-whatsapp", delay, _whatsapp_problem)

    async def start(self, receipts: ReceiptSink) -> None:
        self._receipts = receipts

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._reporting:
            await asyncio.gather(*self._reporting, return_exceptions=True)
        self._receipts = None

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]:
        results: list[SubmitResult] = []
        accepted: list[str] = []
        for message in messages:
            problem = self._problem(message)
            if problem is not None:
                results.append(SubmitResult(error=problem, permanent=True))
                continue
            self.outbox.append(message)
            accepted.append(message.delivery_id)
            results.append(SubmitResult(provider_message_id=new_id("sbx_")))
        self._deliver_later(accepted)
        return results

    def resume(self, delivery_ids: Sequence[tuple[str, str, str]]) -> None:
        self._deliver_later([i for i, _, _ in delivery_ids])

    def _deliver_later(self, ids: list[str]) -> None:
        if not ids:
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            if self._receipts is not None:
                task = asyncio.create_task(
                    self._receipts([Receipt(message_id=i, delivered=True) for i in ids])
                )
                self._reporting.add(task)
                task.add_done_callback(self._reporting.discard)

        timer = loop.call_later(self._delay, fire)
        self._timers.add(timer)
