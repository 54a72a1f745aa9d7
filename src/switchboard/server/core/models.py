"""Core's own tables: the event log and the shared rate-limit buckets (each domain's tables are
in its own models.py; migrations/metadata.py gathers them all)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer
from sqlmodel import Column, Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class EventRecord(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_org_seq", "org_id", "seq"),)

    seq: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    org_id: str = Field(max_length=64)
    type: str = Field(max_length=64)
    resource_id: str = Field(max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    occurred_at: datetime = Field(sa_type=UtcDateTime)


class RateLimitBucketRecord(SQLModel, table=True):
    """A shared token bucket: `level` tokens at `refilled_at` (epoch seconds of the platform's
    clock). `rate` and `burst` are the last leaser's, so a sweep can tell when the bucket is full
    (a full bucket and no row mean the same). `taken` is what the last lease got. The table is
    UNLOGGED on PostgreSQL: a crash empties it, which only refills every bucket."""

    __tablename__ = "rate_limit_buckets"

    bucket: str = Field(primary_key=True, max_length=80)
    level: float
    refilled_at: float
    rate: float
    burst: float
    taken: float
