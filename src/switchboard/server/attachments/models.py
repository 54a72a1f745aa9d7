"""Stored files: uploaded import CSVs, produced export CSVs, messaging attachments.

Job files (import CSVs, exports, failure reports) live in the database as ordered chunks: they
are written batch by batch in the same transactions as their jobs' checkpoints. Messaging
attachments' content is a file in the attachment directory (attachments/files.py) that the row
names by `location`, with its SHA-256 `checksum`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, LargeBinary
from sqlmodel import Column, Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class AttachmentState(StrEnum):
    CREATED = "CREATED"  # exists, content not (completely) uploaded
    UPLOADED = "UPLOADED"  # content complete and readable


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(index=True, max_length=64)
    purpose: str = Field(max_length=32)  # contact_import, contact_export, …, messaging
    state: str = Field(max_length=16)
    content_type: str = Field(max_length=128)
    filename: str = Field(default="", max_length=256)
    # Messaging attachments' `name`, and the hex SHA-256 of the content once complete (server
    # defaults: the columns came after rows existed).
    name: str = Field(default="", max_length=256, sa_column_kwargs={"server_default": ""})
    checksum: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    # Where the content is when it is a file in the attachment directory (attachments/files.py),
    # relative to it; empty when the content is database chunks.
    location: str = Field(default="", max_length=256, sa_column_kwargs={"server_default": ""})
    size_bytes: int = 0
    application_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class AttachmentChunk(SQLModel, table=True):
    __tablename__ = "attachment_chunks"

    attachment_id: str = Field(
        sa_column_args=[ForeignKey("attachments.id", ondelete="CASCADE")],
        primary_key=True,
        max_length=64,
    )
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
