"""Builds the templates domain: communication types, templates, examples and deployment."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventLog
from switchboard.server.templates.deployment import DeploymentService
from switchboard.server.templates.examples import ExampleService
from switchboard.server.templates.repository import TemplateRepository
from switchboard.server.templates.service import CommunicationTypeService, TemplateService


@dataclass
class TemplatesDomain:
    """Every service of the domain; the servicer's RPC mixins reach them through this."""

    types: CommunicationTypeService
    templates: TemplateService
    examples: ExampleService
    deployment: DeploymentService


def build_templates_domain(*, db: Database, events: EventLog, clock: Clock) -> TemplatesDomain:
    repository = TemplateRepository()
    types = CommunicationTypeService(db, events, clock, repository)
    templates = TemplateService(db, events, clock, types, repository)
    examples = ExampleService(db, events, clock, types, repository)
    deployment = DeploymentService(db, events, clock, types, templates, examples, repository)
    return TemplatesDomain(
        types=types, templates=templates, examples=examples, deployment=deployment
    )
