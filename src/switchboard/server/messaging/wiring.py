"""Builds the messaging domain: its services and background workers."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.server.app.config import Settings
from switchboard.server.communications.short_urls import ShortUrlService
from switchboard.server.contacts.wiring import BackgroundWorker, ContactsDomain
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventFeed, EventLog
from switchboard.server.messaging.content.attachments import AttachmentService
from switchboard.server.messaging.content.keywords import KeywordService
from switchboard.server.messaging.content.message_templates import MessageTemplateService
from switchboard.server.messaging.requests.fanout import Fanout
from switchboard.server.messaging.requests.fanout_worker import MessageRequestWorker
from switchboard.server.messaging.requests.inbound import InboundService
from switchboard.server.messaging.requests.ledger import MessageLedger
from switchboard.server.messaging.requests.message_requests import MessageRequestService
from switchboard.server.messaging.requests.messages import MessageService
from switchboard.server.messaging.senders.channels import ChannelService
from switchboard.server.messaging.senders.rates import Rates
from switchboard.server.messaging.senders.reference import ReferenceSeeder, ReferenceService
from switchboard.server.messaging.senders.service import SenderService, shared_sender_validator_lock


@dataclass
class MessagingDomain:
    """Every service of the domain; the servicer's RPC mixins reach them through this."""

    db: Database
    events: EventLog
    feed: EventFeed
    bus: EventBus
    clock: Clock
    settings: Settings
    contacts: ContactsDomain
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
    workers: list[BackgroundWorker] = field(default_factory=list)


def build_messaging_domain(
    *,
    db: Database,
    events: EventLog,
    feed: EventFeed,
    bus: EventBus,
    clock: Clock,
    settings: Settings,
    contacts: ContactsDomain,
    short_urls: ShortUrlService | None = None,
) -> MessagingDomain:
    message_templates = MessageTemplateService(db=db, events=events, clock=clock)
    message_templates.shared_sender_lock = shared_sender_validator_lock
    keywords = KeywordService(
        db=db, events=events, clock=clock, consent=contacts.consent, templates=message_templates
    )
    attachments = AttachmentService(
        db=db,
        events=events,
        clock=clock,
        store=contacts.jobs.store,
        tokens=contacts.access_tokens,
        max_bytes=settings.attachment_max_bytes,
        allowed_types=settings.attachment_allowed_types,
        blocked_types=settings.attachment_blocked_types,
    )
    reference = ReferenceService(db, clock)
    senders = SenderService(
        db, events, clock, auto_provision=settings.messaging_sandbox_provisioning
    )
    channels = ChannelService(db, events, clock, senders)
    messages = MessageService(db=db, events=events, clock=clock)
    message_requests = MessageRequestService(
        db=db,
        events=events,
        clock=clock,
        senders=senders,
        templates=message_templates,
        attachments=attachments,
        messages=messages,
        default_region=settings.sms_default_region,
    )
    rates = Rates.from_reference_data()
    fanout = Fanout(
        db=db,
        events=events,
        clock=clock,
        senders=senders,
        consent=contacts.consent,
        requests=message_requests,
        short_urls=short_urls,
        rates=rates,
    )
    if short_urls is not None:  # a click on a tracked link converts its message
        short_urls.on_message_click = messages.convert_by_click
    message_worker = MessageRequestWorker(
        db=db,
        clock=clock,
        fanout=fanout,
        requests=message_requests,
        messages=messages,
        poll_seconds=settings.contact_job_poll_seconds,
        lease_seconds=settings.contact_job_lease_seconds,
    )
    domain = MessagingDomain(
        db=db,
        events=events,
        feed=feed,
        bus=bus,
        clock=clock,
        settings=settings,
        contacts=contacts,
        message_templates=message_templates,
        keywords=keywords,
        attachments=attachments,
        reference=reference,
        senders=senders,
        channels=channels,
        messages=messages,
        message_requests=message_requests,
        message_worker=message_worker,
        ledger=MessageLedger(messages, rates),
        rates=rates,
        inbound=InboundService(
            db=db,
            clock=clock,
            keywords=keywords,
            messages=messages,
            templates=message_templates,
        ),
    )
    domain.workers.append(ReferenceSeeder(reference, keywords.ensure_reserved))
    domain.workers.append(message_worker)
    return domain
