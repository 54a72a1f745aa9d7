"""The RPC gateway's contract with the edge, tested on a real grpc.aio server: a servicer asks
for a documented success status and the gateway sends it as initial metadata, which edge.lua
turns into the HTTP status (tests/edge checks that half)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from switchboard.common.v1 import diagnostics_service_pb2 as pb
from switchboard.common.v1 import diagnostics_service_pb2_grpc

from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.context import HTTP_STATUS_HEADER, set_http_status
from switchboard.server.core.rpc import AccessPolicy, RpcGateway
from switchboard.server.delivery.outbox import Outbox
from switchboard.server.diagnostics.servicer import DiagnosticsServicer
from tests.support.auth import TEST_SECRET
from tests.support.clock import TEST_CLOCK


class AcceptedPing(DiagnosticsServicer):
    async def Ping(
        self, request: pb.PingRequest, context: grpc.aio.ServicerContext
    ) -> pb.PingResponse:
        set_http_status(202)
        return await super().Ping(request, context)


@pytest.fixture
async def stub() -> AsyncIterator[diagnostics_service_pb2_grpc.DiagnosticsServiceStub]:
    tokens = TokenService(TEST_SECRET, TEST_CLOCK)
    service = pb.DESCRIPTOR.services_by_name["DiagnosticsService"]
    server = grpc.aio.server(interceptors=[RpcGateway(tokens, AccessPolicy([service]))])
    diagnostics_service_pb2_grpc.add_DiagnosticsServiceServicer_to_server(
        AcceptedPing(Outbox()), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)
    await server.stop(None)


async def test_success_status_travels_as_initial_metadata(
    stub: diagnostics_service_pb2_grpc.DiagnosticsServiceStub,
) -> None:
    token = TokenService(TEST_SECRET, TEST_CLOCK).issue(
        org="acme", roles=[Role.CLIENT], subject="t"
    )
    call = stub.Ping(pb.PingRequest(), metadata=[("authorization", f"Bearer {token}")])
    reply = await call
    assert reply.org == "acme"
    assert (HTTP_STATUS_HEADER, "202") in list(await call.initial_metadata())
