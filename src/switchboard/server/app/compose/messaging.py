"""Builds the messaging domain: its services and background workers.

`MessageService` is built first, by the caller: communications' short URLs call its
`convert_by_click` and messaging's fan-out shortens links through them.
"""

from __future__ import annotations

from switchboard.server.app.compose.core import Core
from switchboard.server.app.compose.event_handlers import build_event_handlers
from switchboard.server.app.config import Settings
from switchboard.server.communications.short_urls import ShortUrlService
from switchboard.server.contacts.domain import ContactsDomain
from switchboard.server.messaging.content.attachments import AttachmentService
from switchboard.server.messaging.content.keywords import KeywordService
from switchboard.server.messaging.content.message_templates import MessageTemplateService
from switchboard.server.messaging.domain import MessagingDomain
from switchboard.server.messaging.requests.fanout import Fanout
from switchboard.server.messaging.requests.fanout_worker import MessageRequestWorker
from switchboard.server.messaging.requests.inbound import InboundService
from switchboard.server.messaging.requests.ledger import MessageLedger
from switchboard.server.messaging.requests.message_requests import MessageRequestService
from switchboard.server.messaging.requests.messages import MessageService
from switchboard.server.messaging.senders.channels import ChannelService, channel_scope
from switchboard.server.messaging.senders.rates import Rates
from switchboard.server.messaging.senders.reference import ReferenceSeeder, ReferenceService
from switchboard.server.messaging.senders.service import SenderService, shared_sender_validator_lock


def build_messaging(
    core: Core,
    settings: Settings,
    *,
    messages: MessageService,
    contacts: ContactsDomain,
    short_urls: ShortUrlService | None = None,
) -> MessagingDomain:
    db, events, clock = core.db, core.events, core.clock
    message_templates = MessageTemplateService(
        db=db, events=events, clock=clock, shared_sender_lock=shared_sender_validator_lock
    )
    keywords = KeywordService(
        db=db, events=events, clock=clock, consent=contacts.consent, templates=message_templates
    )
    attachments = AttachmentService(
        db=db,
        events=events,
        clock=clock,
        store=core.store,
        tokens=contacts.access_tokens,
        max_bytes=settings.attachment_max_bytes,
        allowed_types=settings.attachment_allowed_types,
        blocked_types=settings.attachment_blocked_types,
    )
    reference = ReferenceService(db, clock)
    senders = SenderService(
        db, events, clock, auto_provision=settings.messaging_sandbox_provisioning
    )
    message_requests = MessageRequestService(
        db=db,
        events=events,
        clock=clock,
        contacts=contacts.directory,
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
        contacts=contacts.directory,
        requests=message_requests,
        short_urls=short_urls,
        rates=rates,
    )
    message_worker = MessageRequestWorker(
        db=db,
        clock=clock,
        fanout=fanout,
        requests=message_requests,
        messages=messages,
        poll_seconds=settings.contact_job_poll_seconds,
        lease_seconds=settings.contact_job_lease_seconds,
    )
    # A handler's channel scope means what the messaging stream's channel filter means.
    hooks = build_event_handlers(core, settings, channel_scope=channel_scope)
    return MessagingDomain(
        clock=clock,
        event_handlers=hooks.service,
        webhook_dispatcher=hooks.dispatcher,
        message_templates=message_templates,
        keywords=keywords,
        attachments=attachments,
        reference=reference,
        senders=senders,
        channels=ChannelService(db, events, clock, senders),
        messages=messages,
        message_requests=message_requests,
        message_worker=message_worker,
        ledger=MessageLedger(messages, rates),
        rates=rates,
        inbound=InboundService(
            db=db, clock=clock, keywords=keywords, messages=messages, templates=message_templates
        ),
        feed=core.feed,
        workers=[
            ReferenceSeeder(reference, keywords.ensure_reserved),
            message_worker,
            hooks.dispatcher,
        ],
    )
