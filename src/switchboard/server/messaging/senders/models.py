"""Tables of the senders area: sender ID classes and types (reference data), sender IDs,
channels and their sender IDs, and the reference data versions applied.

List-valued attributes that are filtered by membership (applicable countries, operators,
capabilities, message templates, credential parameter lists) are stored as `,a,b,` text: a
`LIKE '%,x,%'` finds the rows containing `x` on every backend.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from switchboard.server.core.db import UtcDateTime

# Org id of the operator's own senders (SHARED, PREPROVISIONED, PURCHASED): never a token's org.
SYSTEM_ORG = ""


class Ownership(StrEnum):
    PRIVATE = "PRIVATE"
    SHARED = "SHARED"
    PREPROVISIONED = "PREPROVISIONED"
    PURCHASED = "PURCHASED"


class SenderState(StrEnum):
    PENDING_IMPLEMENTATION = "PENDING_IMPLEMENTATION"
    IMPLEMENTED = "IMPLEMENTED"
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    BROKEN = "BROKEN"
    PENDING_DELETE = "PENDING_DELETE"


class YesNo(StrEnum):
    YES = "YES"
    NO = "NO"


class ConsentManagedBy(StrEnum):
    USER = "USER"
    SCG = "SCG"


class AddressFormat(StrEnum):
    E164 = "E164"
    SHORT_CODE = "SHORT_CODE"
    ALPHANUMERIC = "ALPHANUMERIC"
    EMAIL = "EMAIL"
    ANY = "ANY"


class ChannelPriority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class ChannelOwnership(StrEnum):
    PRIVATE = "PRIVATE"
    SHARED = "SHARED"
    PUBLIC = "PUBLIC"


class SenderIdClassRecord(SQLModel, table=True):
    __tablename__ = "messaging_sender_id_classes"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=256)
    description: str = Field(default="", max_length=1024)
    designation: str = Field(default="", max_length=64)
    applicable_countries: str = Field(default="", max_length=1024)  # ,US,CA,
    country_peak_throughput: float = 0.0
    country_peak_total_throughput: float = 0.0
    country_daily_throughput: float = 0.0
    delivery_window: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class SenderIdTypeRecord(SQLModel, table=True):
    __tablename__ = "messaging_sender_id_types"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=256)
    description: str = Field(default="", max_length=1024)
    capabilities: str = Field(default="", max_length=256)
    allowed_mime_types: str = Field(default="", max_length=2048)
    blocked_mime_types: str = Field(default="", max_length=2048)
    gateway_id: str = Field(default="", max_length=128)
    credential_parameter_list: str = Field(default="", max_length=2048)  # ,APN:a;b,GCM:c,
    address_format: str = Field(default="ANY", max_length=16)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class ReferenceDataVersionRecord(SQLModel, table=True):
    """Each reference data file version applied (seeding is idempotent per version)."""

    __tablename__ = "messaging_reference_versions"

    version: str = Field(primary_key=True, max_length=64)
    applied_at: datetime = Field(sa_type=UtcDateTime)


class SenderIdRecord(SQLModel, table=True):
    __tablename__ = "messaging_sender_ids"
    __table_args__ = (
        UniqueConstraint("org_id", "type_id", "address", name="uq_messaging_sender_ids_address"),
        Index("ix_messaging_sender_ids_parent", "parent_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)  # SYSTEM_ORG for the operator's senders
    parent_id: str | None = Field(default=None, max_length=64)
    name: str = Field(default="", max_length=256)
    ownership: str = Field(max_length=16)
    class_id: str = Field(max_length=64)
    type_id: str = Field(max_length=64)
    state: str = Field(max_length=32)
    address: str = Field(max_length=320)
    content_type: str = Field(default="", max_length=128)
    message_templates: str = Field(default="", sa_type=Text)
    country: str = Field(default="", max_length=8)
    operators: str = Field(default="", max_length=1024)
    credentials: str = Field(default="", sa_type=Text)
    two_way_required: str = Field(default="NO", max_length=3)
    keep_sender_address: str = Field(default="NO", max_length=3)
    dr_required: str = Field(default="NO", max_length=3)
    consent_managed_by: str = Field(default="USER", max_length=8)
    capabilities: str = Field(default="", max_length=256)
    check_white_list: bool = False
    billing: str = Field(default="", max_length=1024)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class ChannelRecord(SQLModel, table=True):
    __tablename__ = "messaging_channels"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_messaging_channels_org_name"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    name: str = Field(max_length=256)
    priority: str = Field(default="normal", max_length=8)
    description: str = Field(default="", max_length=1024)
    ownership: str = Field(default="PRIVATE", max_length=16)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class ChannelSenderRecord(SQLModel, table=True):
    """A sender ID of a channel, in the order added."""

    __tablename__ = "messaging_channel_sender_ids"
    __table_args__ = (Index("ix_messaging_channel_sender_ids_sender", "sender_id"),)

    channel_id: str = Field(
        sa_column_args=[ForeignKey("messaging_channels.id", ondelete="CASCADE")],
        primary_key=True,
        max_length=64,
    )
    sender_id: str = Field(
        sa_column_args=[ForeignKey("messaging_sender_ids.id", ondelete="CASCADE")],
        primary_key=True,
        max_length=64,
    )
    position: int = 0
    created_at: datetime = Field(sa_type=UtcDateTime)
