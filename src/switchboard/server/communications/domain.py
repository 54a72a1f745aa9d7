"""The communications domain as its servicer reaches it (built by app/compose/communications.py):
its services, its delivery ledger and its providers (delivery routes named after the channels)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from switchboard.server.communications.ledger import CommunicationLedger
from switchboard.server.communications.sealing import Sealer
from switchboard.server.communications.service import CommunicationService
from switchboard.server.communications.short_urls import ShortUrlService
from switchboard.server.core.clock import Clock
from switchboard.server.core.events import EventFeed
from switchboard.server.providers.base import ChannelProvider


@dataclass
class CommunicationsDomain:
    clock: Clock
    feed: EventFeed
    sealer: Sealer
    communications: CommunicationService
    short_urls: ShortUrlService
    ledger: CommunicationLedger
    # Overrides of the delivery routes `sms`, `email`, `whatsapp` (tests); else SWITCHBOARD_ROUTES.
    providers: Mapping[str, ChannelProvider] = field(default_factory=dict)
