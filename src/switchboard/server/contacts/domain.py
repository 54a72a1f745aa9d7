"""The contacts domain's services as its RPC mixins reach them.

Built by app/compose/contacts.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.server.contacts.consent import ConsentService
from switchboard.server.contacts.directory import ContactDirectory
from switchboard.server.contacts.fast_access import FastAccessService
from switchboard.server.contacts.groups import GroupService
from switchboard.server.contacts.jobs import ContactJobService
from switchboard.server.contacts.service import ContactService
from switchboard.server.contacts.tokens import AccessTokenService, ApplicationTokenService
from switchboard.server.core.clock import Clock
from switchboard.server.core.events import EventFeed
from switchboard.server.core.lifecycle import BackgroundWorker


@dataclass
class ContactsDomain:
    clock: Clock
    feed: EventFeed
    contacts: ContactService
    groups: GroupService
    fast_access: FastAccessService
    consent: ConsentService
    access_tokens: AccessTokenService
    application_tokens: ApplicationTokenService
    jobs: ContactJobService
    # What messaging and calling read of contacts (their ContactLookup, ContactReader and
    # ContactNumbers ports).
    directory: ContactDirectory
    workers: list[BackgroundWorker] = field(default_factory=list)
