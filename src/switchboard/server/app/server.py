"""Process wiring: builds the services from settings and serves them over gRPC."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from switchboard.calling.v1 import calling_service_pb2, calling_service_pb2_grpc
from switchboard.common.v1 import (
    diagnostics_service_pb2,
    diagnostics_service_pb2_grpc,
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

from switchboard.server.app.config import Settings
from switchboard.server.calling.audio import AttachmentAudio
from switchboard.server.calling.bridges import BridgeService
from switchboard.server.calling.conferences import ConferenceService
from switchboard.server.calling.sandbox import SandboxCarrier
from switchboard.server.calling.service import CallService
from switchboard.server.calling.servicer import CallingServicer
from switchboard.server.communications.servicer import CommunicationsServicer
from switchboard.server.communications.wiring import (
    CommunicationsDomain,
    build_communications_domain,
)
from switchboard.server.contacts.servicer import ContactsServicer
from switchboard.server.contacts.wiring import ContactsDomain, build_contacts_domain
from switchboard.server.core.auth import TokenService
from switchboard.server.core.clock import Clock, clock_with_offset
from switchboard.server.core.db import Database, create_engine
from switchboard.server.core.events import EventBus, EventFeed, EventLog
from switchboard.server.core.ratelimit import DatabaseBuckets, RateLimit, RateLimiter
from switchboard.server.core.rpc import AccessPolicy, RpcGateway
from switchboard.server.core.writer import Writer
from switchboard.server.delivery.engine import DeliveryEngine
from switchboard.server.delivery.policies import Policies
from switchboard.server.delivery.routes import build_routes, webhook_auth
from switchboard.server.delivery.webhooks import Webhooks
from switchboard.server.diagnostics.servicer import DiagnosticsServicer
from switchboard.server.messaging.servicer import MessagingServicer
from switchboard.server.messaging.wiring import MessagingDomain, build_messaging_domain
from switchboard.server.migrations import migrate
from switchboard.server.providers.base import ChannelProvider, SmsProvider
from switchboard.server.providers.channels import SmsChannel
from switchboard.server.sms.ledger import SmsLedger
from switchboard.server.sms.repository import SmsRepository
from switchboard.server.sms.service import SmsLimits, SmsService
from switchboard.server.sms.servicer import SmsServicer
from switchboard.server.templates.service import CommunicationTypeService, TemplateService
from switchboard.server.templates.servicer import TemplatesServicer
from switchboard.server.templates.wiring import TemplatesDomain, build_templates_domain
from switchboard.server.webhooks.servicer import WebhooksServicer

log = logging.getLogger("switchboard.server")

#: Largest request metadata the server takes (see the server options).
METADATA_LIMIT = 128 * 1024

SERVICES = (
    sms_service_pb2.DESCRIPTOR.services_by_name["SmsService"],
    contacts_service_pb2.DESCRIPTOR.services_by_name["ContactsService"],
    messaging_service_pb2.DESCRIPTOR.services_by_name["MessagingService"],
    diagnostics_service_pb2.DESCRIPTOR.services_by_name["DiagnosticsService"],
    webhooks_service_pb2.DESCRIPTOR.services_by_name["WebhooksService"],
    calling_service_pb2.DESCRIPTOR.services_by_name["CallingService"],
    templates_service_pb2.DESCRIPTOR.services_by_name["TemplatesService"],
    communications_service_pb2.DESCRIPTOR.services_by_name["CommunicationsService"],
)
# Services whose REST clients write and read proto field names (family B and the catch-all route
# of envoy/envoy.yaml.in); the others' (families A and C) use the JSON names.
SNAKE_CASE_SERVICES = frozenset(
    s.full_name
    for s in SERVICES
    if s.full_name
    not in {
        "switchboard.sms.v1.SmsService",
        "switchboard.templates.v1.TemplatesService",
        "switchboard.communications.v1.CommunicationsService",
    }
)


@dataclass
class Application:
    """Everything one server process runs, started and stopped together."""

    settings: Settings
    db: Database
    clock: Clock
    tokens: TokenService
    bus: EventBus
    writer: Writer
    sms: SmsService
    delivery: DeliveryEngine
    contacts: ContactsDomain
    templates_domain: TemplatesDomain
    templates: TemplateService  # stable templates, for the communications domain
    types: CommunicationTypeService  # communication types, for the communications domain
    communications: CommunicationsDomain
    messaging: MessagingDomain
    calls: CallService
    bridges: BridgeService
    conferences: ConferenceService
    feed: EventFeed
    limiter: RateLimiter
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    server: grpc.aio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        """Migrate, start workers, then serve on settings.grpc_host:grpc_port (0 = any free)."""
        await migrate.upgrade(self.db.engine)
        if self.db.dialect == "postgresql":
            await self.bus.listen_postgres(self.db.engine)
        self.writer.start()
        await self.delivery.start()
        for worker in [*self.contacts.workers, *self.messaging.workers]:
            await worker.start()
        await self.calls.start()  # after the reference data: calls need voice senders
        await self.limiter.start()
        server = grpc.aio.server(
            interceptors=[
                RpcGateway(
                    self.tokens,
                    AccessPolicy(SERVICES, snake_case_services=SNAKE_CASE_SERVICES),
                    self.limiter,
                )
            ],
            options=[
                ("grpc.max_concurrent_streams", 1000),
                # Whatever the edge lets through must fit: a REST request head of up to 60 KiB
                # (edge.lua answers 431 past it), plus the body's key list (up to 8 KiB) and
                # Envoy's own headers. Refused here it would be a confusing 429 for one client.
                ("grpc.max_metadata_size", METADATA_LIMIT),
                ("grpc.absolute_max_metadata_size", METADATA_LIMIT),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ],
        )
        sms_service_pb2_grpc.add_SmsServiceServicer_to_server(SmsServicer(self.sms), server)
        contacts_service_pb2_grpc.add_ContactsServiceServicer_to_server(
            ContactsServicer(self.contacts), server
        )
        messaging_service_pb2_grpc.add_MessagingServiceServicer_to_server(
            MessagingServicer(self.messaging), server
        )
        diagnostics_service_pb2_grpc.add_DiagnosticsServiceServicer_to_server(
            DiagnosticsServicer(self.delivery.outbox, self.messaging.inbound), server
        )
        webhooks = Webhooks(
            self.delivery.routes,
            webhook_auth(self.settings.routes),
            on_read=self.messaging.messages.mark_read,
        )
        webhooks_service_pb2_grpc.add_WebhooksServiceServicer_to_server(
            WebhooksServicer(webhooks), server
        )
        calling_service_pb2_grpc.add_CallingServiceServicer_to_server(
            CallingServicer(self.calls, self.bridges, self.conferences, self.feed), server
        )
        templates_service_pb2_grpc.add_TemplatesServiceServicer_to_server(
            TemplatesServicer(self.templates_domain), server
        )
        communications_service_pb2_grpc.add_CommunicationsServiceServicer_to_server(
            CommunicationsServicer(self.communications), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [s.full_name for s in SERVICES]
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection([*names, health_name, reflection.SERVICE_NAME], server)
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC on {address}")
        await server.start()
        self.server = server
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving gRPC", extra={"address": f"{self.settings.grpc_host}:{self.port}"})

    async def stop(self) -> None:
        """Drain: report NOT_SERVING, let in-flight RPCs finish, then stop the workers."""
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.settings.drain_seconds)
        await self.limiter.stop()
        await self.delivery.stop()
        await self.calls.stop()
        for worker in reversed([*self.contacts.workers, *self.messaging.workers]):
            await worker.stop()
        await self.writer.stop()
        await self.bus.close()
        await self.db.dispose()
        log.info("stopped")


def build_application(
    settings: Settings,
    clock: Clock | None = None,
    providers: dict[str, SmsProvider] | None = None,
    communication_providers: Mapping[str, ChannelProvider] | None = None,
) -> Application:
    """Everything a server process runs. Delivery routes come from SWITCHBOARD_ROUTES (sandboxes
    by default); `providers` replaces SMS API channels' (smpp, clickatell, grandcom) with these
    SMS providers, `communication_providers` the communications channels' (sms, email,
    whatsapp)."""
    clock = clock or clock_with_offset(settings.clock_offset_seconds)
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    db = Database(engine, sqlite_synchronous=settings.sqlite_synchronous)
    bus = EventBus()
    db.on_events_committed = bus.notify
    writer = Writer(db, max_batch=settings.group_commit_max_batch)
    events = EventLog()
    feed = EventFeed(db, events, bus, clock, settings.stream_poll_seconds)
    repository = SmsRepository()
    sms = SmsService(
        db=db,
        repository=repository,
        events=events,
        feed=feed,
        clock=clock,
        limits=SmsLimits(
            max_content_length=settings.sms_max_content_length,
            max_batch=settings.sms_max_batch,
            default_region=settings.sms_default_region,
        ),
        writer=writer,
    )
    tokens = TokenService(settings.resolved_jwt_secret(), clock, settings.jwt_public_key_file)
    # One process on SQLite: exact buckets in memory. PostgreSQL (replicas): shared buckets.
    limiter = RateLimiter(
        clock,
        per_token=RateLimit.per_second(
            settings.rate_limit_per_token, settings.rate_limit_per_token_burst
        ),
        per_org=RateLimit.per_second(
            settings.rate_limit_per_org, settings.rate_limit_per_org_burst
        ),
        store=DatabaseBuckets(db) if db.dialect == "postgresql" else None,
        lease_seconds=settings.rate_limit_lease_seconds,
    )
    contacts = build_contacts_domain(
        db=db, events=events, feed=feed, bus=bus, clock=clock, settings=settings
    )
    templates_domain = build_templates_domain(db=db, events=events, clock=clock)
    communications = build_communications_domain(
        db=db,
        events=events,
        feed=feed,
        bus=bus,
        clock=clock,
        settings=settings,
        templates=templates_domain.templates,
        types=templates_domain.types,
        consent=contacts.consent,
        providers=communication_providers,
    )
    messaging = build_messaging_domain(
        db=db,
        events=events,
        feed=feed,
        bus=bus,
        clock=clock,
        settings=settings,
        contacts=contacts,
        short_urls=communications.short_urls,
    )
    # Every route is a sandbox unless SWITCHBOARD_ROUTES configures it; callers (tests) may
    # replace the SMS API's channels and the communications' channels with providers of theirs.
    routes = build_routes(settings.routes, settings.sandbox_delivery_delay)
    wrapped: dict[int, SmsChannel] = {}
    for name, provider in (providers or {}).items():
        routes[name] = wrapped.setdefault(id(provider), SmsChannel(provider, route=name))
    routes.update(communications.providers)
    delivery = DeliveryEngine(
        db=db,
        writer=writer,
        bus=bus,
        clock=clock,
        policies=Policies(messaging.reference.class_policies),
        routes=routes,
        ledgers=[SmsLedger(repository, events), communications.ledger, messaging.ledger],
        inbound=messaging.inbound.receive,
        poll_seconds=settings.dispatcher_poll_seconds,
        batch_size=settings.dispatcher_batch,
        max_attempts=settings.dispatcher_max_attempts,
        retry_base_seconds=settings.dispatcher_retry_base_seconds,
    )
    audio = AttachmentAudio(db, contacts.jobs.store)
    carrier = SandboxCarrier(clock, resolve_audio=audio.any_org)
    calls = CallService(
        db=db,
        events=events,
        clock=clock,
        carrier=carrier,
        senders=messaging.senders,
        rates=messaging.rates,  # one rate table for messages and calls
        writer=writer,
        audio=audio,
    )
    bridges = BridgeService(db=db, events=events, clock=clock, carrier=carrier, calls=calls)
    conferences = ConferenceService(db=db, events=events, clock=clock, carrier=carrier, calls=calls)
    return Application(
        settings=settings,
        db=db,
        clock=clock,
        tokens=tokens,
        writer=writer,
        bus=bus,
        sms=sms,
        delivery=delivery,
        contacts=contacts,
        templates_domain=templates_domain,
        templates=templates_domain.templates,
        types=templates_domain.types,
        communications=communications,
        messaging=messaging,
        calls=calls,
        bridges=bridges,
        conferences=conferences,
        feed=feed,
        limiter=limiter,
    )


async def wait_for_shutdown_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: Settings) -> None:
    app = build_application(settings)
    await app.start()
    try:
        await wait_for_shutdown_signal()
    finally:
        await app.stop()
