"""The provider interface: what the dispatcher needs from any SMS route (sandbox, SMPP, HTTP).

A provider submits, reports receipts for what it accepted (matched back to our message ids,
however many segments or provider ids a message took), and hands over inbound (MO) messages.
Both sinks return once what they were given is durable, so a provider whose peer re-sends
unacknowledged PDUs (SMPP deliver_sm) acknowledges only then.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from switchboard.server.telephony.phone import PhoneNumber


@dataclass(frozen=True)
class OutboundSms:
    message_id: str
    org_id: str
    channel: str
    to: PhoneNumber
    content: str
    sender: str = ""  # source address: E.164 long code, short code or alphanumeric; "" = default
    # On `resume` only: what submit_many answered for this message, so receipts still match.
    provider_message_id: str = ""


@dataclass(frozen=True)
class SubmitResult:
    """A provider's answer to one submit. `error` with `permanent` False is worth retrying."""

    provider_message_id: str | None = None
    error: str | None = None
    permanent: bool = True

    @property
    def accepted(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Receipt:
    """A delivery report for a message the provider accepted."""

    message_id: str
    delivered: bool
    error: str | None = None


@dataclass(frozen=True)
class InboundSms:
    """A mobile-originated message as a provider received it (reassembled if it was split)."""

    from_address: str  # E.164 where the number allows, else as received
    to_address: str  # our address it was sent to: long code, short code
    content: str
    provider: str  # the provider's name
    provider_message_id: str = ""


# Receive receipts / inbound messages in batches and return once they are durable.
ReceiptSink = Callable[[Sequence[Receipt]], Coroutine[Any, Any, None]]
InboundSink = Callable[[Sequence[InboundSms]], Coroutine[Any, Any, None]]


class SmsProvider(Protocol):
    name: str

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        """Connect; report receipts to `receipts` and MO messages to `inbound` from now on
        (a provider without an inbound sink refuses or drops MO as its protocol allows)."""

    async def stop(self) -> None: ...

    async def submit_many(self, messages: Sequence[OutboundSms]) -> list[SubmitResult]:
        """One result per message, in order. Providers pipeline or window as their protocol
        allows; an exception fails the whole batch as a transient error."""
        ...

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        """After a restart: messages sent earlier whose receipts have not arrived yet."""

    def healthy(self) -> bool:
        """Whether the route can take submits now (bound, not rate-limited into a stall);
        the dispatcher fails over to another eligible route when it cannot."""
        ...


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


class ChannelProvider(Protocol):
    """What the delivery engine needs from a channel's provider (SMS, email, WhatsApp)."""

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
