"""Errors as clients see them: a gRPC call's rich status, and a REST family B error body."""

from __future__ import annotations

import grpc
import httpx
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    """(ErrorInfo.reason, ErrorInfo.metadata, [(field, reason)] of BadRequest) of a failed RPC."""
    status = rpc_status.from_call(error)
    assert status is not None, "error carries no google.rpc.Status details"
    reason, metadata, fields = "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [(v.field, v.reason) for v in bad.field_violations]
    return reason, metadata, fields


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """Family B error: exactly {"error_code", "error_description"}; returns the description."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "error_description"}, body
    assert body["error_code"] == code, body
    description: str = body["error_description"]
    return description
