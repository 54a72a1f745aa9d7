"""The dev outbox: what sandbox routes "sent", kept in memory for a new user to look at (gRPC
DiagnosticsService.ListOutbox, REST GET /diagnostics/outbox), scoped by org like everything."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime

OUTBOX_SIZE = 1000  # entries kept, all orgs together


@dataclass(frozen=True)
class OutboxEntry:
    org_id: str
    message_id: str
    kind: str
    channel: str
    route: str
    to: str
    sender: str
    subject: str
    content: str
    handed_at: datetime


class Outbox:
    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self._entries: collections.deque[OutboxEntry] = collections.deque(maxlen=size)

    def add(self, entry: OutboxEntry) -> None:
        self._entries.append(entry)

    def recent(self, org_id: str, *, channel: str = "", limit: int = 100) -> list[OutboxEntry]:
        """The org's newest entries first (only `channel`'s when given)."""
        found = []
        for entry in reversed(self._entries):
            if entry.org_id == org_id and (not channel or entry.channel == channel):
                found.append(entry)
                if len(found) >= limit:
                    break
        return found


__all__ = ["OUTBOX_SIZE", "Outbox", "OutboxEntry"]
