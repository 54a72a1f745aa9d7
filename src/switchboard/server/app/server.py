"""The composition root: builds every domain from settings (app/compose/), then serves the
registry's services (app/services.py) over the gRPC transport (app/grpc_server.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from switchboard.server.app.compose.calling import build_calling
from switchboard.server.app.compose.communications import build_communications
from switchboard.server.app.compose.contacts import build_contacts
from switchboard.server.app.compose.core import Core
from switchboard.server.app.compose.messaging import build_messaging
from switchboard.server.app.compose.sms import build_sms
from switchboard.server.app.compose.templates import build_templates
from switchboard.server.app.config import Settings
from switchboard.server.app.grpc_server import METADATA_LIMIT, GrpcServer
from switchboard.server.app.services import BINDINGS, SERVICES, SNAKE_CASE_SERVICES
from switchboard.server.attachments.files import ContentDirectory
from switchboard.server.attachments.store import AttachmentStore
from switchboard.server.calling.domain import CallingDomain
from switchboard.server.communications.domain import CommunicationsDomain
from switchboard.server.contacts.domain import ContactsDomain
from switchboard.server.core.auth import TokenService
from switchboard.server.core.clock import Clock, clock_with_offset
from switchboard.server.core.db import Database, create_engine
from switchboard.server.core.events import EventBus, EventFeed, EventLog
from switchboard.server.core.lifecycle import BackgroundWorker
from switchboard.server.core.ratelimit import DatabaseBuckets, RateLimit, RateLimiter
from switchboard.server.core.writer import Writer
from switchboard.server.delivery.engine import DeliveryEngine
from switchboard.server.delivery.policies import Policies
from switchboard.server.delivery.routes import build_routes
from switchboard.server.messaging.domain import MessagingDomain
from switchboard.server.messaging.requests.messages import MessageService
from switchboard.server.migrations import migrate
from switchboard.server.providers.base import ChannelProvider, SmsProvider
from switchboard.server.providers.channels import SmsChannel
from switchboard.server.sms.service import SmsService
from switchboard.server.templates.domain import TemplatesDomain

log = logging.getLogger("switchboard.server")

__all__ = [
    "METADATA_LIMIT",
    "SERVICES",
    "SNAKE_CASE_SERVICES",
    "Application",
    "build_application",
    "serve",
]


@dataclass
class Application:
    """Everything one server process runs, started and stopped together."""

    settings: Settings
    db: Database
    clock: Clock
    tokens: TokenService
    bus: EventBus
    events: EventLog
    writer: Writer
    feed: EventFeed
    limiter: RateLimiter
    sms: SmsService
    delivery: DeliveryEngine
    contacts: ContactsDomain
    templates: TemplatesDomain
    communications: CommunicationsDomain
    messaging: MessagingDomain
    calling: CallingDomain
    grpc: GrpcServer

    @property
    def port(self) -> int:
        """The bound gRPC port (after `start`)."""
        return self.grpc.port

    @property
    def workers(self) -> list[BackgroundWorker]:
        return [*self.contacts.workers, *self.messaging.workers]

    async def start(self) -> None:
        """Migrate, start workers, then serve on settings.grpc_host:grpc_port (0 = any free)."""
        await migrate.upgrade(self.db.engine)
        if self.db.dialect == "postgresql":
            await self.bus.listen_postgres(self.db.engine)
        self.writer.start()
        await self.delivery.start()
        for worker in self.workers:
            await worker.start()
        await self.calling.calls.start()  # after the reference data: calls need voice senders
        await self.limiter.start()
        served = [(binding, binding.make_servicer(self)) for binding in BINDINGS]
        await self.grpc.start(self.settings.grpc_host, self.settings.grpc_port, served)

    async def stop(self) -> None:
        """Drain: report NOT_SERVING, let in-flight RPCs finish, then stop the workers. Streams
        are told `stream.closing` (with their resume cursor) first: they would never finish."""
        await self.feed.hub.close()
        await self.grpc.stop(self.settings.drain_seconds)
        await self.limiter.stop()
        await self.delivery.stop()
        await self.calling.calls.stop()
        for worker in reversed(self.workers):
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
    events = EventLog()
    core = Core(
        db=db,
        clock=clock,
        bus=bus,
        events=events,
        feed=EventFeed(
            db,
            events,
            bus,
            clock,
            settings.stream_poll_seconds,
            buffer_events=settings.stream_buffer_events,
        ),
        writer=Writer(db, max_batch=settings.group_commit_max_batch),
        store=AttachmentStore(db, ContentDirectory(settings.resolved_attachment_dir())),
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
    sms = build_sms(core, settings)
    contacts = build_contacts(core, settings)
    templates = build_templates(core)
    # Messages first: a click on a tracked link (communications' short URLs) converts one.
    messages = MessageService(db=db, events=events, clock=clock)
    communications = build_communications(
        core,
        settings,
        templates=templates.templates,
        types=templates.types,
        consent=contacts.consent,
        on_message_click=messages.convert_by_click,
        providers=communication_providers,
    )
    messaging = build_messaging(
        core,
        settings,
        messages=messages,
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
        writer=core.writer,
        bus=bus,
        clock=clock,
        policies=Policies(messaging.reference.class_policies),
        routes=routes,
        ledgers=[sms.ledger, communications.ledger, messaging.ledger],
        inbound=messaging.inbound.receive,
        poll_seconds=settings.dispatcher_poll_seconds,
        batch_size=settings.dispatcher_batch,
        max_attempts=settings.dispatcher_max_attempts,
        retry_base_seconds=settings.dispatcher_retry_base_seconds,
    )
    return Application(
        settings=settings,
        db=db,
        clock=clock,
        tokens=tokens,
        bus=bus,
        events=events,
        writer=core.writer,
        feed=core.feed,
        limiter=limiter,
        sms=sms.service,
        delivery=delivery,
        contacts=contacts,
        templates=templates,
        communications=communications,
        messaging=messaging,
        calling=build_calling(core, contacts=contacts, messaging=messaging),
        grpc=GrpcServer(tokens, limiter),
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
