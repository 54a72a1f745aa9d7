"""Calls and plays as stored, and their vocabulary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from switchboard.server.core.db import UtcDateTime


class CallState(StrEnum):
    STARTED = "STARTED"  # being set up: dialled, ringing
    ACTIVE = "ACTIVE"  # answered
    REJECTED = "REJECTED"  # never answered (failure_code says why)
    COMPLETED = "COMPLETED"  # ended after being answered

    @property
    def live(self) -> bool:
        return self in (CallState.STARTED, CallState.ACTIVE)


class PlayState(StrEnum):
    QUEUED = "QUEUED"
    PLAYING = "PLAYING"
    COMPLETED = "COMPLETED"
    INTERRUPTED = "INTERRUPTED"  # the call ended before it finished


LIVE_STATES = (CallState.STARTED.value, CallState.ACTIVE.value)


class CallRecord(SQLModel, table=True):
    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_org_id", "org_id", "id"),
        Index("ix_calls_state", "state"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    external_id: str = Field(default="", max_length=128)
    sender_id: str = Field(max_length=64)  # `from`
    from_address: str = Field(max_length=32)
    to: str = Field(max_length=64)  # as given: a number or a contact id
    to_address: str = Field(max_length=32)  # E.164 dialled
    answer_timeout: int = 30000  # ms
    state: str = Field(max_length=16)
    direction: str = Field(default="OUT", max_length=4)
    start_time: datetime = Field(sa_type=UtcDateTime)
    answer_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    end_time: datetime | None = Field(default=None, sa_type=UtcDateTime)
    chargeable_duration: int = 0  # seconds
    bridge_id: str = Field(default="", max_length=64)
    failure_code: str = Field(default="", max_length=32)
    failure_details: str = Field(default="", max_length=1024)
    price: float = 0.0
    country: str = Field(default="", max_length=4)
    application_id: str = Field(default="", max_length=256)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class BridgeState(StrEnum):
    CREATED = "CREATED"  # written, its calls not joined yet
    ACTIVE = "ACTIVE"
    HOLD = "HOLD"  # bridge_audio false: the legs do not hear each other
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"  # the carrier could not join the calls


OPEN_BRIDGE_STATES = (BridgeState.CREATED.value, BridgeState.ACTIVE.value, BridgeState.HOLD.value)


class BridgeRecord(SQLModel, table=True):
    __tablename__ = "call_bridges"
    __table_args__ = (Index("ix_call_bridges_org_id", "org_id", "id"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    external_id: str = Field(default="", max_length=128)
    state: str = Field(max_length=16)
    bridge_audio: bool = True
    activated_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    error_details: str = Field(default="", max_length=1024)
    application_id: str = Field(default="", max_length=256)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1


class PlayRecord(SQLModel, table=True):
    __tablename__ = "call_plays"
    __table_args__ = (Index("ix_call_plays_call", "call_id", "state"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    call_id: str = Field(max_length=64)  # the call it plays into; "" for a bridge's play
    bridge_id: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    conference_id: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    kind: str = Field(max_length=8)  # DTMF, TTS, AUDIO
    state: str = Field(max_length=16)
    duration: float = 0.0  # seconds
    started_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)


class ConferenceState(StrEnum):
    CREATED = "created"  # no member yet
    ACTIVE = "active"
    COMPLETED = "completed"  # the last member left, or DELETE


class MemberState(StrEnum):
    JOINING = "joining"  # its call is being dialled
    ACTIVE = "active"
    COMPLETED = "completed"


class ConferenceRecord(SQLModel, table=True):
    __tablename__ = "call_conferences"
    __table_args__ = (Index("ix_call_conferences_org_id", "org_id", "id"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    external_id: str = Field(default="", max_length=128)
    sender_id: str = Field(default="", max_length=64)  # `from`: dial-outs call from it
    state: str = Field(max_length=16)
    hold: bool = False
    mute: bool = False
    active_members: int = 0
    application_id: str = Field(default="", max_length=256)
    created_at: datetime = Field(sa_type=UtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class MemberRecord(SQLModel, table=True):
    __tablename__ = "call_conference_members"
    __table_args__ = (
        Index("ix_call_conference_members_conference", "conference_id", "state"),
        Index("ix_call_conference_members_call", "call_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(max_length=64)
    conference_id: str = Field(max_length=64)
    external_id: str = Field(default="", max_length=128)
    state: str = Field(max_length=16)
    join_tone: bool = False
    leaving_tone: bool = False
    hold: bool = False
    mute: bool = False
    call_id: str = Field(max_length=64)
    dialled: bool = False  # the conference placed the call: removing the member hangs it up
    added_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    removed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
