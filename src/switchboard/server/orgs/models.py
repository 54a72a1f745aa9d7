"""Tenants: orgs and the applications (token subjects) that act for them."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class Org(SQLModel, table=True):
    __tablename__ = "orgs"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=UtcDateTime)


class Application(SQLModel, table=True):
    __tablename__ = "applications"

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="orgs.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=UtcDateTime)
