"""The one list of served gRPC services. It drives servicer registration, server reflection,
health, the access rules read from the contracts (`AccessPolicy`), and the services Envoy
transcodes to REST. A new service is one `ServiceBinding` here (and its REST routes in
envoy/envoy.yaml.in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from switchboard.calling.v1 import calling_service_pb2, calling_service_pb2_grpc
from switchboard.common.v1 import (
    diagnostics_service_pb2,
    diagnostics_service_pb2_grpc,
    stream_tokens_service_pb2,
    stream_tokens_service_pb2_grpc,
    webhooks_service_pb2,
    webhooks_service_pb2_grpc,
)
from switchboard.communications.v1 import (
    communications_service_pb2,
    communications_service_pb2_grpc,
)
from switchboard.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from switchboard.messaging.v1 import messaging_service_pb2, messaging_service_pb2_grpc
from switchboard.sms.v1 import sms_service_pb2, sms_service_pb2_grpc
from switchboard.templates.v1 import templates_service_pb2, templates_service_pb2_grpc

from switchboard.server.calling.servicer import CallingServicer
from switchboard.server.communications.servicer import CommunicationsServicer
from switchboard.server.contacts.servicer import ContactsServicer
from switchboard.server.core.stream_tokens import StreamTokensServicer
from switchboard.server.delivery.routes import webhook_auth
from switchboard.server.delivery.webhooks import Webhooks
from switchboard.server.diagnostics.servicer import DiagnosticsServicer
from switchboard.server.messaging.servicer import MessagingServicer
from switchboard.server.sms.servicer import SmsServicer
from switchboard.server.templates.servicer import TemplatesServicer
from switchboard.server.webhooks.servicer import WebhooksServicer

if TYPE_CHECKING:  # the bindings build servicers from what the application composed
    from switchboard.server.app.server import Application


@dataclass(frozen=True)
class ServiceBinding:
    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    make_servicer: Callable[[Application], object]
    # REST clients of families A and C use the JSON names (camelCase); family B and the
    # catch-all route of envoy/envoy.yaml.in use the proto field names.
    snake_case_rest: bool = True

    @property
    def name(self) -> str:
        return str(self.descriptor.full_name)


def _service(module: Any, name: str) -> ServiceDescriptor:
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return descriptor


def _webhooks(app: Application) -> WebhooksServicer:
    webhooks = Webhooks(
        app.delivery.routes,
        webhook_auth(app.settings.routes),
        on_read=app.messaging.messages.mark_read,
    )
    return WebhooksServicer(webhooks)


BINDINGS: tuple[ServiceBinding, ...] = (
    ServiceBinding(
        _service(sms_service_pb2, "SmsService"),
        sms_service_pb2_grpc.add_SmsServiceServicer_to_server,
        lambda app: SmsServicer(app.sms),
        snake_case_rest=False,
    ),
    ServiceBinding(
        _service(contacts_service_pb2, "ContactsService"),
        contacts_service_pb2_grpc.add_ContactsServiceServicer_to_server,
        lambda app: ContactsServicer(app.contacts),
    ),
    ServiceBinding(
        _service(messaging_service_pb2, "MessagingService"),
        messaging_service_pb2_grpc.add_MessagingServiceServicer_to_server,
        lambda app: MessagingServicer(app.messaging),
    ),
    ServiceBinding(
        _service(diagnostics_service_pb2, "DiagnosticsService"),
        diagnostics_service_pb2_grpc.add_DiagnosticsServiceServicer_to_server,
        lambda app: DiagnosticsServicer(app.delivery.outbox, app.messaging.inbound),
    ),
    ServiceBinding(
        _service(webhooks_service_pb2, "WebhooksService"),
        webhooks_service_pb2_grpc.add_WebhooksServiceServicer_to_server,
        _webhooks,
    ),
    ServiceBinding(
        _service(calling_service_pb2, "CallingService"),
        calling_service_pb2_grpc.add_CallingServiceServicer_to_server,
        lambda app: CallingServicer(
            app.calling.calls, app.calling.bridges, app.calling.conferences, app.calling.feed
        ),
    ),
    ServiceBinding(
        _service(templates_service_pb2, "TemplatesService"),
        templates_service_pb2_grpc.add_TemplatesServiceServicer_to_server,
        lambda app: TemplatesServicer(app.templates),
        snake_case_rest=False,
    ),
    ServiceBinding(
        _service(communications_service_pb2, "CommunicationsService"),
        communications_service_pb2_grpc.add_CommunicationsServiceServicer_to_server,
        lambda app: CommunicationsServicer(app.communications),
        snake_case_rest=False,
    ),
    ServiceBinding(
        _service(stream_tokens_service_pb2, "StreamTokensService"),
        stream_tokens_service_pb2_grpc.add_StreamTokensServiceServicer_to_server,
        lambda app: StreamTokensServicer(app.tokens, app.clock),
    ),
)

SERVICES: tuple[ServiceDescriptor, ...] = tuple(b.descriptor for b in BINDINGS)
SNAKE_CASE_SERVICES = frozenset(b.name for b in BINDINGS if b.snake_case_rest)
#: What Envoy's transcoder maps to REST: every served service.
TRANSCODED_SERVICES: tuple[str, ...] = tuple(b.name for b in BINDINGS)
