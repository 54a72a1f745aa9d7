"""The RPC gateway: one interceptor for authentication, request ids and error mapping.

Every RPC passes here, whether it came natively or transcoded by Envoy, so REST and gRPC
clients get the same rules. Access rules are read from the contract (`switchboard.common.v1.access`
method option, else the service's `default_access`); health and reflection are public, anything
else needs a valid bearer token, and counts against its token's and org's request-rate limits
(`core/ratelimit.py`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions, ServiceOptions
from switchboard.common.v1 import access_pb2

from switchboard.server.core import context as rpc_context
from switchboard.server.core.auth import (
    Principal,
    Role,
    TokenService,
    bearer_token,
    is_stream_method,
)
from switchboard.server.core.errors import (
    DomainError,
    PermissionDenied,
    TooManyRequests,
    Unauthenticated,
    internal_status,
    to_rpc_status,
    validation_error,
)
from switchboard.server.core.json_fields import JSON_FIELDS_HEADER, BodyShape
from switchboard.server.core.ratelimit import RateLimiter
from switchboard.server.core.requests import RequestReader, RequestShape

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


def access_rule(service: ServiceOptions, method: MethodOptions) -> access_pb2.AccessRule:
    """The RPC's own `access` option if it has one (whole: nothing of the default is merged in),
    else its service's `default_access`; neither gives the empty rule (any authenticated token)."""
    if method.HasExtension(access_pb2.access):
        return method.Extensions[access_pb2.access]
    return service.Extensions[access_pb2.default_access]


class AccessPolicy:
    """Method path → who may call it and what its REST body may hold, from the descriptors."""

    def __init__(
        self, services: Iterable[ServiceDescriptor], *, snake_case_services: Iterable[str] = ()
    ) -> None:
        """`snake_case_services`: full names of the services whose clients name fields as in
        the proto (REST family B); the others' use the JSON names."""
        snake = frozenset(snake_case_services)
        self._public: set[str] = set()
        self._roles: dict[str, frozenset[Role]] = {}
        self._bodies: dict[str, BodyShape] = {}
        self._requests: dict[str, RequestShape] = {}
        for service in services:
            options = service.GetOptions()
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                self._bodies[path] = BodyShape(method)
                self._requests[path] = RequestShape(method, snake_case=service.full_name in snake)
                rule = access_rule(options, method.GetOptions())
                if rule.public:
                    self._public.add(path)
                else:
                    self._roles[path] = frozenset(_ROLE_BY_PROTO[r] for r in rule.roles)

    def request_shape(self, method: str) -> RequestShape | None:
        return self._requests.get(method)

    def is_public(self, method: str) -> bool:
        return method in self._public or method.startswith(PUBLIC_SERVICE_PREFIXES)

    def authorize(self, method: str, principal: Principal) -> None:
        allowed = self._roles.get(method, frozenset())
        if allowed and not (allowed & principal.roles):
            names = ", ".join(sorted(r.value for r in allowed))
            raise PermissionDenied(f"this operation requires one of the roles: {names}")

    def check_body_fields(self, method: str, metadata: Any) -> None:
        """REST bodies only (the edge lists their keys): refuse keys the request lacks."""
        listed = _metadata_value(metadata, JSON_FIELDS_HEADER)
        shape = self._bodies.get(method)
        if listed is None or shape is None:
            return
        violations = shape.unknown_fields(listed)
        if violations:
            raise validation_error(violations)


def _metadata_value(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class RpcGateway(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler of the contract: admits the caller (token, roles, rate limits, REST
    body keys), then parses the request (see core/requests.py: gRPC itself only hands over the
    bytes, so bytes that do not parse are an INVALID_ARGUMENT, and only for an admitted caller),
    runs the servicer and maps what it raises."""

    def __init__(
        self, tokens: TokenService, policy: AccessPolicy, limiter: RateLimiter | None = None
    ) -> None:
        self._tokens = tokens
        self._policy = policy
        self._limiter = limiter if limiter is not None and limiter.enabled else None
        self._readers: dict[str, RequestReader] = {}

    def _reader(self, method: str, deserialize: Callable[[bytes], Any]) -> RequestReader:
        reader = self._readers.get(method)
        if reader is None:
            reader = RequestReader(deserialize, self._policy.request_shape(method))
            self._readers[method] = reader
        return reader

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
        reader = None
        if handler.request_deserializer is not None:
            reader = self._reader(method, handler.request_deserializer)
        call = _Call(self, method, metadata, reader)
        # The wrapped handler takes the request's bytes; the wrapper parses them once admitted.
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=call.wrap_unary(handler.unary_unary), request_deserializer=None
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=call.wrap_stream(handler.unary_stream), request_deserializer=None
            )
        if handler.stream_unary is not None:
            return handler._replace(
                stream_unary=call.wrap_client_stream(handler.stream_unary),
                request_deserializer=None,
            )
        # Bidirectional streams are not part of the contract: refuse rather than run unguarded.
        return None

    async def admit(self, method: str, metadata: Any) -> Principal | None:
        """Who is calling, if they may, within their rate limits, with a request whose body names
        only known fields. None for a public RPC, which needs no token and is not limited."""
        if self._policy.is_public(method):
            self._policy.check_body_fields(method, metadata)
            return None
        token = bearer_token(_metadata_value(metadata, "authorization"))
        principal = self._tokens.verify(token)
        if principal.stream_only and not is_stream_method(method):
            raise Unauthenticated(
                "a stream token is accepted only by Stream* RPCs (event streams); "
                "send the application's own token"
            )
        if self._limiter is not None:
            # Before anything else is sent: a trailers-only failure carries `retry-after`
            # through Envoy's transcoder into the REST response's headers.
            await self._limiter.admit(token, principal.org)
        self._policy.authorize(method, principal)
        self._policy.check_body_fields(method, metadata)
        return principal


class _Call:
    """One call's wrapping: sets the request context, maps errors, logs the outcome."""

    def __init__(
        self, gateway: RpcGateway, method: str, metadata: Any, reader: RequestReader | None
    ) -> None:
        self.gateway = gateway
        self.method = method
        self.metadata = metadata
        self.reader = reader
        self.request_id = _metadata_value(metadata, "x-request-id") or uuid.uuid4().hex

    def _parse(self, request: Any) -> Any:
        return request if self.reader is None else self.reader.read(request)

    async def _parse_each(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            yield self._parse(request)

    async def _enter(self) -> None:
        rpc_context.request_id.set(self.request_id)
        rpc_context.set_principal(await self.gateway.admit(self.method, self.metadata))

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception, start: float) -> None:
        elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
        where = {"method": self.method, "ms": elapsed_ms, "request_id": self.request_id}
        if isinstance(exc, DomainError):
            status = to_rpc_status(exc)
            # Refusals by a rate limit come in floods: logging each would cost more than refusing.
            level = logging.DEBUG if isinstance(exc, TooManyRequests) else logging.INFO
            log.log(
                level, "rpc failed: %s", status.details, extra={**where, "code": status.code.name}
            )
        else:
            status = internal_status()
            log.exception("rpc crashed", extra=where)
        await context.abort_with_status(status)

    def wrap_unary(
        self, behavior: Callable[..., Awaitable[Any]], *, client_stream: bool = False
    ) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                await self._enter()
                # For a client stream, `request` is the iterator of the requests' bytes.
                parse = self._parse_each if client_stream else self._parse
                response = await behavior(parse(request), context)
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

    def wrap_client_stream(
        self, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        return self.wrap_unary(behavior, client_stream=True)

    def wrap_stream(
        self, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                await self._enter()
                async for item in behavior(self._parse(request), context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._fail(context, exc, start)
                raise

        return stream
