"""The calling domain's services as its servicer reaches them (built by app/compose/calling.py)."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.server.calling.bridges import BridgeService
from switchboard.server.calling.conferences import ConferenceService
from switchboard.server.calling.service import CallService
from switchboard.server.core.events import EventFeed


@dataclass
class CallingDomain:
    calls: CallService
    bridges: BridgeService
    conferences: ConferenceService
    feed: EventFeed
