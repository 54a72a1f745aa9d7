"""Builds the communications domain: its services, its delivery ledger and its providers
(routes of the delivery engine, named after the channels)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from switchboard.server.app.config import Settings
from switchboard.server.communications.ledger import CommunicationLedger
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
from switchboard.server.providers.base import ChannelProvider


@dataclass
class CommunicationsDomain:
    """Every service of the domain; the servicer reaches them through this."""

    clock: Clock
    feed: EventFeed
    sealer: Sealer
    communications: CommunicationService
    short_urls: ShortUrlService
    ledger: CommunicationLedger
    # Overrides of the delivery routes `sms`, `email`, `whatsapp` (tests); else SWITCHBOARD_ROUTES.
    providers: Mapping[str, ChannelProvider] = field(default_factory=dict)


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
    ledger = CommunicationLedger(events=events, sealer=sealer, email_from=settings.email_from)
    return CommunicationsDomain(
        clock=clock,
        feed=feed,
        sealer=sealer,
        communications=communications,
        short_urls=short_urls,
        ledger=ledger,
        providers=dict(providers or {}),
    )
