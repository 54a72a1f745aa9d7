"""CreateStreamToken: a short-lived token for a browser's EventSource, which cannot send an
Authorization header. It carries the caller's org and roles and the `scope` claim that makes the
RPC gateway accept it only on Stream* RPCs (core/rpc.py)."""

from __future__ import annotations

from datetime import timedelta

from switchboard.common.v1 import stream_tokens_service_pb2 as pb
from switchboard.common.v1 import stream_tokens_service_pb2_grpc

from switchboard.server.core.auth import MAX_STREAM_TOKEN_SECONDS, STREAM_SCOPE, TokenService
from switchboard.server.core.clock import Clock
from switchboard.server.core.context import current_principal
from switchboard.server.core.types import Context
from switchboard.server.core.validation import Checks


class StreamTokensServicer(stream_tokens_service_pb2_grpc.StreamTokensServiceServicer):
    def __init__(self, tokens: TokenService, clock: Clock) -> None:
        self._tokens = tokens
        self._clock = clock

    async def CreateStreamToken(
        self, request: pb.CreateStreamTokenRequest, context: Context
    ) -> pb.CreateStreamTokenResponse:
        seconds = request.ttl_seconds or MAX_STREAM_TOKEN_SECONDS
        checks = Checks()
        if not 1 <= seconds <= MAX_STREAM_TOKEN_SECONDS:
            checks.fail("ttl_seconds", f"must be between 1 and {MAX_STREAM_TOKEN_SECONDS}", "Range")
        checks.raise_if_failed()
        caller = current_principal()
        now = self._clock.now()
        ttl = timedelta(seconds=seconds)
        token = self._tokens.issue(
            org=caller.org,
            roles=caller.roles,
            subject=caller.subject,
            ttl=ttl,
            client_id=caller.client_id,
            now=now,
            scope=STREAM_SCOPE,
        )
        response = pb.CreateStreamTokenResponse(access_token=token, expires_in=seconds)
        response.expire_time.FromDatetime(now + ttl)
        return response
