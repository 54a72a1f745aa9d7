"""Provider callbacks (`POST /webhooks/{route}`): receipts, read receipts and inbound messages
that HTTP providers post rather than answer in-band.

The endpoint is public (providers carry no bearer token), so each call must prove it comes from
the provider configured on the route: WhatsApp Cloud signs the raw body (X-Hub-Signature-256,
HMAC-SHA256 with the app secret); Clickatell and Grandcom cannot sign, so their callback URL
carries the route's secret as `?token=`. A route without a `webhook_secret` takes no webhooks.
What a call carries goes through the provider (matching its ids to ours) into the engine's sinks,
and the call is answered only once that is stored, so a provider retries what failed.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from switchboard.server.core.errors import InvalidArgument, NotFound, Unauthenticated
from switchboard.server.delivery.routes import WebhookAuth
from switchboard.server.providers.base import ChannelProvider
from switchboard.server.providers.channels import SmsChannel
from switchboard.server.providers.http_sms import ClickatellProvider, HttpSmsProvider
from switchboard.server.providers.whatsapp import WhatsAppCloudProvider, verify_signature

log = logging.getLogger("switchboard.delivery.webhooks")

ReadSink = Callable[[Sequence[str]], Awaitable[None]]  # message ids the recipient has read


class Webhooks:
    def __init__(
        self,
        routes: Mapping[str, ChannelProvider],
        auth: Mapping[str, WebhookAuth],
        on_read: ReadSink | None = None,
    ) -> None:
        self._routes = routes
        self._auth = auth
        self.on_read = on_read

    def _provider(self, route: str) -> tuple[Any, WebhookAuth]:
        auth = self._auth.get(route)
        channel = self._routes.get(route)
        if auth is None or channel is None:
            raise NotFound(f"route {route!r} takes no webhooks")
        provider = channel.provider if isinstance(channel, SmsChannel) else channel
        return provider, auth

    def verify(self, route: str, mode: str, token: str, challenge: str) -> str:
        """WhatsApp's subscription check: the challenge, when the verify token matches."""
        _, auth = self._provider(route)
        expected = auth.verify_token
        if mode != "subscribe" or not expected or not hmac.compare_digest(token, expected):
            raise Unauthenticated("the webhook verify token does not match")
        return challenge

    async def receive(
        self, route: str, body: bytes, headers: Mapping[str, str], token: str
    ) -> None:
        provider, auth = self._provider(route)
        if isinstance(provider, WhatsAppCloudProvider):
            if not verify_signature(auth.secret, body, headers.get("x-hub-signature-256")):
                raise Unauthenticated("the webhook signature does not match")
        elif isinstance(provider, HttpSmsProvider):
            if not hmac.compare_digest(token.encode(), auth.secret.encode()):
                raise Unauthenticated("the webhook token does not match")
        else:
            raise NotFound(f"route {route!r} takes no webhooks")
        try:
            payload = json.loads(body or b"null")
        except ValueError as exc:
            raise InvalidArgument(f"the webhook body is not JSON: {exc}") from exc
        if isinstance(provider, WhatsAppCloudProvider):
            if not isinstance(payload, Mapping):
                raise InvalidArgument("a WhatsApp webhook body is a JSON object")
            result = await provider.handle_webhook(payload)
            if result.read and self.on_read is not None:
                await self.on_read(result.read)
            return
        if isinstance(provider, ClickatellProvider) and _is_inbound(payload):
            await provider.handle_inbound(payload)
            return
        if not isinstance(payload, (Mapping, list)):
            raise InvalidArgument("a status callback body is a JSON object or array")
        await provider.handle_callback(payload)


def _is_inbound(payload: Any) -> bool:
    """Clickatell posts MO messages (fromNumber, text) to the same kind of URL as statuses."""
    return isinstance(payload, Mapping) and "text" in payload and "fromNumber" in payload


__all__ = ["ReadSink", "Webhooks"]
