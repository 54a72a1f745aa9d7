"""WebhooksService: provider callbacks over HTTP (see delivery/webhooks.py for the rules)."""

from __future__ import annotations

import grpc
from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from switchboard.common.v1 import webhooks_service_pb2 as pb
from switchboard.common.v1 import webhooks_service_pb2_grpc

from switchboard.server.delivery.webhooks import Webhooks


class WebhooksServicer(webhooks_service_pb2_grpc.WebhooksServiceServicer):
    def __init__(self, webhooks: Webhooks) -> None:
        self._webhooks = webhooks

    async def ReceiveWebhook(
        self, request: pb.ReceiveWebhookRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        headers = {key.lower(): str(value) for key, value in context.invocation_metadata() or ()}
        await self._webhooks.receive(request.route, request.body.data, headers, request.token)
        return empty_pb2.Empty()

    async def VerifyWebhook(
        self, request: pb.VerifyWebhookRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        hub = request.hub
        challenge = self._webhooks.verify(request.route, hub.mode, hub.verify_token, hub.challenge)
        return httpbody_pb2.HttpBody(content_type="text/plain", data=challenge.encode())
