"""Tables of event handlers: the handlers, one delivery per (handler, event), the attempt log,
replay jobs and the dispatcher's cursor in the event log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from switchboard.server.core.db import UtcDateTime

# A cursor in the event log (events.seq): 64-bit on PostgreSQL, SQLite's integer.
SEQ = BigInteger().with_variant(Integer, "sqlite")


class EventHandlerRecord(SQLModel, table=True):
    __tablename__ = "event_handlers"

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(index=True, max_length=64)
    url: str = Field(max_length=2048)
    event_types: str = Field(max_length=2048)  # ",message.*,call.ended," (patterns hold no comma)
    channel_id: str = Field(default="", max_length=64)
    application_id: str = Field(default="", max_length=64)
    state: str = Field(max_length=16)
    disabled_reason: str = Field(default="", max_length=256)
    description: str = Field(default="", max_length=1024)
    secret_sealed: str = Field(sa_type=Text)
    previous_secret_sealed: str = Field(default="", sa_type=Text)
    previous_secret_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # When the current run of failed attempts began (None after a success).
    failing_since: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class EventDeliveryRecord(SQLModel, table=True):
    """One (handler, event): the unit of at-least-once delivery; `msg_<id>` is its webhook-id."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("handler_id", "event_seq", name="uq_event_deliveries_handler_event"),
        Index("ix_event_deliveries_due", "state", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    handler_id: str = Field(max_length=64)
    event_seq: int = Field(sa_column=Column(SEQ, nullable=False))
    event_type: str = Field(max_length=64)
    state: str = Field(max_length=16)  # PENDING, DELIVERED, FAILED (retrying), DEAD
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class DeliveryAttemptRecord(SQLModel, table=True):
    __tablename__ = "event_delivery_attempts"
    __table_args__ = (Index("ix_event_delivery_attempts_handler", "handler_id", "id"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    handler_id: str = Field(max_length=64)
    delivery_id: str = Field(index=True, max_length=64)
    status_code: int = 0
    succeeded: bool = False
    latency_ms: int = 0
    response_excerpt: str = Field(default="", max_length=1024)
    error: str = Field(default="", max_length=1024)
    created_at: datetime = Field(sa_type=UtcDateTime)


class EventReplayRecord(SQLModel, table=True):
    """A replay job: events (after_seq, until_seq] are walked from `position`, re-queuing each
    matching event's delivery for the handler."""

    __tablename__ = "event_replays"

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(index=True, max_length=64)
    handler_id: str = Field(max_length=64)
    state: str = Field(max_length=16)  # RUNNING, COMPLETED, FAILED
    position: int = Field(sa_column=Column(SEQ, nullable=False))
    until_seq: int = Field(sa_column=Column(SEQ, nullable=False))
    since: datetime | None = Field(default=None, sa_type=UtcDateTime)
    until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    only_failed: bool = False
    events_total: int = 0
    events_queued: int = 0
    failure_details: str = Field(default="", max_length=1024)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class DispatchCursorRecord(SQLModel, table=True):
    """How far the dispatcher has matched the event log (one row per deployment)."""

    __tablename__ = "event_dispatch_cursor"

    name: str = Field(primary_key=True, max_length=32)
    seq: int = Field(sa_column=Column(SEQ, nullable=False))
    updated_at: datetime = Field(sa_type=UtcDateTime)
