"""The `email` channel over SMTP (a relay or a provider's submission port) with aiosmtplib.

Each `Outbound` is sent as-is: `mime` is the complete message, `recipients` the envelope (to, cc,
bcc); its provider message id is the message's Message-ID header. A small pool of connections
stays open between batches (a message per SMTP transaction, one connection per worker), so a
batch does not pay a TCP + TLS + AUTH handshake per message.

Outcomes: a 5xx reply is a permanent failure naming the server's reply; 4xx replies, timeouts and
connection failures are transient. Authentication failures are transient too and make the
provider unhealthy: a misconfigured relay should not burn messages.

SMTP has no delivery receipts: once the server answered 250 to the DATA the message is reported
DELIVERED through the receipts sink (after `receipt_delay`, so the dispatcher has recorded the
hand-off as SENT first; it ignores receipts for deliveries that are not SENT yet). Bounces that
arrive later by mail are not seen. For the same reason `resume` reports DELIVERED at once: a
delivery is SENT only after the server accepted it.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import ssl
import time
from collections.abc import Sequence
from email.utils import parseaddr

import aiosmtplib

from switchboard.server.providers.base import (
    InboundSink,
    Outbound,
    Receipt,
    ReceiptSink,
    SubmitResult,
)

log = logging.getLogger(__name__)

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


def _reply(code: int, text: str) -> str:
    return f"{code} {text}".strip()


class SmtpProvider:
    """`ChannelProvider` for email over SMTP.

    `tls`: "none", "starttls" (upgrade on a plain port, e.g. 587) or "implicit" (TLS from the
    first byte, e.g. 465). `pool_size` connections send in parallel; `idle_check` seconds of
    idleness make a connection prove itself with NOOP before it is used again (servers drop
    idle clients, and a send on a dead connection would fail a message for nothing).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: str = "none",
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        pool_size: int = 2,
        envelope_from: str = "",
        validate_certs: bool = True,
        tls_context: ssl.SSLContext | None = None,
        receipt_delay: float = 1.0,
        idle_check: float = 30.0,
        name: str = "smtp",
    ) -> None:
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be none, starttls or implicit, not {tls!r}")
        self.name = name
        self._host = host
        self._port = port
        self._tls = tls
        self._username = username
        self._password = password
        self._timeout = timeout
        self._pool_size = max(1, pool_size)
        self._envelope_from = envelope_from
        self._validate_certs = validate_certs
        self._tls_context = tls_context
        self._receipt_delay = receipt_delay
        self._idle_check = idle_check
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # open connections, last used
        self._receipts: ReceiptSink | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._reporting: set[asyncio.Task[None]] = set()
        self._healthy = True
        self.connections_opened = 0  # for operators and tests: reuse shows as a low count

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        self._receipts = receipts  # email has no inbound here (bounces are not read)

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._reporting:
            await asyncio.gather(*self._reporting, return_exceptions=True)
        idle, self._idle = self._idle, []
        for client, _ in idle:
            await self._close(client, polite=True)
        self._receipts = None

    def healthy(self) -> bool:
        """False after the last attempt could not connect or log in."""
        return self._healthy

    def resume(self, pending: Sequence[Outbound]) -> None:
        self._report_later([m.delivery_id for m in pending])

    async def submit_many(self, messages: Sequence[Outbound]) -> list[SubmitResult]:
        results: list[SubmitResult | None] = [None] * len(messages)
        queue = list(enumerate(messages))
        queue.reverse()  # pop() from the end keeps the order of hand-off

        async def worker() -> None:
            client: aiosmtplib.SMTP | None = None
            try:
                while queue:
                    index, message = queue.pop()
                    if client is None:
                        try:
                            client = await self._acquire()
                        except Exception as exc:
                            # The server is unreachable for the rest of the batch too.
                            failure = self._connect_failure(exc)
                            results[index] = failure
                            while queue:
                                results[queue.pop()[0]] = failure
                            continue
                    results[index], keep = await self._send(client, message)
                    if not keep:
                        await self._close(client, polite=False)
                        client = None
            finally:
                if client is not None:
                    self._idle.append((client, time.monotonic()))

        workers = min(self._pool_size, len(messages))
        await asyncio.gather(*(worker() for _ in range(workers)))
        final = [r or SubmitResult(error="not sent", permanent=False) for r in results]
        self._report_later(
            [m.delivery_id for m, r in zip(messages, final, strict=True) if r.accepted]
        )
        return final

    async def _acquire(self) -> aiosmtplib.SMTP:
        while self._idle:
            client, last_used = self._idle.pop()
            if not client.is_connected:
                continue
            if time.monotonic() - last_used < self._idle_check:
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError):
                await self._close(client, polite=False)
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            use_tls=self._tls == "implicit",
            start_tls=self._tls == "starttls",  # False: no opportunistic upgrade
            validate_certs=self._validate_certs,
            tls_context=self._tls_context,
            username=self._username or None,
            password=self._password or None,
        )
        await client.connect()
        self.connections_opened += 1
        self._healthy = True
        return client

    def _connect_failure(self, exc: Exception) -> SubmitResult:
        self._healthy = False
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            detail = f"{_reply(exc.code, exc.message)}"
        else:
            detail = str(exc) or type(exc).__name__
        log.warning("SMTP connection failed", extra={"provider": self.name, "error": detail})
        return SubmitResult(
            error=f"SMTP server {self._host}:{self._port} unavailable: {detail}", permanent=False
        )

    async def _send(self, client: aiosmtplib.SMTP, message: Outbound) -> tuple[SubmitResult, bool]:
        """The outcome of one transaction, and whether the connection is still usable."""
        headers = _HEADERS.parsebytes(message.mime)
        message_id = str(headers.get("Message-ID", "")).strip()
        sender = self._envelope_from or _address(str(headers.get("From", "")))
        recipients = list(message.recipients or (message.to,))
        try:
            refused, _ = await client.sendmail(sender, recipients, message.mime)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            replies = [
                (r.code, f"{r.recipient}: {_reply(r.code, r.message)}") for r in exc.recipients
            ]
            transient = any(400 <= code < 500 for code, _ in replies)
            error = "; ".join(text for _, text in replies)
            return SubmitResult(error=error, permanent=not transient), True
        except aiosmtplib.SMTPServerDisconnected as exc:
            return SubmitResult(error=f"SMTP connection lost: {exc}", permanent=False), False
        except aiosmtplib.SMTPResponseException as exc:
            reply = _reply(exc.code, exc.message)
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                self._healthy = False
            permanent = 500 <= exc.code < 600 and not isinstance(
                exc, aiosmtplib.SMTPAuthenticationError
            )
            # 421 means the server is closing the connection.
            return SubmitResult(error=reply, permanent=permanent), exc.code != 421
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Timeouts, resets and protocol errors: the connection's state is unknown.
            return SubmitResult(
                error=f"SMTP error: {exc or type(exc).__name__}", permanent=False
            ), False
        primary = refused.get(message.to)
        if primary is not None:
            # Accepted for the other recipients: retrying would send them a duplicate.
            return SubmitResult(
                error=f"{message.to}: {_reply(primary.code, primary.message)}"
            ), True
        return SubmitResult(provider_message_id=message_id), True

    async def _close(self, client: aiosmtplib.SMTP, *, polite: bool) -> None:
        if polite and client.is_connected:
            try:
                await client.quit()
                return
            except (aiosmtplib.SMTPException, OSError):
                pass
        client.close()

    def _report_later(self, ids: list[str]) -> None:
        if not ids:
            return
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            if self._receipts is not None:
                task = asyncio.create_task(
                    self._receipts([Receipt(message_id=i, delivered=True) for i in ids])
                )
                self._reporting.add(task)
                task.add_done_callback(self._reporting.discard)

        timer = asyncio.get_running_loop().call_later(self._receipt_delay, fire)
        self._timers.add(timer)


def _address(header: str) -> str:
    """The bare address of a From header (`Name <a@b>` → `a@b`)."""
    return parseaddr(header)[1]
