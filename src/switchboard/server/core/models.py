"""Imports every table so that `SQLModel.metadata` is complete (migrations, tests)."""

from sqlmodel import SQLModel

from switchboard.server.attachments.models import Attachment, AttachmentChunk
from switchboard.server.contacts.models import (
    AccessTokenRecord,
    AddressHistoryRecord,
    AddressStatusRecord,
    ContactApplicationTokenRecord,
    ContactGroupRecord,
    ContactJobRecord,
    ContactRecord,
    FastAccessRuleRecord,
    GroupMemberRecord,
)
from switchboard.server.core.events import EventRecord
from switchboard.server.orgs.models import Application, Org
from switchboard.server.sms.models import SmsRecord

metadata = SQLModel.metadata

__all__ = [
    "AccessTokenRecord",
    "AddressHistoryRecord",
    "AddressStatusRecord",
    "Application",
    "Attachment",
    "AttachmentChunk",
    "ContactApplicationTokenRecord",
    "ContactGroupRecord",
    "ContactJobRecord",
    "ContactRecord",
    "EventRecord",
    "FastAccessRuleRecord",
    "GroupMemberRecord",
    "Org",
    "SmsRecord",
    "metadata",
]
