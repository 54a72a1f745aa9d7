"""Builds the calling domain on the sandbox carrier: calls, bridges and conferences."""

from __future__ import annotations

from switchboard.server.app.compose.core import Core
from switchboard.server.calling.audio import AttachmentAudio
from switchboard.server.calling.bridges import BridgeService
from switchboard.server.calling.conferences import ConferenceService
from switchboard.server.calling.domain import CallingDomain
from switchboard.server.calling.sandbox import SandboxCarrier
from switchboard.server.calling.service import CallService
from switchboard.server.contacts.domain import ContactsDomain
from switchboard.server.messaging.domain import MessagingDomain


def build_calling(
    core: Core, *, contacts: ContactsDomain, messaging: MessagingDomain
) -> CallingDomain:
    db, events, clock = core.db, core.events, core.clock
    audio = AttachmentAudio(db, core.store)
    carrier = SandboxCarrier(clock, resolve_audio=audio.any_org)
    calls = CallService(
        db=db,
        events=events,
        clock=clock,
        carrier=carrier,
        senders=messaging.senders,  # calls use voice senders
        rates=messaging.rates,  # one rate table for messages and calls
        contacts=contacts.directory,  # to dial a contact by id
        writer=core.writer,
        audio=audio,
    )
    return CallingDomain(
        calls=calls,
        bridges=BridgeService(db=db, events=events, clock=clock, carrier=carrier, calls=calls),
        conferences=ConferenceService(
            db=db, events=events, clock=clock, carrier=carrier, calls=calls
        ),
        feed=core.feed,
    )
