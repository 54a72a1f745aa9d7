"""Builds the SMS API: its service and its delivery ledger."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.server.app.compose.core import Core
from switchboard.server.app.config import Settings
from switchboard.server.sms.ledger import SmsLedger
from switchboard.server.sms.repository import SmsRepository
from switchboard.server.sms.service import SmsLimits, SmsService


@dataclass(frozen=True)
class SmsDomain:
    service: SmsService
    ledger: SmsLedger


def build_sms(core: Core, settings: Settings) -> SmsDomain:
    repository = SmsRepository()
    service = SmsService(
        db=core.db,
        repository=repository,
        events=core.events,
        feed=core.feed,
        clock=core.clock,
        limits=SmsLimits(
            max_content_length=settings.sms_max_content_length,
            max_batch=settings.sms_max_batch,
            default_region=settings.sms_default_region,
        ),
        writer=core.writer,
    )
    return SmsDomain(service=service, ledger=SmsLedger(repository, core.events))
