"""Builds the event handlers (signed webhooks): the service the messaging API exposes and the
dispatcher worker that delivers them."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.server.app.compose.core import Core
from switchboard.server.app.config import Settings
from switchboard.server.event_handlers.dispatcher import DispatchSettings, WebhookDispatcher
from switchboard.server.event_handlers.patterns import ChannelScope
from switchboard.server.event_handlers.service import EventHandlerService
from switchboard.server.event_handlers.signing import SecretBox


@dataclass(frozen=True)
class EventHandlers:
    service: EventHandlerService
    dispatcher: WebhookDispatcher


def build_event_handlers(
    core: Core, settings: Settings, channel_scope: ChannelScope
) -> EventHandlers:
    box = SecretBox(settings.sealing_secret())
    service = EventHandlerService(
        db=core.db,
        events=core.events,
        clock=core.clock,
        box=box,
        allow_private_urls=settings.webhooks_allow_private_urls,
    )
    dispatcher = WebhookDispatcher(
        channel_scope=channel_scope,
        db=core.db,
        events=core.events,
        bus=core.bus,
        clock=core.clock,
        box=box,
        settings=DispatchSettings(
            allow_private_urls=settings.webhooks_allow_private_urls,
            attempt_timeout=settings.webhooks_attempt_timeout_seconds,
            schedule=tuple(settings.webhooks_retry_schedule_seconds),
            jitter=settings.webhooks_retry_jitter,
            disable_after=settings.webhooks_disable_after_seconds,
            max_in_flight=settings.webhooks_max_in_flight,
            per_handler=settings.webhooks_max_in_flight_per_handler,
            poll_seconds=settings.webhooks_poll_seconds,
        ),
    )
    return EventHandlers(service=service, dispatcher=dispatcher)
