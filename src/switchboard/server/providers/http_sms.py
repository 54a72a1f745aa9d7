"""SMS over HTTP gateways: Clickatell's Platform API and Grandcom, as `SmsProvider`s.

Both send several messages per request (one `{"messages": [...]}` body per batch of up to
`max_batch`) over one shared `httpx.AsyncClient`, and carry our message id as `clientMessageId`
so answers and receipts can be matched even when the gateway reorders them.

Outcomes: a message the gateway refused (`accepted: false` with an `error`) fails permanently;
HTTP 429 (honouring Retry-After: until then submits fail fast and `healthy()` is False), 5xx,
timeouts and network errors fail the batch transiently; 401/403 fail it transiently and make
the route unhealthy until a request succeeds, so a wrong API key does not burn messages. Other
4xx answers without per-message results fail the batch permanently with the gateway's error.

Receipts come from status callbacks (`handle_callback`, to be called by whatever HTTP endpoint
receives them) or, where no callback URL is reachable, from polling each message's status every
`poll_interval` seconds. Receipts are matched through a map of gateway id → our id, filled by
submits and rebuilt by `resume` from `OutboundSms.provider_message_id`; a message leaves the map
on its final status.

Clickatell (https://docs.clickatell.com, Platform "One API"): `POST {base}/messages` with
`Authorization: <apiKey>`; answer `{"messages": [{"apiMessageId", "accepted", "to", "error"}],
"error"}`; status callback JSON `{"messageId", "clientMessageId", "status", "statusCode",
"statusDescription", ...}`; status query `GET {base}/messages/{apiMessageId}`; inbound (MO)
callback `{"messageId", "fromNumber", "toNumber", "text", ...}`.

Grandcom publishes no spec. It is modelled on the shapes our SMS API exposes for it (seed 003):
`POST {base}/messages` with `Authorization: Bearer <apiKey>` and `{"messages": [GrandcomMessage
{channel, to, content, clientMessageId}]}`; answer `GrandcomMsgResponse` `{"messages":
[GrandcomResponseMsg {apiMessageId, accepted, to, error, hasError, msg: GrandcomMessage}],
"error"}`. Status, by callback or `GET {base}/messages/{apiMessageId}`, is `{"apiMessageId",
"clientMessageId", "status", "error"}` (or a list of them) with status one of QUEUED, SENT
(pending), DELIVERED (delivered), FAILED, REJECTED, EXPIRED (failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from switchboard.server.providers.base import (
    InboundSink,
    InboundSms,
    OutboundSms,
    Receipt,
    ReceiptSink,
    SubmitResult,
)

log = logging.getLogger(__name__)

Json = dict[str, Any]


@dataclass(frozen=True)
class Status:
    """One status report of a gateway, not yet matched to our id."""

    api_message_id: str
    client_message_id: str
    final: bool
    delivered: bool
    error: str | None = None


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


class HttpSmsProvider(ABC):
    """What Clickatell and Grandcom share; subclasses describe their wire format."""

    name = "http"
    auth_scheme = ""  # prefix of the Authorization header's value

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_batch: int = 100,
        poll_interval: float = 0.0,
        channel: str = "sms",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`poll_interval` 0 relies on callbacks only; `transport` is for custom TLS/proxies."""
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._max_batch = max(1, max_batch)
        self._poll_interval = poll_interval
        self._channel = channel
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._receipts: ReceiptSink | None = None
        self._inbound: InboundSink | None = None
        self._pending: dict[str, str] = {}  # gateway id → our message id, until final
        self._rejected_auth = False
        self._blocked_until = 0.0  # monotonic time a 429's Retry-After ends
        self._poller: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        self._receipts = receipts
        self._inbound = inbound
        authorization = f"{self.auth_scheme} {self._api_key}".strip()
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=self._timeout,
            headers={"Authorization": authorization, "Accept": "application/json"},
            transport=self._transport,
        )
        if self._poll_interval > 0:
            self._poller = asyncio.create_task(self._poll_forever(), name=f"{self.name}-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._receipts = None
        self._inbound = None

    def healthy(self) -> bool:
        return not self._rejected_auth and time.monotonic() >= self._blocked_until

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        for message in pending:
            if message.provider_message_id:
                self._pending[message.provider_message_id] = message.message_id

    @property
    def awaiting_receipts(self) -> int:
        return len(self._pending)

    # -- submitting -----------------------------------------------------------------------

    async def submit_many(self, messages: Sequence[OutboundSms]) -> list[SubmitResult]:
        results: list[SubmitResult] = []
        for start in range(0, len(messages), self._max_batch):
            results.extend(await self._submit_batch(messages[start : start + self._max_batch]))
        return results

    async def _submit_batch(self, batch: Sequence[OutboundSms]) -> list[SubmitResult]:
        def all_fail(error: str, permanent: bool = False) -> list[SubmitResult]:
            return [SubmitResult(error=error, permanent=permanent)] * len(batch)

        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            return all_fail(f"{self.name}: rate limited for another {wait:.1f}s")
        client = self._require_client()
        body = {"messages": [self.message_body(m) for m in batch]}
        try:
            response = await client.post("/messages", json=body)
        except httpx.TimeoutException:
            return all_fail(f"{self.name}: no answer within {self._timeout}s")
        except httpx.HTTPError as exc:
            return all_fail(f"{self.name}: {type(exc).__name__}: {exc}")
        payload = _json(response)
        error = str(payload.get("error") or "") or response.reason_phrase
        if response.status_code in (401, 403):
            self._rejected_auth = True
            log.error("%s rejected the API key: %s", self.name, error)
            return all_fail(f"{self.name}: HTTP {response.status_code} {error}")
        if response.status_code == 429:
            delay = retry_after_seconds(response.headers.get("Retry-After"))
            self._blocked_until = time.monotonic() + delay
            return all_fail(f"{self.name}: rate limited (HTTP 429), retry after {delay:.0f}s")
        if response.status_code >= 500:
            return all_fail(f"{self.name}: HTTP {response.status_code} {error}")
        self._rejected_auth = False
        answers = payload.get("messages")
        if not isinstance(answers, list) or not answers:
            if response.is_success:
                return all_fail(f"{self.name}: answer without messages: {response.text[:200]}")
            return all_fail(f"{self.name}: HTTP {response.status_code} {error}", permanent=True)
        return self._match(batch, [a for a in answers if isinstance(a, dict)])

    def _match(self, batch: Sequence[OutboundSms], answers: list[Json]) -> list[SubmitResult]:
        """Pair answers with messages by clientMessageId, else by position."""
        by_client = {self.answer_client_id(a): a for a in answers if self.answer_client_id(a)}
        results: list[SubmitResult] = []
        for index, message in enumerate(batch):
            answer = by_client.get(message.message_id)
            if answer is None and not by_client and index < len(answers):
                answer = answers[index]
            if answer is None:
                results.append(
                    SubmitResult(error=f"{self.name}: no answer for this message", permanent=False)
                )
                continue
            api_id = str(answer.get("apiMessageId") or "")
            refused = self.answer_error(answer)
            if refused is not None or not api_id:
                results.append(SubmitResult(error=refused or "refused without an id"))
                continue
            self._pending[api_id] = message.message_id
            results.append(SubmitResult(provider_message_id=api_id))
        return results

    # -- receipts ---------------------------------------------------------------------------

    async def handle_callback(self, payload: Mapping[str, Any] | Sequence[Any]) -> None:
        """A status callback's JSON body → receipts through the sink (returns once durable)."""
        items = payload if isinstance(payload, Sequence) else [payload]
        statuses = [s for item in items if isinstance(item, Mapping) for s in self.statuses(item)]
        await self._report(statuses)

    async def _report(self, statuses: Sequence[Status]) -> None:
        receipts: list[Receipt] = []
        for status in statuses:
            if not status.final:
                continue
            message_id = self._pending.pop(status.api_message_id, None) or status.client_message_id
            if not message_id:
                log.info("%s receipt for unknown message %s", self.name, status.api_message_id)
                continue
            receipts.append(Receipt(message_id, status.delivered, status.error))
        if receipts and self._receipts is not None:
            await self._receipts(receipts)

    async def poll_once(self) -> None:
        """Ask for the status of every message still awaiting its receipt."""
        client = self._require_client()
        gate = asyncio.Semaphore(8)

        async def one(api_id: str) -> list[Status]:
            async with gate:
                try:
                    response = await client.get(f"/messages/{api_id}")
                except httpx.HTTPError as exc:
                    log.warning("%s status query failed: %r", self.name, exc)
                    return []
            if response.status_code != 200:
                return []
            return self.statuses({"apiMessageId": api_id, **_json(response)})

        found = await asyncio.gather(*(one(i) for i in list(self._pending)))
        await self._report([s for statuses in found for s in statuses])

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            if not self._pending or not self.healthy():
                continue
            try:
                await self.poll_once()
            except Exception:
                log.exception("%s status polling failed", self.name)

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"{self.name} provider is not started")
        return self._client

    # -- wire format: overridden per gateway -------------------------------------------------

    def message_body(self, message: OutboundSms) -> Json:
        body: Json = {
            "channel": self._channel,
            "to": message.to.e164.lstrip("+"),
            "content": message.content,
            "clientMessageId": message.message_id,
        }
        if message.sender:
            body["from"] = message.sender
        return body

    def answer_client_id(self, answer: Json) -> str:
        return str(answer.get("clientMessageId") or "")

    def answer_error(self, answer: Json) -> str | None:
        if answer.get("accepted") is True and not answer.get("error"):
            return None
        return str(answer.get("error") or "refused by the gateway")

    @abstractmethod
    def statuses(self, item: Mapping[str, Any]) -> list[Status]:
        """The delivery statuses one callback or status answer of this gateway carries."""


# Clickatell's message status codes (Platform API), by whether they are final and delivered.
_CLICKATELL_DELIVERED = {"RECEIVED_BY_RECIPIENT": 4}
_CLICKATELL_FAILED = {
    "MESSAGE_UNKNOWN": 1,
    "ERROR_WITH_MESSAGE": 5,
    "USER_CANCELLED": 6,
    "ERROR_DELIVERING": 7,
    "ROUTING_ERROR": 9,
    "EXPIRED": 10,
    "OUT_OF_CREDIT": 12,
    "MAX_MT_EXCEEDED": 14,
}
_CLICKATELL_CODES = {
    code: name for name, code in (_CLICKATELL_DELIVERED | _CLICKATELL_FAILED).items()
}


class ClickatellProvider(HttpSmsProvider):
    name = "clickatell"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://platform.clickatell.com",
        timeout: float = 10.0,
        max_batch: int = 100,
        poll_interval: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_batch=max_batch,
            poll_interval=poll_interval,
            transport=transport,
        )

    def answer_client_id(self, answer: Json) -> str:
        # Clickatell does not echo clientMessageId in the submit answer: match by position.
        return ""

    def statuses(self, item: Mapping[str, Any]) -> list[Status]:
        api_id = str(item.get("messageId") or item.get("apiMessageId") or "")
        if not api_id:
            return []
        name = str(item.get("status") or "").upper()
        code = item.get("statusCode")
        if not name and isinstance(code, int | str) and str(code).isdigit():
            name = _CLICKATELL_CODES.get(int(code), "")
        delivered = name in _CLICKATELL_DELIVERED
        failed = name in _CLICKATELL_FAILED
        error = None
        if failed:
            error = str(item.get("statusDescription") or name.replace("_", " ").lower())
        client_id = str(item.get("clientMessageId") or "")
        return [Status(api_id, client_id, delivered or failed, delivered, error)]

    async def handle_inbound(self, payload: Mapping[str, Any]) -> None:
        """A Clickatell MO callback (`fromNumber`, `toNumber`, `text`) → the inbound sink."""
        sender = str(payload.get("fromNumber") or payload.get("from") or "")
        if not sender or self._inbound is None:
            return
        message = InboundSms(
            from_address=sender if sender.startswith("+") else f"+{sender}",
            to_address=str(payload.get("toNumber") or payload.get("to") or ""),
            content=str(payload.get("text") or payload.get("content") or ""),
            provider=self.name,
            provider_message_id=str(payload.get("messageId") or ""),
        )
        await self._inbound([message])


_GRANDCOM_DELIVERED = frozenset({"DELIVERED"})
_GRANDCOM_FAILED = frozenset({"FAILED", "REJECTED", "EXPIRED", "UNDELIVERABLE"})


class GrandcomProvider(HttpSmsProvider):
    name = "grandcom"
    auth_scheme = "Bearer"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_batch: int = 100,
        poll_interval: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_batch=max_batch,
            poll_interval=poll_interval,
            transport=transport,
        )

    def answer_client_id(self, answer: Json) -> str:
        msg = answer.get("msg")
        return str(msg.get("clientMessageId") or "") if isinstance(msg, dict) else ""

    def answer_error(self, answer: Json) -> str | None:
        if (
            answer.get("accepted") is True
            and not answer.get("hasError")
            and not answer.get("error")
        ):
            return None
        return str(answer.get("error") or "refused by the gateway")

    def statuses(self, item: Mapping[str, Any]) -> list[Status]:
        nested = item.get("messages")
        if isinstance(nested, list):
            return [s for n in nested if isinstance(n, Mapping) for s in self.statuses(n)]
        api_id = str(item.get("apiMessageId") or "")
        if not api_id:
            return []
        name = str(item.get("status") or "").upper()
        delivered = name in _GRANDCOM_DELIVERED
        failed = name in _GRANDCOM_FAILED
        error = str(item.get("error") or name.lower()) if failed else None
        client_id = str(item.get("clientMessageId") or "")
        return [Status(api_id, client_id, delivered or failed, delivered, error)]


def _json(response: httpx.Response) -> Json:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
