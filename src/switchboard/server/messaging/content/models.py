"""Tables of the content area: the org's message templates and keywords (attachments use the
attachments domain's table)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class MessageTemplateRecord(SQLModel, table=True):
    __tablename__ = "message_templates"
    __table_args__ = (Index("ux_message_templates_org_name", "org_id", "name", unique=True),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(index=True, max_length=64)
    designation: str = Field(max_length=16)
    name: str = Field(max_length=128)
    pattern: str = Field(max_length=4096)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class KeywordRecord(SQLModel, table=True):
    __tablename__ = "keywords"
    __table_args__ = (Index("ux_keywords_org_name", "org_id", "name", unique=True),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(index=True, max_length=64)
    name: str = Field(max_length=128)
    description: str = Field(default="", max_length=1024)
    value: str = Field(max_length=256)
    case_mode: str = Field(max_length=16)
    sender_id: str = Field(default="", max_length=64)
    valid_from: datetime | None = Field(default=None, sa_type=UtcDateTime)
    valid_to: datetime | None = Field(default=None, sa_type=UtcDateTime)
    associated_info: str = Field(default="", max_length=1024)
    campaign_id: str = Field(default="", max_length=128)
    type: str = Field(max_length=16)
    actions: str = Field(default="", max_length=64)
    reply_template: str = Field(default="", max_length=128)
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1
