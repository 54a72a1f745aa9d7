"""The gRPC transport: server options, the gateway interceptor, registration of every service
of the registry (app/services.py), reflection and health. What is served is composed elsewhere
(app/server.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from switchboard.server.app.services import SNAKE_CASE_SERVICES, ServiceBinding
from switchboard.server.core.auth import TokenService
from switchboard.server.core.ratelimit import RateLimiter
from switchboard.server.core.rpc import AccessPolicy, RpcGateway

log = logging.getLogger("switchboard.server")

#: Largest request metadata the server takes (see the server options).
METADATA_LIMIT = 128 * 1024

_OPTIONS = [
    ("grpc.max_concurrent_streams", 1000),
    # Whatever the edge lets through must fit: a REST request head of up to 60 KiB (edge.lua
    # answers 431 past it), plus the body's key list (up to 8 KiB) and Envoy's own headers.
    # Refused here it would be a confusing 429 for one client.
    ("grpc.max_metadata_size", METADATA_LIMIT),
    ("grpc.absolute_max_metadata_size", METADATA_LIMIT),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
]


class GrpcServer:
    def __init__(self, tokens: TokenService, limiter: RateLimiter) -> None:
        self._tokens = tokens
        self._limiter = limiter
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(
        self, host: str, port: int, services: Sequence[tuple[ServiceBinding, object]]
    ) -> int:
        """Serve `services` (each binding with its servicer) on host:port (0 = any free)."""
        descriptors = [binding.descriptor for binding, _ in services]
        gateway = RpcGateway(
            self._tokens,
            AccessPolicy(descriptors, snake_case_services=SNAKE_CASE_SERVICES),
            self._limiter,
        )
        server = grpc.aio.server(interceptors=[gateway], options=_OPTIONS)
        for binding, servicer in services:
            binding.add_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [binding.name for binding, _ in services]
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection([*names, health_name, reflection.SERVICE_NAME], server)
        address = f"{host}:{port}"
        self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC on {address}")
        await server.start()
        self.server = server
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving gRPC", extra={"address": f"{host}:{self.port}"})
        return self.port

    async def stop(self, grace_seconds: float) -> None:
        """Report NOT_SERVING, then let in-flight RPCs finish for up to `grace_seconds`."""
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace_seconds)
