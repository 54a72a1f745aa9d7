"""Routes: the named providers the delivery engine sends through, from `SWITCHBOARD_ROUTES`.

Every message names its route: the SMS API's channel (`smpp`, `clickatell`, `grandcom`), a
communication's channel (`sms`, `email`, `whatsapp`), or a message request sender type's
`gateway_id` (`sms-default`, `smtp-default`, `whatsapp-cloud`). Each known route is a sandbox
until configured, so a fresh install sends (to the dev outbox) without any account:

    SWITCHBOARD_ROUTES='{
      "smpp":        {"type": "smpp", "host": "smsc.example", "port": 2775,
                      "system_id": "acme", "password": "…"},
      "sms":         {"same_as": "smpp"},
      "sms-default": {"same_as": "smpp"},
      "email":       {"type": "smtp", "host": "mail.example", "port": 587, "tls": "starttls",
                      "username": "…", "password": "…"},
      "smtp-default": {"same_as": "email"}
    }'

`type` is one of sandbox, smpp, clickatell, grandcom, smtp, whatsapp; the other keys are the
provider's constructor parameters (a misspelt one is an error naming it, at start-up), plus
`webhook_secret` and `webhook_verify_token` for providers that call back (delivery/webhooks.py).
`same_as` shares one provider (one SMPP bind, one SMTP pool) between names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from switchboard.server.providers.base import ChannelProvider, SmsProvider
from switchboard.server.providers.channels import SandboxChannel, SmsChannel
from switchboard.server.providers.http_sms import ClickatellProvider, GrandcomProvider
from switchboard.server.providers.sandbox import SandboxProvider
from switchboard.server.providers.smpp import SmppProvider
from switchboard.server.providers.smtp import SmtpProvider
from switchboard.server.providers.whatsapp import WhatsAppCloudProvider

SMS_ROUTES = ("smpp", "clickatell", "grandcom", "sms", "sms-default")
EMAIL_ROUTES = ("email", "smtp-default")
WHATSAPP_ROUTES = ("whatsapp", "whatsapp-cloud")

_SMS_TYPES: dict[str, Callable[..., SmsProvider]] = {
    "smpp": SmppProvider,
    "clickatell": ClickatellProvider,
    "grandcom": GrandcomProvider,
}
_CHANNEL_TYPES: dict[str, Callable[..., ChannelProvider]] = {
    "smtp": SmtpProvider,
    "whatsapp": WhatsAppCloudProvider,
}


WEBHOOK_KEYS = ("webhook_secret", "webhook_verify_token")


class RouteConfigError(ValueError):
    """A route in SWITCHBOARD_ROUTES that cannot be built; the message names it."""


@dataclass(frozen=True)
class WebhookAuth:
    """How a route's provider callbacks authenticate (see delivery/webhooks.py)."""

    secret: str = ""
    verify_token: str = ""


def webhook_auth(configured: Mapping[str, Mapping[str, Any]]) -> dict[str, WebhookAuth]:
    """The routes that take webhooks, and their secrets."""
    return {
        name: WebhookAuth(
            str(spec.get("webhook_secret", "")), str(spec.get("webhook_verify_token", ""))
        )
        for name, spec in configured.items()
        if spec.get("webhook_secret")
    }


def sandbox_routes(delay: float) -> dict[str, ChannelProvider]:
    """The default: one sandbox per channel, shared by every route name of that channel."""
    sms = SmsChannel(SandboxProvider(delay), route="sandbox")
    email = SandboxChannel.email(delay)
    whatsapp = SandboxChannel.whatsapp(delay)
    routes: dict[str, ChannelProvider] = {}
    routes.update(dict.fromkeys(SMS_ROUTES, sms))
    routes.update(dict.fromkeys(EMAIL_ROUTES, email))
    routes.update(dict.fromkeys(WHATSAPP_ROUTES, whatsapp))
    return routes


def build_routes(
    configured: Mapping[str, Mapping[str, Any]], delay: float
) -> dict[str, ChannelProvider]:
    """The sandbox defaults with `configured` routes built over them."""
    routes = sandbox_routes(delay)
    aliases: dict[str, str] = {}
    for name, spec in configured.items():
        if "same_as" in spec:
            if set(spec) != {"same_as"}:
                raise RouteConfigError(f"route {name!r}: same_as takes no other keys")
            aliases[name] = str(spec["same_as"])
            continue
        routes[name] = _build(name, dict(spec), delay)
    for name, target in aliases.items():
        seen = {name}
        while target in aliases:  # chains of same_as resolve to the first real route
            if target in seen:
                raise RouteConfigError(f"route {name!r}: same_as loops through {target!r}")
            seen.add(target)
            target = aliases[target]
        if target not in routes:
            raise RouteConfigError(f"route {name!r}: same_as names unknown route {target!r}")
        routes[name] = routes[target]
    return routes


def _build(name: str, spec: dict[str, Any], delay: float) -> ChannelProvider:
    kind = spec.pop("type", None)
    for key in WEBHOOK_KEYS:  # the webhook layer's, not the provider's
        spec.pop(key, None)
    if kind == "sandbox":
        channel = spec.pop("channel", "sms")
        _no_extra(name, spec)
        if channel == "sms":
            return SmsChannel(SandboxProvider(delay), route=name)
        if channel in ("email", "whatsapp"):
            factory = SandboxChannel.email if channel == "email" else SandboxChannel.whatsapp
            return factory(delay)
        raise RouteConfigError(f"route {name!r}: sandbox channel is sms, email or whatsapp")
    if kind in _SMS_TYPES:
        provider = _construct(name, _SMS_TYPES[kind], spec)
        return SmsChannel(provider, route=name)
    if kind in _CHANNEL_TYPES:
        channel_provider: ChannelProvider = _construct(name, _CHANNEL_TYPES[kind], spec)
        return channel_provider
    known = ", ".join(["sandbox", *_SMS_TYPES, *_CHANNEL_TYPES])
    raise RouteConfigError(f"route {name!r}: type must be one of {known}, not {kind!r}")


def _construct(name: str, factory: Callable[..., Any], params: dict[str, Any]) -> Any:
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise RouteConfigError(f"route {name!r}: unknown parameter(s) {', '.join(unknown)}")
    if "name" in accepted and "name" not in params:
        params["name"] = name
    try:
        return factory(**params)
    except TypeError as exc:  # a required parameter is missing
        raise RouteConfigError(f"route {name!r}: {exc}") from exc


def _no_extra(name: str, spec: Mapping[str, Any]) -> None:
    if spec:
        raise RouteConfigError(f"route {name!r}: unknown parameter(s) {', '.join(sorted(spec))}")


__all__ = [
    "EMAIL_ROUTES",
    "SMS_ROUTES",
    "WHATSAPP_ROUTES",
    "RouteConfigError",
    "WebhookAuth",
    "build_routes",
    "sandbox_routes",
    "webhook_auth",
]
