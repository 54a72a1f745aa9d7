"""Ping: authenticates the caller and does nothing else (the benchmarks' ceiling)."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from switchboard.common.v1 import diagnostics_service_pb2 as pb
from switchboard.common.v1 import diagnostics_service_pb2_grpc

from switchboard.server.core.context import current_principal


class DiagnosticsServicer(diagnostics_service_pb2_grpc.DiagnosticsServiceServicer):
    async def Ping(
        self, request: pb.PingRequest, context: grpc.aio.ServicerContext
    ) -> pb.PingResponse:
        now = Timestamp()
        now.GetCurrentTime()
        return pb.PingResponse(org=current_principal().org, server_time=now)
