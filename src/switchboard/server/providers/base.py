"""The provider interface: what the dispatcher needs from any SMS route (sandbox, SMPP, HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutboundSms:
    message_id: str
    org_id: str
    channel: str
    to: str  # E.164
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


ReceiptSink = Callable[[Receipt], None]


class SmsProvider(Protocol):
    name: str

    async def start(self, receipts: ReceiptSink) -> None:
        """Connect; report receipts to `receipts` from now on."""

    async def stop(self) -> None: ...

    async def submit(self, message: OutboundSms) -> SubmitResult: ...

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        """After a restart: messages sent earlier whose receipts have not arrived yet."""
