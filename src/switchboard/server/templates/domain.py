"""The templates domain's services as its servicer reaches them.

Built by app/compose/templates.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.server.templates.deployment import DeploymentService
from switchboard.server.templates.examples import ExampleService
from switchboard.server.templates.service import CommunicationTypeService, TemplateService


@dataclass
class TemplatesDomain:
    types: CommunicationTypeService
    templates: TemplateService
    examples: ExampleService
    deployment: DeploymentService
