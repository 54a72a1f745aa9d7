"""Contacts-domain tables: contacts, groups, fast access rules, consent, tokens, jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from switchboard.server.core.db import UtcDateTime

FAST_ACCESS_SLOTS = 20


class VoicePreference(StrEnum):
    NONE = "NONE"
    PREFER_VOICE = "PREFER_VOICE"
    REQUIRE_VOICE = "REQUIRE_VOICE"


class GroupType(StrEnum):
    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"


class GroupStatus(StrEnum):
    PROCESSING = "Processing"  # a DYNAMIC group's member_count is being recounted
    READY = "Ready"


class ConsentStatus(StrEnum):
    NONE = "NONE"
    OPTIN = "OPTIN"
    OPTOUT = "OPTOUT"
    BLACKLIST = "BLACKLIST"  # sticky: only the API lifts it; treated as OPTOUT
    WHITELIST = "WHITELIST"  # sticky: only the API lifts it; treated as OPTIN


class AddressType(StrEnum):
    MDN = "MDN"
    EMAIL = "EMAIL"
    SOCIAL = "SOCIAL"
    PUSH = "PUSH"


class ConsentSource(StrEnum):
    MESSAGE = "MESSAGE"  # an end-user keyword (SCG-managed consent)
    CARRIER = "CARRIER"  # a carrier's blacklist file
    COMPANY = "COMPANY"  # the customer, through the API (user-managed consent)


class TokenOwner(StrEnum):
    ORG = "org"  # POST /access_tokens
    CONTACT = "contact"  # POST /contacts/{id}/access_tokens
    ATTACHMENT = "attachment"  # POST /messaging/attachments/{id}/access_tokens (messaging)


class JobKind(StrEnum):
    IMPORT = "IMPORT"
    EXPORT = "EXPORT"


class JobState(StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class ContactRecord(SQLModel, table=True):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("org_id", "external_id", name="uq_contacts_org_external_id"),
        Index("ix_contacts_org_mdn", "org_id", "primary_mdn"),
        Index("ix_contacts_org_email", "org_id", "primary_email_addr"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    external_id: str | None = Field(default=None, max_length=128)
    first_name: str = Field(default="", max_length=256)
    last_name: str = Field(default="", max_length=256)
    birth_date: str = Field(default="", max_length=10)
    first_acquisition_date: str = Field(default="", max_length=10)
    last_acquisition_date: str = Field(default="", max_length=10)
    primary_mdn: str = Field(default="", max_length=20)
    primary_addr_line1: str = Field(default="", max_length=256)
    primary_addr_line2: str = Field(default="", max_length=256)
    primary_addr_city: str = Field(default="", max_length=256)
    primary_addr_zip: str = Field(default="", max_length=32)
    primary_addr_state: str = Field(default="", max_length=256)
    primary_addr_country: str = Field(default="", max_length=2)
    primary_email_addr: str = Field(default="", max_length=320)
    primary_social_handle: str = Field(default="", max_length=256)
    # The JSON fields are stored parsed, so criteria and JSONPath can look inside them.
    address_list: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    customer_account_list: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    customer_device_list: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    interest_list: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    demographic_list: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    extended_attributes: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    fast_access: Any = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )  # {name: value}
    fast_access_1: str | None = Field(default=None, max_length=256)
    fast_access_2: str | None = Field(default=None, max_length=256)
    fast_access_3: str | None = Field(default=None, max_length=256)
    fast_access_4: str | None = Field(default=None, max_length=256)
    fast_access_5: str | None = Field(default=None, max_length=256)
    fast_access_6: str | None = Field(default=None, max_length=256)
    fast_access_7: str | None = Field(default=None, max_length=256)
    fast_access_8: str | None = Field(default=None, max_length=256)
    fast_access_9: str | None = Field(default=None, max_length=256)
    fast_access_10: str | None = Field(default=None, max_length=256)
    fast_access_11: str | None = Field(default=None, max_length=256)
    fast_access_12: str | None = Field(default=None, max_length=256)
    fast_access_13: str | None = Field(default=None, max_length=256)
    fast_access_14: str | None = Field(default=None, max_length=256)
    fast_access_15: str | None = Field(default=None, max_length=256)
    fast_access_16: str | None = Field(default=None, max_length=256)
    fast_access_17: str | None = Field(default=None, max_length=256)
    fast_access_18: str | None = Field(default=None, max_length=256)
    fast_access_19: str | None = Field(default=None, max_length=256)
    fast_access_20: str | None = Field(default=None, max_length=256)
    preferred_language: str = Field(default="", max_length=35)
    voice_preference: str = Field(default=VoicePreference.NONE.value, max_length=16)
    time_zone: str = Field(default="", max_length=64)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class ContactGroupRecord(SQLModel, table=True):
    __tablename__ = "contact_groups"
    __table_args__ = (
        UniqueConstraint("org_id", "external_id", name="uq_contact_groups_org_external_id"),
        Index("ix_contact_groups_org_type", "org_id", "type"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    external_id: str | None = Field(default=None, max_length=128)
    name: str = Field(default="", max_length=256)
    description: str = Field(default="", max_length=1024)
    type: str = Field(max_length=16)
    criteria: str = Field(default="", sa_type=Text)
    status: str = Field(max_length=16)
    member_count: int = 0
    # Bumped by every change that may alter a DYNAMIC group's membership; the recount stores the
    # generation it counted, so a count that raced a change never marks the group Ready.
    generation: int = 0
    counted_generation: int = 0
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class GroupMemberRecord(SQLModel, table=True):
    """Members of STATIC groups (DYNAMIC membership is computed from the criteria)."""

    __tablename__ = "contact_group_members"
    __table_args__ = (Index("ix_contact_group_members_contact", "contact_id"),)

    group_id: str = Field(
        sa_column_args=[ForeignKey("contact_groups.id", ondelete="CASCADE")],
        primary_key=True,
        max_length=64,
    )
    contact_id: str = Field(
        sa_column_args=[ForeignKey("contacts.id", ondelete="CASCADE")],
        primary_key=True,
        max_length=64,
    )
    created_at: datetime = Field(sa_type=UtcDateTime)


class FastAccessRuleRecord(SQLModel, table=True):
    __tablename__ = "fast_access_rules"
    __table_args__ = (
        UniqueConstraint("org_id", "target_attribute", name="uq_fast_access_org_target"),
        UniqueConstraint("org_id", "target_attribute_name", name="uq_fast_access_org_name"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    target_attribute: str = Field(max_length=16)
    target_attribute_name: str = Field(max_length=128)
    value_derivation_script: str = Field(default="", max_length=1024)
    user_data: str = Field(default="", max_length=4096)
    # Set when the rule changed and contacts still need re-deriving (a worker clears it).
    reapply_pending: bool = False
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class AccessTokenRecord(SQLModel, table=True):
    """Opaque tokens: the client holds `<id>.<secret>`, only the secret's SHA-256 is kept."""

    __tablename__ = "access_tokens"
    __table_args__ = (Index("ix_access_tokens_owner", "org_id", "owner_type", "owner_id"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    owner_type: str = Field(max_length=16)
    owner_id: str = Field(default="", max_length=64)
    secret_hash: str = Field(max_length=64)
    expiry_time: datetime = Field(sa_type=UtcDateTime)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class ContactApplicationTokenRecord(SQLModel, table=True):
    __tablename__ = "contact_application_tokens"
    __table_args__ = (Index("ix_contact_app_tokens_contact", "org_id", "contact_id"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    contact_id: str = Field(
        sa_column_args=[ForeignKey("contacts.id", ondelete="CASCADE")], max_length=64
    )
    sender_id_address: str = Field(default="", max_length=128)
    message_delivery_provider: str = Field(default="", max_length=32)
    token: str = Field(default="", sa_type=Text)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class AddressStatusRecord(SQLModel, table=True):
    __tablename__ = "contact_address_statuses"
    __table_args__ = (
        UniqueConstraint(
            "org_id", "address_type", "address", "sender_id", name="uq_address_status_key"
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    address_type: str = Field(max_length=16)
    address: str = Field(max_length=320)
    sender_id: str = Field(default="", max_length=64)  # "" = every sender of the org
    consent_status: str = Field(max_length=16)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class AddressHistoryRecord(SQLModel, table=True):
    __tablename__ = "contact_address_history"
    __table_args__ = (Index("ix_address_history_org_address", "org_id", "msisdn"),)

    id: str = Field(primary_key=True, max_length=64)  # time-ordered: listing by id is by time
    org_id: str = Field(max_length=64)
    address_status_id: str = Field(default="", max_length=64)
    address_type: str = Field(max_length=16)
    msisdn: str = Field(max_length=320)
    sender_id: str = Field(default="", max_length=64)
    source: str = Field(max_length=16)
    status: str = Field(max_length=16)
    message: str = Field(default="", sa_type=Text)
    keyword: str = Field(default="", max_length=64)
    timestamp: datetime = Field(sa_type=UtcDateTime)
    application_id: str = Field(default="", max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)


class ContactJobRecord(SQLModel, table=True):
    """Import and export jobs; a worker leases RUNNING work so a dead worker's job resumes."""

    __tablename__ = "contact_jobs"
    __table_args__ = (
        Index("ix_contact_jobs_org_kind", "org_id", "kind"),
        Index("ix_contact_jobs_state_lease", "state", "lease_until"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    kind: str = Field(max_length=8)
    contact_group_id: str = Field(default="", max_length=64)
    attachment_id: str = Field(default="", max_length=64)  # import: input; export: output
    failures_attachment_id: str = Field(default="", max_length=64)
    state: str = Field(max_length=16)
    rows_read: int = 0  # import: data rows consumed (the resume point)
    created_count: int = 0
    updated_count: int = 0
    failed_count: int = 0
    exported_count: int = 0
    checkpoint: str = Field(default="", max_length=64)  # export: last contact id written
    failures: Any = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )  # first failed rows
    failure_details: str = Field(default="", sa_type=Text)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1
