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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from html.parser import HTMLParser
from typing import Protocol

from switchboard.server.core.ids import new_id
from switchboard.server.providers.base import (
    InboundSink,
    OutboundSms,
    Receipt,
    ReceiptSink,
    SmsProvider,
    SubmitResult,
)
from switchboard.server.telephony.phone import PhoneNumber

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
    # On `resume` only: what submit_many answered for it, so late receipts still match.
    provider_message_id: str = ""


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


class _TextExtractor(HTMLParser):
    """HTML to readable plain text: blocks become paragraphs, `<br>` a line break, links
    `text (url)`; scripts, styles and the head are dropped."""

    _BLOCKS = frozenset(
        {
            "p",
            "div",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "table",
            "tr",
            "ul",
            "ol",
            "blockquote",
            "pre",
            "hr",
            "section",
            "article",
            "header",
            "footer",
        }
    )
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._hidden = 0
        self._links: list[tuple[str, int]] = []  # (href, position in _out where its text starts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._out.append("\n")
        elif tag in self._BLOCKS:
            self._out.append("\n\n")
        elif tag == "li":
            self._out.append("\n- ")
        elif tag in ("td", "th"):
            self._out.append(" ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self._out)))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._out.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self._out.append("\n\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            text = "".join(self._out[start:]).strip()
            # A link whose text is its address, or that points nowhere useful, stays as is.
            if href and not href.startswith(("#", "cid:")) and href != text:
                self._out.append(f" ({href})" if text else href)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._out.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self._out).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def html_to_text(html: str) -> str:
    """The plain-text alternative of an HTML body, for clients that do not render HTML."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def build_email(parts: EmailParts) -> bytes:
    """multipart/mixed (when there are attachments) of multipart/alternative: text/plain
    derived from the HTML, then multipart/related holding the HTML and its `cid:` images."""
    message = EmailMessage()
    message["From"] = formataddr((parts.sender_name, parts.sender_address))
    message["To"] = parts.to
    if parts.cc:
        message["Cc"] = ", ".join(parts.cc)
    if parts.reply_to:
        message["Reply-To"] = parts.reply_to
    message["Subject"] = parts.subject
    message["Message-ID"] = make_msgid(domain="switchboard")
    message.set_content(html_to_text(parts.html))
    message.add_alternative(parts.html, subtype="html")
    html_part = message.get_body(("html",))
    assert html_part is not None  # added just above
    for part in parts.inline:
        maintype, _, subtype = part.content_type.partition("/")
        html_part.add_related(
            part.content, maintype, subtype, cid=f"<{part.content_id}>", filename=part.name
        )
    for part in parts.attachments:
        maintype, _, subtype = part.content_type.partition("/")
        message.add_attachment(part.content, maintype, subtype, filename=part.name)
    return message.as_bytes()


class ChannelProvider(Protocol):
    """What the communications dispatcher needs from a channel's provider."""

    name: str = "provider"

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        """Report receipts (and, for channels that receive, MO messages) from now on."""

    async def stop(self) -> None: ...

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]: ...

    def resume(self, pending: Sequence[Outbound]) -> None:
        """After a restart: hand-offs awaiting receipts (ids, addresses and provider ids; no
        content)."""

    def healthy(self) -> bool:
        """Whether it can take submits now; the engine fails over or waits when not."""
        ...


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
            sender=message.sender,
        )

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        await self.provider.start(receipts, inbound)

    async def stop(self) -> None:
        await self.provider.stop()

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]:
        self.outbox.extend(messages)
        return await self.provider.submit_many([self._sms(m) for m in messages])

    def resume(self, pending: Sequence[Outbound]) -> None:
        self.provider.resume(
            [
                OutboundSms(
                    m.delivery_id,
                    m.org_id,
                    self._route,
                    PhoneNumber(m.to, m.to_type or "MOBILE"),
                    "",
                    sender=m.sender,
                    provider_message_id=m.provider_message_id,
                )
                for m in pending
            ]
        )

    def healthy(self) -> bool:
        return self.provider.healthy()

    @property
    def sandbox(self) -> bool:
        return bool(getattr(self.provider, "sandbox", False))


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

    sandbox = True  # what it takes shows in the dev outbox

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

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
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

    def resume(self, pending: Sequence[Outbound]) -> None:
        self._deliver_later([m.delivery_id for m in pending])

    def healthy(self) -> bool:
        return True

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
