"""Builds the communications domain: its services, its dispatcher and its providers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from switchboard.server.app.config import Settings
from switchboard.server.communications.delivery import ChannelProvider, SandboxChannel, SmsChannel
from switchboard.server.communications.dispatcher import CommunicationDispatcher
from switchboard.server.communications.models import ChannelName
from switchboard.server.communications.sealing import Sealer
from switchboard.server.communications.service import (
    CommunicationService,
    ConsentSource,
    Languages,
    TemplateSource,
    TypeSource,
)
from switchboard.server.communications.short_urls import ShortUrlService
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventFeed, EventLog
from switchboard.server.providers.base import SmsProvider
from switchboard.server.providers.sandbox import SandboxProvider


@dataclass
class CommunicationsDomain:
    """Every service of the domain; the servicer reaches them through this."""

    clock: Clock
    feed: EventFeed
    sealer: Sealer
    communications: CommunicationService
    short_urls: ShortUrlService
    dispatcher: CommunicationDispatcher
    providers: Mapping[str, ChannelProvider] = field(default_factory=dict)

    async def start(self) -> None:
        await self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()


def default_providers(
    settings: Settings, sms: SmsProvider | None = None
) -> dict[str, ChannelProvider]:
    """Sandbox providers on every channel. SMS uses an `SmsProvider` of its own (its receipts
    come back to this domain's dispatcher, not to the SMS API's)."""
    delay = settings.sandbox_delivery_delay
    return {
        ChannelName.SMS.value: SmsChannel(sms or SandboxProvider(delay)),
        ChannelName.EMAIL.value: SandboxChannel.email(delay),
        ChannelName.WHATSAPP.value: SandboxChannel.whatsapp(delay),
    }


def build_communications_domain(
    *,
    db: Database,
    events: EventLog,
    feed: EventFeed,
    bus: EventBus,
    clock: Clock,
    settings: Settings,
    templates: TemplateSource,
    types: TypeSource,
    consent: ConsentSource,
    providers: Mapping[str, ChannelProvider] | None = None,
) -> CommunicationsDomain:
    secret = (
        settings.communications_secret.get_secret_value()
        if settings.communications_secret is not None
        else settings.resolved_jwt_secret()
    )
    sealer = Sealer(secret, settings.qr_token_ttl_seconds)
    short_urls = ShortUrlService(
        db=db, events=events, clock=clock, base_url=settings.public_base_url
    )
    communications = CommunicationService(
        db=db,
        events=events,
        clock=clock,
        templates=templates,
        types=types,
        consent=consent,
        short_urls=short_urls,
        sealer=sealer,
        languages=Languages(settings.default_language, dict(settings.org_default_languages)),
        default_region=settings.sms_default_region,
        shorten_links=settings.communications_shorten_links,
    )
    providers = providers if providers is not None else default_providers(settings)
    dispatcher = CommunicationDispatcher(
        db=db,
        events=events,
        bus=bus,
        clock=clock,
        sealer=sealer,
        providers=providers,
        email_from=settings.email_from,
        poll_seconds=settings.dispatcher_poll_seconds,
        max_attempts=settings.dispatcher_max_attempts,
        retry_base_seconds=settings.dispatcher_retry_base_seconds,
    )
    return CommunicationsDomain(
        clock=clock,
        feed=feed,
        sealer=sealer,
        communications=communications,
        short_urls=short_urls,
        dispatcher=dispatcher,
        providers=providers,
    )
