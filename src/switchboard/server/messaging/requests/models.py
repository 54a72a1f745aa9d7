"""Tables of the requests area: message requests and their messages (one per recipient, MT,
or one per received message, MO), with the enums their state columns hold.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, false
from sqlmodel import Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class Direction(StrEnum):
    MT = "MT"
    MO = "MO"


class MessageState(StrEnum):
    CREATED = "CREATED"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    READ = "READ"
    CONVERTED = "CONVERTED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    SCHEDULED = "SCHEDULED"
    TEST = "TEST"
    PAUSED = "PAUSED"
    CANCELED = "CANCELED"
    DELETED = "DELETED"
    RECEIVED = "RECEIVED"
    PROCESSED = "PROCESSED"


class FailureCode(StrEnum):
    INVALID_RECIPIENT = "INVALID_RECIPIENT"
    NO_CONSENT = "NO_CONSENT"
    OTHER = "OTHER"


class MessageRecord(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        # one message per recipient address of a request: a resumed fan-out never doubles one
        Index("ux_messages_request_to", "message_request_id", "to_address", unique=True),
        Index("ix_messages_request_state", "message_request_id", "state"),
        Index("ix_messages_org_id", "org_id", "id"),
        Index("ix_messages_dispatch", "state", "lease_until"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    message_request_id: str | None = Field(default=None, max_length=64)
    external_transaction_ids: str = Field(default="", max_length=1024)
    external_message_request_id: str = Field(default="", max_length=128)
    conversation_id: str = Field(default="", max_length=128)
    campaign_id: str = Field(default="", max_length=128)
    direction: str = Field(max_length=8)
    customer_sender_id: str = Field(default="", max_length=64)
    from_address: str = Field(default="", max_length=320)
    to_address: str = Field(max_length=320)
    state: str = Field(max_length=16)
    failure_code: str = Field(default="", max_length=32)
    failure_details: str = Field(default="", max_length=1024)
    subject: str = Field(default="", max_length=256)
    body: str = Field(default="", max_length=8192)
    sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    converted_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    conversion_info_source: str = Field(default="", max_length=128)
    reply_to: str = Field(default="", max_length=64)
    attachments: str = Field(default="", max_length=2048)  # comma-separated ids
    scheduled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    type: str = Field(default="SMS", max_length=8)
    message_delivery_provider: str = Field(default="", max_length=8)
    contact_id: str = Field(default="", max_length=64)
    price: float = 0.0
    application_id: str = Field(default="", max_length=64)
    language: str = Field(default="", max_length=35)
    failed_translation: str = Field(default="", max_length=256)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class RequestState(StrEnum):
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    PREPARING = "PREPARING"
    TRANSMITTING = "TRANSMITTING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    DELETED = "DELETED"


class TimeZoneMode(StrEnum):
    UTC = "UTC"
    LOCAL = "LOCAL"


class MessageRequestRecord(SQLModel, table=True):
    __tablename__ = "message_requests"
    __table_args__ = (
        Index("ix_message_requests_org_id", "org_id", "id"),
        Index("ix_message_requests_state", "state", "lease_until"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    application_id: str = Field(max_length=64)
    from_ref: str = Field(max_length=128)
    to_text: str = Field(default="", max_length=65536)  # `;`-joined, `;` around: filterable
    targets: str = Field(default="[]", max_length=131072)  # JSON: resolved `to` entries
    conversation_id: str = Field(default="", max_length=128)
    campaign_id: str = Field(default="", max_length=128)
    program_id: str = Field(default="", max_length=128)
    subject: str = Field(default="", max_length=256)
    external_id: str = Field(default="", max_length=128)
    state: str = Field(max_length=16)
    attachments: str = Field(default="", max_length=2048)
    body: str = Field(default="", max_length=8192)
    template_id: str = Field(default="", max_length=64)
    consent_requirement: str = Field(max_length=16)
    criteria: str = Field(default="", max_length=16384)
    recipient_count: int = 0
    sent_count: int = 0
    delivered_count: int = 0
    read_count: int = 0
    converted_count: int = 0
    canceled_count: int = 0
    failed_count: int = 0
    scheduled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    scheduled_zone: str = Field(default="UTC", max_length=8)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    test_message_flag: bool = False
    pause_before_transmit: bool = False
    pause_expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    price_threshold: int = 0
    sender_id_sort_criteria: str = Field(default="", max_length=128)
    contact_delivery_address_priority: str = Field(default="", max_length=128)
    src_language: str = Field(default="en", max_length=35)
    dst_language: str = Field(default="", max_length=35)
    translate: bool = False
    track_links: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    content_type: str = Field(default="", max_length=128)
    fanout_stage: int = 0  # resume point of the fan-out: the target being expanded…
    fanout_after: str = Field(default="", max_length=64)  # …and the last contact id done
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1
