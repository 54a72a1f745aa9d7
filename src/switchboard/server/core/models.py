"""Imports every table so that `SQLModel.metadata` is complete (migrations, tests)."""

from sqlmodel import SQLModel

from switchboard.server.core.events import EventRecord
from switchboard.server.orgs.models import Application, Org
from switchboard.server.sms.models import SmsRecord

metadata = SQLModel.metadata

__all__ = ["Application", "EventRecord", "Org", "SmsRecord", "metadata"]
