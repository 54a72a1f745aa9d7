"""Benchmark: accepted single-message SendSms per second, gRPC and REST via Envoy.

Every figure is a ratio to a ceiling measured in the same run on the same server process: a no-op
RPC (DiagnosticsService.Ping, authenticated like every RPC). The load comes from h2load
(Debian's nghttp2-client), a C client, so the Python server is what is measured:

  gRPC   h2load over h2c straight to the server, gRPC-framed protobuf bodies
  REST   h2load --h1 (HTTP/1.1, one request in flight per connection) to Envoy, JSON bodies

Run: `make bench` (installs h2load with apt-get if missing). Writes
bench/results/sms_throughput.json and .md. Not part of the test run: figures depend on the
machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from switchboard.sms.v1 import sms_message_pb2

from bench._harness import Server, cores, emit, envoy_settings, token, utc_stamp, write_results
from switchboard.server.edge.envoy import EnvoyProcess

MESSAGE = {"channel": "smpp", "to": "+27821234567", "content": "Your code is 4711"}
PING = "switchboard.common.v1.DiagnosticsService/Ping"
SEND = "switchboard.sms.v1.SmsService/SendSms"
SEND_PATH = "/communication/message/sms"


@dataclass
class Run:
    scenario: str
    transport: str
    concurrency: int
    round: int
    requests_per_second: float
    succeeded: int
    failed: int
    latency_mean_ms: float
    latency_max_ms: float
    rows_created: int | None = None


def grpc_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def ensure_h2load() -> str:
    found = shutil.which("h2load")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=True, env=env)
    return shutil.which("h2load") or sys.exit("h2load not available")


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNIT_MS[unit]


def h2load(args: list[str]) -> tuple[float, int, int, float, float]:
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)[1])  # type: ignore[index]
    counts = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out
    )
    latency = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    assert counts and latency, out
    return rps, int(counts[1]), int(counts[2]), _ms(latency[3]), _ms(latency[2])


def count_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM sms_messages").fetchone()[0])


async def main(seconds: int, warmup: int, rounds: int, concurrencies: list[int]) -> None:
    tool = ensure_h2load()
    work = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    auth = f"authorization: Bearer {token('bench')}"
    (work / "ping.bin").write_bytes(grpc_frame(b""))
    send = sms_message_pb2.SendSmsRequest(messages=[sms_message_pb2.SmsMessage(**MESSAGE)])
    (work / "send.bin").write_bytes(grpc_frame(send.SerializeToString()))
    (work / "send.json").write_text(json.dumps({"Messages": [MESSAGE]}))
    runs: list[Run] = []
    async with Server(work) as server:
        settings = envoy_settings(server.port)
        grpc_base = f"http://{server.target}"
        rest_base = f"http://127.0.0.1:{settings.listen_port}"
        async with EnvoyProcess(settings, work / "envoy"):
            timing = ["-D", str(seconds), "--warm-up-time", str(warmup)]

            def grpc_call(c: int, method: str, body: str) -> list[str]:
                # A few connections with many streams each, as gRPC clients multiplex.
                conns = min(4, c)
                return [
                    tool, *timing, "-c", str(conns), "-m", str(max(1, c // conns)), "-H", auth,
                    "-H", "content-type: application/grpc", "-H", "te: trailers",
                    "-d", str(work / body), f"{grpc_base}/{method}",
                ]  # fmt: skip

            def rest_call(c: int, path: str, body: str | None = None) -> list[str]:
                # HTTP/1.1, one request in flight per connection, as REST clients do.
                args = [tool, *timing, "--h1", "-c", str(c), "-H", auth]
                if body:
                    args += ["-H", "content-type: application/json", "-d", str(work / body)]
                return [*args, f"{rest_base}{path}"]

            # Rounds interleave the ceiling and the measured RPCs, so a noisy neighbour on a shared
            # machine slows both alike instead of skewing one ratio.
            for c, round_ in itertools.product(concurrencies, range(rounds)):
                scenarios = [
                    ("Ping (ceiling)", "gRPC", grpc_call(c, PING, "ping.bin")),
                    ("SendSms", "gRPC", grpc_call(c, SEND, "send.bin")),
                    ("Ping", "REST via Envoy", rest_call(c, "/diagnostics/ping")),
                    ("SendSms", "REST via Envoy", rest_call(c, SEND_PATH, "send.json")),
                ]
                for scenario, transport, args in scenarios:
                    before = count_rows(server.db)
                    rps, ok, failed, mean, worst = h2load(args)
                    rows = count_rows(server.db) - before if scenario == "SendSms" else None
                    run = Run(scenario, transport, c, round_, rps, ok, failed, mean, worst, rows)
                    runs.append(run)
                    emit(run)
    report(runs, seconds, rounds)
    shutil.rmtree(work, ignore_errors=True)


def report(runs: list[Run], seconds: int, rounds: int) -> None:
    def rps(scenario: str, transport: str, c: int) -> list[float]:
        return [
            r.requests_per_second
            for r in sorted(runs, key=lambda r: r.round)
            if (r.scenario, r.transport, r.concurrency) == (scenario, transport, c)
        ]

    def latency(scenario: str, transport: str, c: int) -> float:
        return statistics.median(
            r.latency_mean_ms
            for r in runs
            if (r.scenario, r.transport, r.concurrency) == (scenario, transport, c)
        )

    lines = [
        "# SendSms throughput",
        "",
        f"{utc_stamp()}, {cores()}; {rounds} interleaved rounds of {seconds}s per figure after "
        "warm-up, medians shown; one server process, SQLite (WAL, synchronous=FULL), Envoy "
        "--concurrency 1, h2load as the client.",
        "",
        "| concurrency | Ping gRPC (ceiling) req/s | SendSms gRPC req/s | gRPC / ceiling "
        "| SendSms REST req/s | REST / gRPC | SendSms gRPC mean ms | SendSms REST mean ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = []
    for c in sorted({r.concurrency for r in runs}):
        ping = rps("Ping (ceiling)", "gRPC", c)
        send = rps("SendSms", "gRPC", c)
        rest = rps("SendSms", "REST via Envoy", c)
        # Ratios per round (same minute, same neighbours), then their median.
        grpc_ratios = [s / p for s, p in zip(send, ping, strict=True)]
        rest_ratios = [r / s for r, s in zip(rest, send, strict=True)]
        grpc_ratio, rest_ratio = statistics.median(grpc_ratios), statistics.median(rest_ratios)
        summary.append(
            {
                "concurrency": c,
                "grpc_vs_ceiling": grpc_ratio,
                "grpc_vs_ceiling_per_round": grpc_ratios,
                "rest_vs_grpc": rest_ratio,
                "rest_vs_grpc_per_round": rest_ratios,
            }
        )
        lines.append(
            f"| {c} | {statistics.median(ping):,.0f} | {statistics.median(send):,.0f} | "
            f"{grpc_ratio:.0%} ({min(grpc_ratios):.0%}-{max(grpc_ratios):.0%}) | "
            f"{statistics.median(rest):,.0f} | "
            f"{rest_ratio:.0%} ({min(rest_ratios):.0%}-{max(rest_ratios):.0%}) | "
            f"{latency('SendSms', 'gRPC', c):.1f} | {latency('SendSms', 'REST via Envoy', c):.1f} |"
        )
    lines += [
        "",
        "Targets: SendSms over gRPC ≥ 50% of the ceiling; REST via Envoy ≥ 75% of gRPC.",
        "Ratios in brackets: the range over the rounds. Ping over REST via Envoy, for reference "
        "(median req/s): "
        + ", ".join(
            f"c={c}: {statistics.median(rps('Ping', 'REST via Envoy', c)):,.0f}"
            for c in sorted({r.concurrency for r in runs})
        ),
        "",
        "Every accepted SendSms is a committed row: over all SendSms runs h2load counted "
        f"{sum(r.succeeded for r in runs if r.scenario == 'SendSms'):,} successes and the "
        f"database gained {sum(r.rows_created or 0 for r in runs):,} rows (warm-up requests "
        "included, which h2load does not count).",
    ]
    write_results("sms_throughput", {"runs": [asdict(r) for r in runs], "ratios": summary}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.warmup, args.rounds, args.concurrency))
