"""Communications-domain tables: communications, their per-channel deliveries, short URLs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class ChannelName(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    WHATSAPP = "whatsapp"


class DeliveryStatus(StrEnum):
    SCHEDULED = "SCHEDULED"  # waiting for its due time (requested time or delivery window)
    ACCEPTED = "ACCEPTED"  # durable and due: queued for its provider
    SENT = "SENT"  # handed to the provider, waiting for its receipt
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"

    @property
    def event_type(self) -> str:
        return f"communication.{self.value.lower()}"


COMMUNICATION_EVENT_TYPES = tuple(s.event_type for s in DeliveryStatus)


class CommunicationRecord(SQLModel, table=True):
    """One send request. Arguments are stored masked; the real values exist only sealed
    (encrypted) on the deliveries until they were handed to a provider."""

    __tablename__ = "communications"
    __table_args__ = (
        Index("ix_communications_org_email", "org_id", "email_to"),
        Index("ix_communications_org_number", "org_id", "terminating_number"),
        Index("ix_communications_org_external_id", "org_id", "external_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    type: str = Field(max_length=64)
    language: str = Field(max_length=35)  # as requested
    client_id: str = Field(default="", max_length=256)  # the token's audience
    application_id: str = Field(default="", max_length=256)  # the token's subject
    external_id: str = Field(default="", max_length=128)
    scheduled_time: datetime | None = Field(default=None, sa_type=UtcDateTime)  # as requested
    # Recipients, as given and normalised.
    country_code: str = Field(default="", max_length=4)  # of the SMS (else WhatsApp) number
    terminating_number: str = Field(default="", max_length=17)  # national significant number
    sms_phone: str = Field(default="", max_length=20)  # E.164
    whatsapp_phone: str = Field(default="", max_length=20)  # E.164
    email_to: str = Field(default="", max_length=320)  # lower-cased
    email_cc: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    email_bcc: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    email_reply_to: str = Field(default="", max_length=320)
    arguments: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))  # masked
    # [{id, name, content_type, size}] of the stored attachment files.
    attachments: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    qr_token: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class DeliveryRecord(SQLModel, table=True):
    """A communication on one channel: what was rendered (masked, for audit), where it goes,
    and where it stands. `sealed` holds the real rendering, encrypted, until the hand-off."""

    __tablename__ = "communication_deliveries"
    __table_args__ = (
        UniqueConstraint("communication_id", "channel", name="uq_deliveries_channel"),
        Index("ix_deliveries_status_due", "status", "due_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    communication_id: str = Field(foreign_key="communications.id", max_length=64)
    org_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16)
    priority: int = 0  # 1 for types with realTimeRequired: claimed first
    language: str = Field(default="", max_length=35)
    language_fallback: bool = False
    template_id: str = Field(default="", max_length=64)
    template_version: int = 0
    destination: str = Field(default="", max_length=320)
    destination_type: str = Field(default="", max_length=24)  # libphonenumber type for numbers
    sender_info: str = Field(default="", max_length=256)
    subject: str = Field(default="", sa_type=Text)  # masked rendering
    content: str = Field(default="", sa_type=Text)  # masked rendering
    encoding: str = Field(default="", max_length=8)
    segments: int = 0
    sealed: str | None = Field(default=None, sa_type=Text)  # encrypted real rendering
    error: str = Field(default="", sa_type=Text)
    due_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    attempts: int = 0
    provider_message_id: str = Field(default="", max_length=128)
    sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class ShortUrlRecord(SQLModel, table=True):
    __tablename__ = "short_urls"
    __table_args__ = (
        UniqueConstraint("code", name="uq_short_urls_code"),
        Index("ix_short_urls_org_updated", "org_id", "updated_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    code: str = Field(max_length=64)
    long_url: str = Field(sa_type=Text)
    custom_suffix: bool = False
    communication_id: str = Field(default="", max_length=64)
    # A tracked link of one message (message requests' `track_links`): its click converts it.
    message_id: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    click_count: int = 0
    created_agent: str = Field(default="", max_length=256)
    updated_agent: str = Field(default="", max_length=256)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
