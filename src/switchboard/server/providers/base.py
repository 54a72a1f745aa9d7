"""The provider interface: what the dispatcher needs from any SMS route (sandbox, SMPP, HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from switchboard.server.sms.phone import PhoneNumber


@dataclass(frozen=True)
class OutboundSms:
    message_id: str
    org_id: str
    channel: str
    to: PhoneNumber
    content: str


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


# Receives receipts in batches and returns once they are durable, so a provider whose peer
# re-sends unacknowledged receipts (SMPP deliver_sm) can acknowledge only then.
ReceiptSink = Callable[[Sequence[Receipt]], Coroutine[Any, Any, None]]


class SmsProvider(Protocol):
    name: str

    async def start(self, receipts: ReceiptSink) -> None:
        """Connect; report receipts to `receipts` from now on."""

    async def stop(self) -> None: ...

    async def submit_many(self, messages: Sequence[OutboundSms]) -> list[SubmitResult]:
        """One result per message, in order. Providers pipeline or window as their protocol
        allows; an exception fails the whole batch as a transient error."""
        ...

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        """After a restart: messages sent earlier whose receipts have not arrived yet."""
