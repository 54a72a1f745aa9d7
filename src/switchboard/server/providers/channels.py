"""Channels for the delivery engine over the provider contract (`providers/base.py`).

Each channel has one provider with the SMS providers' contract: `submit_many` answers one
`SubmitResult` per message, receipts (`Receipt`) come back through the sink given to `start`.

- `sms`: any `SmsProvider` (the sandbox carrier by default; SMPP/HTTP routes when configured),
  wrapped by `SmsChannel`. Each API gets its own provider instance, so each route receives its
  own receipts.
- `email` and `whatsapp`: `SandboxChannel` unless SMTP or WhatsApp Cloud is configured. The email
  sandbox fails addresses under the reserved `.invalid` domain (RFC 6761), the WhatsApp sandbox
  numbers that are not mobile; everything else is delivered after a delay.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence

from switchboard.server.core.ids import new_id
from switchboard.server.providers.base import (
    ChannelProvider,
    InboundSink,
    Outbound,
    OutboundSms,
    Receipt,
    ReceiptSink,
    SmsProvider,
    SubmitResult,
)
from switchboard.server.telephony.phone import PhoneNumber

OUTBOX_SIZE = 1000  # recent hand-offs a sandbox keeps for inspection (tests, the run banner)


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
