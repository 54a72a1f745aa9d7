"""Builds the templates domain: communication types, templates, examples and deployment."""

from __future__ import annotations

from switchboard.server.app.compose.core import Core
from switchboard.server.templates.deployment import DeploymentService
from switchboard.server.templates.domain import TemplatesDomain
from switchboard.server.templates.examples import ExampleService
from switchboard.server.templates.repository import TemplateRepository
from switchboard.server.templates.service import CommunicationTypeService, TemplateService


def build_templates(core: Core) -> TemplatesDomain:
    db, events, clock = core.db, core.events, core.clock
    repository = TemplateRepository()
    types = CommunicationTypeService(db, events, clock, repository)
    templates = TemplateService(db, events, clock, types, repository)
    examples = ExampleService(db, events, clock, types, repository)
    deployment = DeploymentService(db, events, clock, types, templates, examples, repository)
    return TemplatesDomain(
        types=types, templates=templates, examples=examples, deployment=deployment
    )
