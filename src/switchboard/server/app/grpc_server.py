"""The gRPC transport: server options, the gateway interceptor, registration of every service
of the registry (app/services.py), reflection and health. What is served is composed elsewhere
(app/server.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

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


#: The current reflection service, asked first by grpcurl, Postman and grpc-js clients. Its
#: messages are wire-identical to v1alpha's, which is all the installed grpcio-reflection has.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _describe_reflection_v1() -> None:
    """Put a descriptor of grpc.reflection.v1 in the default pool (v1alpha's under v1's names),
    so reflection can describe the v1 service it lists. Skipped when the pool has one."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_REFLECTION_V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", ".grpc.reflection.v1."
    file.name, file.package = _REFLECTION_V1_FILE, "grpc.reflection.v1"
    file.ClearField("options")
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(file.SerializeToString())


def _add_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection as v1alpha and as v1: one servicer, v1alpha (de)serializers for both."""
    _describe_reflection_v1()
    servicer = reflection.aio.ReflectionServicer([*service_names, REFLECTION_V1])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": info}),)
    )


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
        _add_reflection([*names, health_name, reflection.SERVICE_NAME], server)
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
