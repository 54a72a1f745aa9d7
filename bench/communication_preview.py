"""Benchmark: communication preview latency, gRPC and REST via Envoy, against a no-op ceiling.

One server process (`switchboard serve`, SQLite in WAL mode) behind one Envoy, set up like the
seeds: the `password_reset` type with the seed's arguments (resetLink sensitive) and its stable
SMS template (the seed's base64 content). The request is the seed's preview
(`POST /v2/orgs/{org}/communications/preview` with type, language and the seed's arguments; no
channels, so every channel with a stable template). Each request waits for its answer before the
next (one in flight): this measures what one caller feels, not throughput.

  ceiling   DiagnosticsService.Ping on the same server, same transport, same client, in the same
            rounds (authenticated like every RPC): the cost of the round trip itself
  gRPC      grpc.aio unary calls straight to the server
  REST      HTTP/1.1 keep-alive (httpx) to Envoy, JSON body; the gRPC-JSON transcoder and the
            Lua edge filter run on every request

Rounds interleave the four scenarios so a noisy neighbour slows all of them alike. Reported:
p50 and p99 per scenario over all rounds, and ceiling p50 / preview p50 (1.0 would mean the
preview costs nothing beyond a no-op round trip).

Run: `python -m bench.communication_preview`. Writes bench/results/communication_preview.json
and .md. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from google.protobuf import json_format
from switchboard.common.v1 import diagnostics_service_pb2, diagnostics_service_pb2_grpc
from switchboard.communications.v1 import communications_service_pb2 as pb
from switchboard.communications.v1 import communications_service_pb2_grpc

from bench._harness import (
    SEED_ARGUMENTS,
    SEED_SMS_CONTENT,
    SEED_TYPE_ARGUMENTS,
    Server,
    cores,
    emit,
    envoy_settings,
    percentile,
    token,
    utc_stamp,
    write_results,
)
from switchboard.server.core.auth import Role
from switchboard.server.edge.envoy import EnvoyProcess

ORG = "yoigo"
TYPE = "password_reset"
PREVIEW = {"type": TYPE, "language": "en", "arguments": SEED_ARGUMENTS}
EXPECTED = "Hi Juan, enter **** to reset password"


@dataclass
class Series:
    scenario: str  # Ping (ceiling) or Preview
    transport: str  # gRPC or REST via Envoy
    samples_ms: list[float] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        return percentile(self.samples_ms, q)


async def setup(rest: httpx.AsyncClient, admin: dict[str, str], client: dict[str, str]) -> None:
    kind = {
        "code": TYPE,
        "description": "Provides the user a link to reset his password",
        "realTimeRequired": True,
        "deliveryWindow": "ANYDAY_8AM8PM",
        "sendingType": "EXTERNAL",
        "arguments": SEED_TYPE_ARGUMENTS,
    }
    response = await rest.put(f"/v2/types/{TYPE}", json=kind, headers=admin)
    response.raise_for_status()
    template = {
        "type": TYPE,
        "language": "en",
        "channel": "sms",
        "data": {"senderInfo": "YOIGO", "content": SEED_SMS_CONTENT},
    }
    response = await rest.post(f"/v2/orgs/{ORG}/templates", json=template, headers=client)
    response.raise_for_status()


async def timed(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def main(requests: int, warmup: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    client_token, admin_token = token(ORG), token(ORG, Role.ADMIN)
    client = {"Authorization": f"Bearer {client_token}"}
    metadata = (("authorization", f"Bearer {client_token}"),)
    series = {
        (s, t): Series(s, t)
        for s in ("Ping (ceiling)", "Preview")
        for t in ("gRPC", "REST via Envoy")
    }
    async with Server(work) as server:
        settings = envoy_settings(server.port)
        rest_base = f"http://127.0.0.1:{settings.listen_port}"
        async with (
            EnvoyProcess(settings, work / "envoy"),
            httpx.AsyncClient(base_url=rest_base, timeout=30) as rest,
            grpc.aio.insecure_channel(server.target) as channel,
        ):
            await setup(rest, {"Authorization": f"Bearer {admin_token}"}, client)
            diagnostics = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)
            communications = communications_service_pb2_grpc.CommunicationsServiceStub(channel)
            request = pb.PreviewCommunicationRequest(org=ORG)
            json_format.ParseDict(PREVIEW, request.body)
            preview_path = f"/v2/orgs/{ORG}/communications/preview"

            async def grpc_ping() -> None:
                await diagnostics.Ping(diagnostics_service_pb2.PingRequest(), metadata=metadata)

            async def grpc_preview() -> None:
                reply = await communications.PreviewCommunication(request, metadata=metadata)
                assert reply.data.channels[0].content == EXPECTED

            async def rest_ping() -> None:
                response = await rest.get("/diagnostics/ping", headers=client)
                assert response.status_code == 200, response.text

            async def rest_preview() -> None:
                response = await rest.post(preview_path, json=PREVIEW, headers=client)
                assert response.status_code == 200, response.text
                assert response.json()["data"]["channels"][0]["content"] == EXPECTED

            calls = {
                ("Ping (ceiling)", "gRPC"): grpc_ping,
                ("Preview", "gRPC"): grpc_preview,
                ("Ping (ceiling)", "REST via Envoy"): rest_ping,
                ("Preview", "REST via Envoy"): rest_preview,
            }
            for call in calls.values():
                await timed(call, warmup)
            for round_ in range(rounds):
                for key, call in calls.items():
                    samples = await timed(call, requests)
                    series[key].samples_ms.extend(samples)
                    emit(
                        {
                            "round": round_,
                            "scenario": key[0],
                            "transport": key[1],
                            "p50_ms": round(statistics.median(samples), 3),
                        }
                    )
    report(list(series.values()), requests, rounds)
    shutil.rmtree(work, ignore_errors=True)


def report(series: list[Series], requests: int, rounds: int) -> None:
    by = {(s.scenario, s.transport): s for s in series}
    rows = []
    for transport in ("gRPC", "REST via Envoy"):
        ping, preview = by[("Ping (ceiling)", transport)], by[("Preview", transport)]
        rows.append(
            {
                "transport": transport,
                "ping_p50_ms": round(ping.quantile(0.5), 3),
                "ping_p99_ms": round(ping.quantile(0.99), 3),
                "preview_p50_ms": round(preview.quantile(0.5), 3),
                "preview_p99_ms": round(preview.quantile(0.99), 3),
                "ceiling_over_preview_p50": round(ping.quantile(0.5) / preview.quantile(0.5), 3),
                "ceiling_over_preview_p99": round(ping.quantile(0.99) / preview.quantile(0.99), 3),
            }
        )
    machine = f"{cores()}, Python {platform.python_version()}"
    stamp = utc_stamp()
    data = {
        "when": stamp,
        "machine": machine,
        "requests_per_round": requests,
        "rounds": rounds,
        "results": rows,
        "series": [
            {
                "scenario": s.scenario,
                "transport": s.transport,
                "samples": len(s.samples_ms),
                "percentiles_ms": {
                    f"p{q}": round(s.quantile(q / 100), 3) for q in (1, 10, 50, 90, 99)
                },
            }
            for s in series
        ],
    }
    lines = [
        "# Communication preview latency",
        "",
        f"{stamp}, {machine}. One server process (SQLite, WAL), one Envoy (--concurrency 1); "
        f"{rounds} interleaved rounds of {requests} sequential requests per scenario (one in "
        "flight), after a warm-up. The request is the seed's preview of `password_reset` with "
        "the seed's arguments (its SMS template, resetLink sensitive and masked).",
        "",
        "| transport | Ping p50 ms (ceiling) | Preview p50 ms | ceiling / preview (p50) "
        "| Ping p99 ms | Preview p99 ms | ceiling / preview (p99) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['transport']} | {row['ping_p50_ms']:.3f} | {row['preview_p50_ms']:.3f} | "
            f"{row['ceiling_over_preview_p50']:.0%} | {row['ping_p99_ms']:.3f} | "
            f"{row['preview_p99_ms']:.3f} | {row['ceiling_over_preview_p99']:.0%} |"
        )
    lines += [
        "",
        "Ceiling: DiagnosticsService.Ping on the same server and transport, authenticated like "
        "every RPC, so the ratio is the share of a no-op round trip in a preview's latency "
        "(100% would mean previewing costs nothing on top). The clients are Python (grpc.aio, "
        "httpx), whose own cost is in both figures alike.",
        "",
        "A preview makes three database reads, each on its own read session of the templates "
        "domain (the type, concurrently with the org's stable channels in the language; then "
        "the stable template, its compiled form from the engine's cache). On SQLite through "
        "aiosqlite each costs about a millisecond of hand-offs between the event loop and the "
        "driver thread, which is most of the gap to the ceiling. It then checks the arguments "
        "against the type, renders each channel once with the masked values (a preview hands "
        "nothing over, so no real rendering is made) and counts the SMS encoding and segments.",
    ]
    write_results("communication_preview", data, lines, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="requests per scenario/round")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per scenario")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.warmup, arguments.rounds))
