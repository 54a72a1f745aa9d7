"""The pieces every domain shares, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.server.attachments.store import AttachmentStore
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventFeed, EventLog
from switchboard.server.core.writer import Writer


@dataclass(frozen=True)
class Core:
    db: Database
    clock: Clock
    bus: EventBus
    events: EventLog
    feed: EventFeed
    writer: Writer
    store: AttachmentStore  # uploaded files: contact imports, message attachments, call audio
