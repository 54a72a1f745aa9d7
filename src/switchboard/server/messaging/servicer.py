"""gRPC ⇄ domain for MessagingService: one class assembled from per-area RPC mixins."""

from __future__ import annotations

from switchboard.messaging.v1 import messaging_service_pb2_grpc

from switchboard.server.messaging.content.rpc import ContentRpcs
from switchboard.server.messaging.domain import MessagingDomain
from switchboard.server.messaging.events import EventRpcs
from switchboard.server.messaging.hooks.rpc import EventHandlerRpcs
from switchboard.server.messaging.requests.rpc import MessageRpcs
from switchboard.server.messaging.senders.rpc import SenderRpcs


class MessagingServicer(
    SenderRpcs,
    ContentRpcs,
    MessageRpcs,
    EventHandlerRpcs,
    EventRpcs,
    messaging_service_pb2_grpc.MessagingServiceServicer,
):
    """Each area's RPCs live in a mixin module (rpc_*.py) listed as a base here, before the
    generated base."""

    def __init__(self, domain: MessagingDomain) -> None:
        self.domain = domain
