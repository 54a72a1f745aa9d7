"""The sandbox provider: a carrier that needs no account. It accepts every message, reports
DELIVERED after a configurable delay, and fails numbers no handset could receive SMS on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from switchboard.server.core.ids import new_id
from switchboard.server.providers.base import OutboundSms, Receipt, ReceiptSink, SubmitResult
from switchboard.server.sms.phone import sms_incapable_reason


class SandboxProvider:
    name = "sandbox"

    def __init__(self, delivery_delay: float) -> None:
        self._delay = delivery_delay
        self._receipts: ReceiptSink | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    async def start(self, receipts: ReceiptSink) -> None:
        self._receipts = receipts

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._receipts = None

    async def submit(self, message: OutboundSms) -> SubmitResult:
        reason = sms_incapable_reason(message.to)
        if reason is not None:
            return SubmitResult(error=reason, permanent=True)
        self._deliver_later(message.message_id)
        return SubmitResult(provider_message_id=new_id("sbx_"))

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        for message in pending:
            self._deliver_later(message.message_id)

    def _deliver_later(self, message_id: str) -> None:
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            if self._receipts is not None:
                self._receipts(Receipt(message_id=message_id, delivered=True))

        timer = loop.call_later(self._delay, fire)
        self._timers.add(timer)
