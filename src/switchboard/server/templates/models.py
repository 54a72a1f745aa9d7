"""Templates-domain tables: communication types, template versions (the history), examples, and
the deployment packages each org imported."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Text, UniqueConstraint, text
from sqlmodel import Column, Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    WHATSAPP = "whatsapp"


class ChangeType(StrEnum):
    DRAFT = "draft"
    STABLE = "stable"
    ARCHIVED = "archived"  # was stable until a newer version was committed
    DELETED = "deleted"  # until a commit purges it


class SendingType(StrEnum):
    INTERNAL = "INTERNAL"
    EXTERNAL = "EXTERNAL"


class ArgumentType(StrEnum):
    STRING = "String"
    STRING_LIST = "StringList"
    STRING_MAP = "StringMap"
    NUMBER = "Number"
    BOOLEAN = "Boolean"
    DATE = "Date"
    LINK = "Link"
    LOCALE_REGION = "LocaleRegion"
    IMAGE = "Image"
    ATTACHMENT = "Attachment"
    QR_CODE = "QrCode"


class CommunicationTypeRecord(SQLModel, table=True):
    __tablename__ = "communication_types"

    code: str = Field(primary_key=True, max_length=40)
    description: str = Field(sa_column=Column(Text, nullable=False))
    real_time_required: bool = False
    delivery_window: str = Field(max_length=32)
    sending_type: str = Field(max_length=16)
    arguments: Any = Field(sa_column=Column(JSON, nullable=False))  # [{name, type, sensitive}]
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


def _one_per_key(name: str, change_type: ChangeType) -> Index:
    """At most one version of a key in `change_type` (the writer checks first; this holds it
    against concurrent writers on PostgreSQL)."""
    where = text(f"change_type = '{change_type.value}'")
    return Index(
        name,
        "org_id",
        "type_code",
        "channel",
        "language",
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )


class TemplateVersionRecord(SQLModel, table=True):
    """Every version of every template: the current draft and stable ones and their history."""

    __tablename__ = "template_versions"
    __table_args__ = (
        UniqueConstraint(
            "org_id", "type_code", "channel", "language", "version", name="uq_template_versions"
        ),
        Index("ix_template_versions_org_state", "org_id", "change_type", "type_code"),
        _one_per_key("uq_template_versions_one_draft", ChangeType.DRAFT),
        _one_per_key("uq_template_versions_one_stable", ChangeType.STABLE),
    )

    id: str = Field(primary_key=True, max_length=36)
    org_id: str = Field(max_length=64)
    type_code: str = Field(foreign_key="communication_types.code", max_length=40)
    channel: str = Field(max_length=16)
    language: str = Field(max_length=35)
    version: int
    change_type: str = Field(max_length=16)
    sender_info: str = Field(default="", max_length=320)
    subject: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    content: str = Field(sa_column=Column(Text, nullable=False))  # decoded source
    request_ref: str = Field(default="", max_length=512)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    committed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class ExampleRecord(SQLModel, table=True):
    """An example of an org: arguments and the output its template must render for them."""

    __tablename__ = "template_examples"
    __table_args__ = (
        Index("ix_template_examples_key", "org_id", "type_code", "channel", "language"),
    )

    org_id: str = Field(primary_key=True, max_length=64)
    id: str = Field(primary_key=True, max_length=36)
    type_code: str = Field(foreign_key="communication_types.code", max_length=40)
    channel: str = Field(max_length=16)
    language: str = Field(max_length=35)
    request_ref: str = Field(default="", max_length=512)
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    expected_sender_info: str = Field(default="", max_length=320)
    expected_subject: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expected_content: str = Field(sa_column=Column(Text, nullable=False))
    arguments: Any = Field(sa_column=Column(JSON, nullable=False))  # {name: value}
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class PackageImportRecord(SQLModel, table=True):
    """A deployment package an org imported: the same package is imported once."""

    __tablename__ = "template_package_imports"

    org_id: str = Field(primary_key=True, max_length=64)
    package_id: str = Field(primary_key=True, max_length=64)
    source_org: str = Field(default="", max_length=64)
    application_id: str = Field(max_length=64)
    imported_at: datetime = Field(sa_type=UtcDateTime)
