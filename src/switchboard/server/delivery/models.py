"""The one delivery queue every API's messages go through, and the persisted daily counts.

A queue row exists from the moment a message may be sent (accepted SMS, a transmitting message
request's message, a communication's channel) until it reaches a final state: QUEUED while it
waits for its due time, a window, a throughput token or a retry; SENT while the provider owes a
receipt. The row is written in the same transaction as the message it stands for, so an accepted
message is never outside the queue, and removed in the same transaction as the final state.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class QueueState(StrEnum):
    HELD = "HELD"  # written with its message, waiting for its request to start transmitting
    QUEUED = "QUEUED"
    SENT = "SENT"


class QueueKind(StrEnum):
    """Which API the message came from: each has a ledger recording its outcomes."""

    SMS = "sms"  # family C: POST /communication/message/sms
    MESSAGE = "message"  # family B: message requests' messages
    COMMUNICATION = "communication"  # family A: a communication's channel delivery


class Priority:
    """Claim order: real-time communications first, then channel priority high/normal/low."""

    REAL_TIME = 3
    HIGH = 2
    NORMAL = 1
    LOW = 0


class DeliveryQueueRecord(SQLModel, table=True):
    __tablename__ = "delivery_queue"
    __table_args__ = (
        Index("ix_delivery_queue_due", "state", "priority", "due_at"),
        Index("ix_delivery_queue_route_state", "route", "state"),
    )

    id: str = Field(primary_key=True, max_length=64)  # the message's own id
    kind: str = Field(max_length=16)
    org_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)  # sms, email, whatsapp
    route: str = Field(max_length=64)  # the provider that sends it (a gateway id)
    fallback_routes: str = Field(default="", max_length=512)  # comma-separated, in order
    sender: str = Field(default="", max_length=320)  # source address (throughput per address)
    destination: str = Field(max_length=320)
    country: str = Field(default="", max_length=4)  # ISO of the destination (windows, limits)
    zones: str = Field(default="", max_length=256)  # IANA zones, comma-separated; "" = UTC
    window: str = Field(default="", max_length=128)  # "class:<id>", "hours:8-20" or "" (any)
    class_id: str = Field(default="", max_length=64)  # sender class (throughput); "" = none
    priority: int = Priority.NORMAL
    state: str = Field(default=QueueState.QUEUED.value, max_length=8)
    due_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    attempts: int = 0
    provider_message_id: str = Field(default="", max_length=1024)  # SMPP: one id per part
    created_at: datetime = Field(sa_type=UtcDateTime)


class DailyCountRecord(SQLModel, table=True):
    """Messages sent per (customer, class, country) and UTC day: `country_daily_throughput`."""

    __tablename__ = "delivery_daily_counts"

    key: str = Field(primary_key=True, max_length=200)
    day: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD
    count: int = 0
