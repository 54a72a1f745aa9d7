"""Builds the communications domain: its services, its delivery ledger and its providers."""

from __future__ import annotations

from collections.abc import Mapping

from switchboard.server.app.compose.core import Core
from switchboard.server.app.config import Settings
from switchboard.server.communications.domain import CommunicationsDomain
from switchboard.server.communications.ledger import CommunicationLedger
from switchboard.server.communications.sealing import Sealer
from switchboard.server.communications.service import (
    CommunicationService,
    ConsentSource,
    Languages,
    TemplateSource,
    TypeSource,
)
from switchboard.server.communications.short_urls import MessageClick, ShortUrlService
from switchboard.server.providers.base import ChannelProvider


def build_communications(
    core: Core,
    settings: Settings,
    *,
    templates: TemplateSource,
    types: TypeSource,
    consent: ConsentSource,
    on_message_click: MessageClick | None = None,
    providers: Mapping[str, ChannelProvider] | None = None,
) -> CommunicationsDomain:
    db, events, clock = core.db, core.events, core.clock
    sealer = Sealer(settings.sealing_secret(), settings.qr_token_ttl_seconds)
    short_urls = ShortUrlService(
        db=db,
        events=events,
        clock=clock,
        base_url=settings.public_base_url,
        on_message_click=on_message_click,
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
    return CommunicationsDomain(
        clock=clock,
        feed=core.feed,
        sealer=sealer,
        communications=communications,
        short_urls=short_urls,
        ledger=CommunicationLedger(events=events, sealer=sealer, email_from=settings.email_from),
        providers=dict(providers or {}),
    )
