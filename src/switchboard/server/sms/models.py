"""SMS messages as stored, and their vocabulary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class Channel(StrEnum):
    GRANDCOM = "grandcom"
    CLICKATELL = "clickatell"
    SMPP = "smpp"


class SmsStatus(StrEnum):
    ACCEPTED = "ACCEPTED"  # durable and queued for a provider
    SENT = "SENT"  # handed to the provider, waiting for its receipt
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"

    @property
    def event_type(self) -> str:
        return f"sms.{self.value.lower()}"


SMS_EVENT_TYPES = tuple(s.event_type for s in SmsStatus)


class SmsRecord(SQLModel, table=True):
    __tablename__ = "sms_messages"
    __table_args__ = (
        UniqueConstraint("org_id", "client_message_id", name="uq_sms_org_client_message_id"),
        Index("ix_sms_status_lease", "status", "lease_until"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(index=True, max_length=64)
    client_message_id: str | None = Field(default=None, max_length=64)
    channel: str = Field(max_length=16)
    destination: str = Field(max_length=20)  # E.164
    destination_type: str = Field(max_length=24)  # MOBILE, FIXED_LINE, … (libphonenumber)
    content: str = Field(sa_type=Text)
    segments: int
    status: str = Field(max_length=16)
    error: str | None = Field(default=None, sa_type=Text)
    provider_message_id: str | None = Field(default=None, max_length=128)
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
