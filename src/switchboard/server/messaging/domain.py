"""The messaging domain's services as its RPC mixins reach them (built by app/compose/messaging.py),
by area: content, senders, message requests and messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.server.core.clock import Clock
from switchboard.server.core.events import EventFeed
from switchboard.server.core.lifecycle import BackgroundWorker
from switchboard.server.event_handlers.dispatcher import WebhookDispatcher
from switchboard.server.event_handlers.service import EventHandlerService
from switchboard.server.messaging.content.attachments import AttachmentService
from switchboard.server.messaging.content.keywords import KeywordService
from switchboard.server.messaging.content.message_templates import MessageTemplateService
from switchboard.server.messaging.requests.fanout_worker import MessageRequestWorker
from switchboard.server.messaging.requests.inbound import InboundService
from switchboard.server.messaging.requests.ledger import MessageLedger
from switchboard.server.messaging.requests.message_requests import MessageRequestService
from switchboard.server.messaging.requests.messages import MessageService
from switchboard.server.messaging.senders.channels import ChannelService
from switchboard.server.messaging.senders.rates import Rates
from switchboard.server.messaging.senders.reference import ReferenceService
from switchboard.server.messaging.senders.service import SenderService


@dataclass
class MessagingDomain:
    clock: Clock
    # content area
    message_templates: MessageTemplateService
    keywords: KeywordService
    attachments: AttachmentService
    # senders area
    reference: ReferenceService
    senders: SenderService
    channels: ChannelService
    # message requests and messages area
    messages: MessageService
    message_requests: MessageRequestService
    message_worker: MessageRequestWorker
    ledger: MessageLedger
    rates: Rates
    inbound: InboundService
    # event handlers (signed webhooks; their own package, exposed on the messaging API)
    event_handlers: EventHandlerService
    webhook_dispatcher: WebhookDispatcher
    # events (StreamMessagingEvents)
    feed: EventFeed
    workers: list[BackgroundWorker] = field(default_factory=list)
