"""Every table of every domain, so that `SQLModel.metadata` is complete for Alembic and tests.

This aggregate sits above the domains (only app, the CLI and tests import it): core stays free of
them."""

from sqlmodel import SQLModel

from switchboard.server.attachments.models import Attachment, AttachmentChunk
from switchboard.server.calling.models import (
    BridgeRecord,
    CallRecord,
    ConferenceRecord,
    MemberRecord,
    PlayRecord,
)
from switchboard.server.communications.models import (
    CommunicationRecord,
    DeliveryRecord,
    ShortUrlRecord,
)
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
from switchboard.server.core.models import EventRecord, RateLimitBucketRecord
from switchboard.server.delivery.models import DailyCountRecord, DeliveryQueueRecord
from switchboard.server.event_handlers.models import (
    DeliveryAttemptRecord,
    DispatchCursorRecord,
    EventDeliveryRecord,
    EventHandlerRecord,
    EventReplayRecord,
)
from switchboard.server.messaging.content.models import KeywordRecord, MessageTemplateRecord
from switchboard.server.messaging.requests.models import MessageRecord, MessageRequestRecord
from switchboard.server.messaging.senders.models import (
    ChannelRecord,
    ChannelSenderRecord,
    ReferenceDataVersionRecord,
    SenderIdClassRecord,
    SenderIdRecord,
    SenderIdTypeRecord,
)
from switchboard.server.orgs.models import Application, Org
from switchboard.server.sms.models import SmsRecord
from switchboard.server.templates.models import (
    CommunicationTypeRecord,
    ExampleRecord,
    PackageImportRecord,
    TemplateVersionRecord,
)

metadata = SQLModel.metadata

__all__ = [
    "AccessTokenRecord",
    "AddressHistoryRecord",
    "AddressStatusRecord",
    "Application",
    "Attachment",
    "AttachmentChunk",
    "BridgeRecord",
    "CallRecord",
    "ChannelRecord",
    "ChannelSenderRecord",
    "CommunicationRecord",
    "CommunicationTypeRecord",
    "ConferenceRecord",
    "ContactApplicationTokenRecord",
    "ContactGroupRecord",
    "ContactJobRecord",
    "ContactRecord",
    "DailyCountRecord",
    "DeliveryAttemptRecord",
    "DeliveryQueueRecord",
    "DeliveryRecord",
    "DispatchCursorRecord",
    "EventDeliveryRecord",
    "EventHandlerRecord",
    "EventRecord",
    "EventReplayRecord",
    "ExampleRecord",
    "FastAccessRuleRecord",
    "GroupMemberRecord",
    "KeywordRecord",
    "MemberRecord",
    "MessageRecord",
    "MessageRequestRecord",
    "MessageTemplateRecord",
    "Org",
    "PackageImportRecord",
    "PlayRecord",
    "RateLimitBucketRecord",
    "ReferenceDataVersionRecord",
    "SenderIdClassRecord",
    "SenderIdRecord",
    "SenderIdTypeRecord",
    "ShortUrlRecord",
    "SmsRecord",
    "TemplateVersionRecord",
    "metadata",
]
