"""Builds the contacts domain: its services, the background workers, and the servicer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from switchboard.server.app.config import Settings
from switchboard.server.attachments.files import ContentDirectory
from switchboard.server.attachments.store import AttachmentStore
from switchboard.server.contacts.consent import ConsentService
from switchboard.server.contacts.fast_access import FastAccessService
from switchboard.server.contacts.groups import GroupService
from switchboard.server.contacts.jobs import ContactJobService
from switchboard.server.contacts.service import ContactService
from switchboard.server.contacts.tokens import AccessTokenService, ApplicationTokenService
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventFeed, EventLog


class BackgroundWorker(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class ContactsDomain:
    """Every service of the domain; the servicer's RPC mixins reach them through this."""

    db: Database
    events: EventLog
    feed: EventFeed
    bus: EventBus
    clock: Clock
    settings: Settings
    contacts: ContactService
    groups: GroupService
    fast_access: FastAccessService
    consent: ConsentService
    access_tokens: AccessTokenService
    application_tokens: ApplicationTokenService
    jobs: ContactJobService
    workers: list[BackgroundWorker] = field(default_factory=list)


def build_contacts_domain(
    *,
    db: Database,
    events: EventLog,
    feed: EventFeed,
    bus: EventBus,
    clock: Clock,
    settings: Settings,
) -> ContactsDomain:
    consent = ConsentService(
        db=db, events=events, clock=clock, default_region=settings.sms_default_region
    )
    access_tokens = AccessTokenService(
        db=db, clock=clock, ttl_seconds=settings.access_token_ttl_seconds
    )
    application_tokens = ApplicationTokenService(db=db, clock=clock)
    fast_access = FastAccessService(db, events, clock)
    contacts = ContactService(db, events, clock, fast_access)
    groups = GroupService(db, events, clock, contacts)
    store = AttachmentStore(db, ContentDirectory(settings.resolved_attachment_dir()))
    jobs = ContactJobService(db=db, events=events, clock=clock, store=store)
    domain = ContactsDomain(
        db=db,
        events=events,
        feed=feed,
        bus=bus,
        clock=clock,
        settings=settings,
        contacts=contacts,
        groups=groups,
        fast_access=fast_access,
        consent=consent,
        access_tokens=access_tokens,
        application_tokens=application_tokens,
        jobs=jobs,
    )
    # Imported here: the worker module depends on the services above, not the other way.
    from switchboard.server.contacts.maintenance import ContactMaintenance

    domain.workers.append(
        ContactMaintenance(
            db=db,
            bus=bus,
            clock=clock,
            contacts=contacts,
            groups=groups,
            fast_access=fast_access,
            poll_seconds=settings.contact_job_poll_seconds,
        )
    )
    from switchboard.server.attachments.sweep import AttachmentSweeper

    domain.workers.append(
        AttachmentSweeper(store, period_seconds=settings.attachment_sweep_seconds)
    )
    from switchboard.server.contacts.job_worker import ContactJobWorker

    job_worker = ContactJobWorker(
        db=db,
        events=events,
        bus=bus,
        clock=clock,
        store=store,
        contacts_service=contacts,
        groups_service=groups,
        batch_rows=settings.contact_job_batch_rows,
        poll_seconds=settings.contact_job_poll_seconds,
        lease_seconds=settings.contact_job_lease_seconds,
    )
    jobs.on_job_created(job_worker.wake)
    domain.workers.append(job_worker)
    return domain
