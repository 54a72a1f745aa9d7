"""The `whatsapp` channel through Meta's WhatsApp Cloud API (text messages).

`POST {base}/{version}/{phone_number_id}/messages` with a bearer token, one message per request
(the API has no batch send; a batch goes out `max_concurrency` requests at a time). `to` is
E.164 without the `+`. Each message carries our delivery id as `biz_opaque_callback_data`,
which Meta echoes in status webhooks: receipts match our ids even after a restart, when the
wamid → delivery id map (kept from submits, rebuilt by `resume`) lacks a message.

Errors (`{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`): rate limits
(4, 80007, 130429, 131048, 131056), 5xx and Meta's "try again" codes are transient; an expired
or wrong token or a missing permission (HTTP 401/403, 190, 10, 200-299) is transient and makes
the provider unhealthy; everything else in 4xx (131026 undeliverable, 100/131009 invalid
parameter or number, 131047 outside the 24 h window, ...) is permanent.

Webhooks (`handle_webhook`): statuses delivered/read → delivered receipts, failed → failed
receipt with Meta's error; `sent` is not final and is skipped. `Receipt` cannot say READ, so
reads are reported as delivered receipts and also listed in `WebhookResult.read`. Inbound
messages become `InboundSms` (text bodies; other types as `[type]`), returned to the caller:
the channel interface has no inbound sink.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from switchboard.server.providers.base import (
    InboundSink,
    InboundSms,
    Outbound,
    Receipt,
    ReceiptSink,
    SubmitResult,
)
from switchboard.server.providers.http_sms import retry_after_seconds

log = logging.getLogger(__name__)

RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131048, 131056})
# "Something went wrong" / service unavailable / temporarily unavailable: worth retrying.
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016, 133004})
AUTH_CODES = frozenset({10, 190, *range(200, 300)})


def verify_signature(app_secret: str, body: bytes, header: str | None) -> bool:
    """Whether `X-Hub-Signature-256` (`sha256=<hex>`) is the HMAC-SHA256 of the raw body."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


@dataclass
class WebhookResult:
    receipts: list[Receipt] = field(default_factory=list)
    read: list[str] = field(default_factory=list)  # our delivery ids the recipient has read
    inbound: list[InboundSms] = field(default_factory=list)


class WhatsAppCloudProvider:
    """`ChannelProvider` for WhatsApp Cloud API text messages."""

    def __init__(
        self,
        phone_number_id: str,
        access_token: str,
        *,
        base_url: str = "https://graph.facebook.com",
        api_version: str = "v20.0",
        timeout: float = 10.0,
        max_concurrency: int = 8,
        preview_url: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str = "whatsapp-cloud",
    ) -> None:
        self.name = name
        self._phone_number_id = phone_number_id
        self._token = access_token
        self._base_url = base_url.rstrip("/")
        self._version = api_version
        self._timeout = timeout
        self._concurrency = max(1, max_concurrency)
        self._preview_url = preview_url
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._receipts: ReceiptSink | None = None
        self._inbound_sink: InboundSink | None = None
        self._pending: dict[str, str] = {}  # wamid → delivery id, until a final status
        self._rejected_auth = False
        self._blocked_until = 0.0

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        self._receipts = receipts
        self._inbound_sink = inbound
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=self._timeout,
            headers={"Authorization": f"Bearer {self._token}"},
            transport=self._transport,
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._receipts = None

    def healthy(self) -> bool:
        return not self._rejected_auth and time.monotonic() >= self._blocked_until

    def resume(self, pending: Sequence[Outbound]) -> None:
        """Re-arm the wamid map; webhooks also carry the delivery id (biz_opaque_callback_data)
        for hand-offs made before the provider id was recorded."""
        for message in pending:
            if message.provider_message_id:
                self._pending[message.provider_message_id] = message.delivery_id

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]:
        gate = asyncio.Semaphore(self._concurrency)

        async def one(message: Outbound) -> SubmitResult:
            async with gate:
                return await self._submit(message)

        return list(await asyncio.gather(*(one(m) for m in messages)))

    async def _submit(self, message: Outbound) -> SubmitResult:
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            return SubmitResult(
                error=f"WhatsApp rate limited for another {wait:.1f}s", permanent=False
            )
        if self._client is None:
            raise RuntimeError("WhatsApp provider is not started")
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.to.lstrip("+"),
            "type": "text",
            "text": {"body": message.content, "preview_url": self._preview_url},
            "biz_opaque_callback_data": message.delivery_id,
        }
        path = f"/{self._version}/{self._phone_number_id}/messages"
        try:
            response = await self._client.post(path, json=body)
        except httpx.TimeoutException:
            return SubmitResult(
                error=f"WhatsApp: no answer within {self._timeout}s", permanent=False
            )
        except httpx.HTTPError as exc:
            return SubmitResult(error=f"WhatsApp: {type(exc).__name__}: {exc}", permanent=False)
        payload = _json(response)
        if response.is_success:
            self._rejected_auth = False
            messages = payload.get("messages")
            wamid = ""
            if isinstance(messages, list) and messages and isinstance(messages[0], dict):
                wamid = str(messages[0].get("id") or "")
            if not wamid:
                return SubmitResult(
                    error=f"WhatsApp: answer without id: {response.text[:200]}", permanent=False
                )
            self._pending[wamid] = message.delivery_id
            return SubmitResult(provider_message_id=wamid)
        return self._failure(response, payload)

    def _failure(self, response: httpx.Response, payload: dict[str, Any]) -> SubmitResult:
        error = payload.get("error")
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        code = code if isinstance(code, int) else -1
        details = error.get("error_data", {})
        detail = details.get("details") if isinstance(details, dict) else None
        text = str(error.get("message") or response.reason_phrase)
        described = f"WhatsApp error {code}: {text}" + (f" ({detail})" if detail else "")
        if response.status_code == 429 or code in RATE_LIMIT_CODES:
            delay = retry_after_seconds(response.headers.get("Retry-After"), default=1.0)
            self._blocked_until = time.monotonic() + delay
            return SubmitResult(error=described, permanent=False)
        if response.status_code in (401, 403) or code in AUTH_CODES:
            self._rejected_auth = True
            log.error("WhatsApp rejected the access token: %s", described)
            return SubmitResult(error=described, permanent=False)
        if response.status_code >= 500 or code in TRANSIENT_CODES:
            return SubmitResult(error=described, permanent=False)
        return SubmitResult(error=described, permanent=True)

    def parse_webhook(self, payload: Mapping[str, Any]) -> WebhookResult:
        """A webhook body (`object: whatsapp_business_account`) → receipts, reads, inbound."""
        result = WebhookResult()
        for entry in _list(payload.get("entry")):
            for change in _list(entry.get("changes")):
                value = change.get("value")
                if not isinstance(value, Mapping):
                    continue
                metadata = value.get("metadata")
                ours = ""
                if isinstance(metadata, Mapping):
                    ours = str(metadata.get("display_phone_number") or "")
                for status in _list(value.get("statuses")):
                    self._status(status, result)
                for message in _list(value.get("messages")):
                    result.inbound.append(self._inbound(message, ours))
        return result

    async def handle_webhook(self, payload: Mapping[str, Any]) -> WebhookResult:
        """Parse a webhook and report its receipts through the sink (returns once durable).
        Check the signature with `verify_signature` on the raw body first."""
        result = self.parse_webhook(payload)
        if result.receipts and self._receipts is not None:
            await self._receipts(result.receipts)
        if result.inbound and self._inbound_sink is not None:
            await self._inbound_sink(result.inbound)
        return result

    def _status(self, status: Mapping[str, Any], result: WebhookResult) -> None:
        wamid = str(status.get("id") or "")
        state = status.get("status")
        if state not in ("delivered", "read", "failed"):
            return  # "sent" (and anything new) is not a final answer
        delivery_id = self._pending.pop(wamid, None) or str(
            status.get("biz_opaque_callback_data") or ""
        )
        if not delivery_id:
            log.info("WhatsApp status for unknown message %s", wamid)
            return
        if state == "failed":
            errors = _list(status.get("errors"))
            first = errors[0] if errors else {}
            data = first.get("error_data")
            detail = data.get("details") if isinstance(data, Mapping) else None
            reason = detail or first.get("message") or first.get("title") or "failed"
            error = f"WhatsApp error {first.get('code', '?')}: {reason}"
            result.receipts.append(Receipt(delivery_id, delivered=False, error=error))
            return
        result.receipts.append(Receipt(delivery_id, delivered=True))
        if state == "read":
            result.read.append(delivery_id)

    def _inbound(self, message: Mapping[str, Any], ours: str) -> InboundSms:
        kind = str(message.get("type") or "")
        text = message.get("text")
        if kind == "text" and isinstance(text, Mapping):
            content = str(text.get("body") or "")
        else:
            content = f"[{kind or 'unknown'}]"
        sender = str(message.get("from") or "")
        return InboundSms(
            from_address=f"+{sender}" if sender and not sender.startswith("+") else sender,
            to_address=f"+{ours}" if ours and not ours.startswith("+") else ours,
            content=content,
            provider=self.name,
            provider_message_id=str(message.get("id") or ""),
        )


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
