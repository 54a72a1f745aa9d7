"""Builds the contacts domain: its services and background workers."""

from __future__ import annotations

from switchboard.server.app.compose.core import Core
from switchboard.server.app.config import Settings
from switchboard.server.attachments.sweep import AttachmentSweeper
from switchboard.server.contacts.consent import ConsentService
from switchboard.server.contacts.directory import ContactDirectory
from switchboard.server.contacts.domain import ContactsDomain
from switchboard.server.contacts.fast_access import FastAccessService
from switchboard.server.contacts.groups import GroupService
from switchboard.server.contacts.job_worker import ContactJobWorker
from switchboard.server.contacts.jobs import ContactJobService
from switchboard.server.contacts.maintenance import ContactMaintenance
from switchboard.server.contacts.service import ContactService
from switchboard.server.contacts.tokens import AccessTokenService, ApplicationTokenService


def build_contacts(core: Core, settings: Settings) -> ContactsDomain:
    db, events, clock = core.db, core.events, core.clock
    consent = ConsentService(
        db=db, events=events, clock=clock, default_region=settings.sms_default_region
    )
    access_tokens = AccessTokenService(
        db=db, clock=clock, ttl_seconds=settings.access_token_ttl_seconds
    )
    fast_access = FastAccessService(db, events, clock)
    contacts = ContactService(db, events, clock, fast_access)
    groups = GroupService(db, events, clock, contacts)
    job_worker = ContactJobWorker(
        db=db,
        events=events,
        bus=core.bus,
        clock=clock,
        store=core.store,
        contacts_service=contacts,
        groups_service=groups,
        batch_rows=settings.contact_job_batch_rows,
        poll_seconds=settings.contact_job_poll_seconds,
        lease_seconds=settings.contact_job_lease_seconds,
    )
    maintenance = ContactMaintenance(
        db=db,
        bus=core.bus,
        clock=clock,
        contacts=contacts,
        groups=groups,
        fast_access=fast_access,
        poll_seconds=settings.contact_job_poll_seconds,
    )
    sweeper = AttachmentSweeper(core.store, period_seconds=settings.attachment_sweep_seconds)
    return ContactsDomain(
        clock=clock,
        feed=core.feed,
        contacts=contacts,
        groups=groups,
        fast_access=fast_access,
        consent=consent,
        access_tokens=access_tokens,
        application_tokens=ApplicationTokenService(db=db, clock=clock),
        jobs=ContactJobService(
            db=db, events=events, clock=clock, store=core.store, on_job_created=job_worker.wake
        ),
        directory=ContactDirectory(db),
        workers=[maintenance, sweeper, job_worker],
    )
