"""The sandbox provider: a carrier that needs no account. It accepts every message, reports
DELIVERED after a configurable delay, and fails numbers no handset could receive SMS on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from switchboard.server.core.ids import new_id
from switchboard.server.providers.base import (
    InboundSink,
    OutboundSms,
    Receipt,
    ReceiptSink,
    SubmitResult,
)
from switchboard.server.telephony.phone import sms_incapable_reason


class SandboxProvider:
    name = "sandbox"
    sandbox = True  # what it takes shows in the dev outbox

    def __init__(self, delivery_delay: float) -> None:
        self._delay = delivery_delay
        self._receipts: ReceiptSink | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._reporting: set[asyncio.Task[None]] = set()

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        self._receipts = receipts

    def healthy(self) -> bool:
        return True

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._reporting:
            await asyncio.gather(*self._reporting, return_exceptions=True)
        self._receipts = None

    async def submit_many(self, messages: Sequence[OutboundSms]) -> list[SubmitResult]:
        results = []
        delivered = []
        for message in messages:
            reason = sms_incapable_reason(message.to)  # a carrier knows its number plan
            if reason is not None:
                results.append(SubmitResult(error=reason, permanent=True))
            else:
                delivered.append(message.message_id)
                results.append(SubmitResult(provider_message_id=new_id("sbx_")))
        self._deliver_later(delivered)
        return results

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        self._deliver_later([message.message_id for message in pending])

    def _deliver_later(self, message_ids: list[str]) -> None:
        """One timer per batch: the receipts of a batch arrive together, like a carrier's."""
        if not message_ids:
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            if self._receipts is not None:
                receipts = [Receipt(message_id=i, delivered=True) for i in message_ids]
                task = asyncio.create_task(self._receipts(receipts))
                self._reporting.add(task)
                task.add_done_callback(self._reporting.discard)

        timer = loop.call_later(self._delay, fire)
        self._timers.add(timer)
