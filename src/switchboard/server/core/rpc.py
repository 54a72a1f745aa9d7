"""The RPC gateway: one interceptor for authentication, request ids and error mapping.

Every RPC passes here, whether it came natively or transcoded by Envoy, so REST and gRPC
clients get the same rules. Access rules are read from the contract (`switchboard.common.v1.access`
method option); health and reflection are public, anything else needs a valid bearer token.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from switchboard.common.v1 import access_pb2

from switchboard.server.core import context as rpc_context
from switchboard.server.core.auth import Principal, Role, TokenService, bearer_token
from switchboard.server.core.errors import (
    DomainError,
    PermissionDenied,
    internal_status,
    to_rpc_status,
    validation_error,
)
from switchboard.server.core.json_fields import JSON_FIELDS_HEADER, JSON_KIND_HEADER, BodyShape

log = logging.getLogger("switchboard.rpc")

PUBLIC_SERVICE_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_ROLE_BY_PROTO = {
    access_pb2.ROLE_CLIENT: Role.CLIENT,
    access_pb2.ROLE_PARTNER: Role.PARTNER,
    access_pb2.ROLE_ADMIN: Role.ADMIN,
}


class AccessPolicy:
    """Method path → who may call it and what its REST body may hold, from the descriptors."""

    def __init__(self, services: Iterable[ServiceDescriptor]) -> None:
        self._public: set[str] = set()
        self._roles: dict[str, frozenset[Role]] = {}
        self._bodies: dict[str, BodyShape] = {}
        for service in services:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                self._bodies[path] = BodyShape(method)
                rule = method.GetOptions().Extensions[access_pb2.access]
                if rule.public:
                    self._public.add(path)
                else:
                    self._roles[path] = frozenset(_ROLE_BY_PROTO[r] for r in rule.roles)

    def is_public(self, method: str) -> bool:
        return method in self._public or method.startswith(PUBLIC_SERVICE_PREFIXES)

    def authorize(self, method: str, principal: Principal) -> None:
        allowed = self._roles.get(method, frozenset())
        if allowed and not (allowed & principal.roles):
            names = ", ".join(sorted(r.value for r in allowed))
            raise PermissionDenied(f"this operation requires one of the roles: {names}")

    def check_body_fields(self, method: str, metadata: Any) -> None:
        """REST bodies only (the edge lists their keys and names a top level that is not an
        object): refuse keys the request lacks, and null/array/scalar bodies."""
        shape = self._bodies.get(method)
        if shape is None:
            return
        kind = _metadata_value(metadata, JSON_KIND_HEADER)
        wrong = shape.not_an_object(kind) if kind else None
        if wrong is not None:
            raise validation_error([wrong])
        listed = _metadata_value(metadata, JSON_FIELDS_HEADER)
        violations = shape.unknown_fields(listed) if listed is not None else []
        if violations:
            raise validation_error(violations)


def _metadata_value(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class RpcGateway(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: TokenService, policy: AccessPolicy) -> None:
        self._tokens = tokens
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        # Health and reflection pass untouched; public RPCs of the contract (`access.public`)
        # skip the token but keep the rest: error mapping, response headers, body checks.
        if handler is None or method.startswith(PUBLIC_SERVICE_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        call = _Call(self, method, metadata)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=call.wrap_unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=call.wrap_stream(handler.unary_stream))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=call.wrap_unary(handler.stream_unary))
        # Bidirectional streams are not part of the contract: refuse rather than run unguarded.
        return None

    def admit(self, method: str, metadata: Any) -> Principal | None:
        """Who is calling, if they may, with a request whose body names only known fields.
        None for a public RPC, which needs no token."""
        if self._policy.is_public(method):
            self._policy.check_body_fields(method, metadata)
            return None
        principal = self._tokens.verify(bearer_token(_metadata_value(metadata, "authorization")))
        self._policy.authorize(method, principal)
        self._policy.check_body_fields(method, metadata)
        return principal


class _Call:
    """One call's wrapping: sets the request context, maps errors, logs the outcome."""

    def __init__(self, gateway: RpcGateway, method: str, metadata: Any) -> None:
        self.gateway = gateway
        self.method = method
        self.metadata = metadata
        self.request_id = _metadata_value(metadata, "x-request-id") or uuid.uuid4().hex

    def _enter(self) -> None:
        rpc_context.request_id.set(self.request_id)
        rpc_context.set_principal(self.gateway.admit(self.method, self.metadata))

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception, start: float) -> None:
        elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
        where = {"method": self.method, "ms": elapsed_ms, "request_id": self.request_id}
        if isinstance(exc, DomainError):
            status = to_rpc_status(exc)
            log.info("rpc failed: %s", status.details, extra={**where, "code": status.code.name})
        else:
            status = internal_status()
            log.exception("rpc crashed", extra=where)
        await context.abort_with_status(status)

    def wrap_unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        # Also wraps client-streaming handlers: `request` is then the request iterator.
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                self._enter()
                response = await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._fail(context, exc, start)
                raise  # abort_with_status always raises; this keeps the type checker honest
            headers = rpc_context.take_response_headers()
            if headers:
                await context.send_initial_metadata(tuple(headers.items()))
            log.debug("rpc ok", extra={"method": self.method, "request_id": self.request_id})
            return response

        return unary

    def wrap_stream(
        self, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                self._enter()
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._fail(context, exc, start)
                raise

        return stream
