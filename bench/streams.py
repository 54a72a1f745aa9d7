"""Benchmark: event-stream delivery latency and server memory with many open streams.

A fresh `switchboard serve` (SQLite) gets S StreamSmsEvents subscribers spread over O orgs (one
gRPC connection per org, after = now), then SendSms at a paced rate spread over the orgs: each
message makes three events (sms.accepted, sms.sent, sms.delivered on the sandbox route), so
--rate 333 is about 1,000 events/s in all. Every subscriber receives every event of its org.

  latency p50/p99    receipt time minus the event's own time (its commit's clock reading, same
                     machine), over every event every subscriber received
  ceiling            the same event rate with one subscriber, in the same run: p99 with S
                     subscribers over p99 with one (`ratio`)
  server RSS         VmRSS with the S streams open (and its growth over the idle server), and at
                     the end of the load
  deliveries/s       events handed to subscribers per second (S/O times the event rate)

Run: `python -m bench.streams [--subscribers 1000] [--orgs 10] [--rate 333] [--seconds 10]`;
`--orgs 1000` gives each subscriber an org of its own, so every event goes to one subscriber.
Writes bench/results/streams[_rate<N>][_orgs<N>].json and .md. Not part of the test run
(never a timed test).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from switchboard.sms.v1 import sms_message_pb2, sms_service_pb2_grpc

from bench._harness import Server, auth, emit, percentile, platform_info, rss, write_results

DEFAULT_RATE = 333.0
DEFAULT_ORGS = 10


@dataclass
class Run:
    subscribers: int
    orgs: int
    offered_messages_per_second: float
    events_per_second: float
    deliveries_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    received: int
    expected: int
    server_rss_streams_open_bytes: int
    server_rss_growth_bytes: int
    server_rss_end_bytes: int


@dataclass
class Result:
    load: Run
    ceiling: Run
    ratio_p99_to_ceiling: float


async def run(server: Server, subscribers: int, orgs: int, rate: float, seconds: float) -> Run:
    names = [f"bench-streams-{i}" for i in range(orgs)]
    metadata = {o: auth(o) for o in names}
    local = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(server.target, options=local) for _ in names]
    sender_channel = grpc.aio.insecure_channel(server.target, options=local)
    latencies: list[float] = []
    calls: list[Any] = []
    sent_per_org = dict.fromkeys(names, 0)
    rss_idle = rss(server.process.pid)
    try:
        for i in range(subscribers):
            o = names[i % orgs]
            stub = sms_service_pb2_grpc.SmsServiceStub(channels[i % orgs])
            calls.append(
                stub.StreamSmsEvents(
                    sms_message_pb2.StreamSmsEventsRequest(heartbeat_seconds=300),
                    metadata=metadata[o],
                )
            )
        await asyncio.gather(*(c.initial_metadata() for c in calls))
        rss_open = rss(server.process.pid)

        async def receive(call: Any) -> None:
            async for event in call:
                if event.envelope.type.startswith("sms."):
                    happened = event.envelope.occur_time.ToDatetime(UTC)
                    latencies.append((datetime.now(UTC) - happened).total_seconds() * 1000)

        readers = [asyncio.create_task(receive(c)) for c in calls]
        sms = sms_service_pb2_grpc.SmsServiceStub(sender_channel)
        total = int(rate * seconds)
        began = time.perf_counter()
        in_flight = asyncio.Semaphore(64)

        async def send(i: int) -> None:
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            o = names[i % orgs]
            async with in_flight:
                await send_one(i, o)

        async def send_one(i: int, o: str) -> None:
            await sms.SendSms(
                sms_message_pb2.SendSmsRequest(
                    messages=[
                        sms_message_pb2.SmsMessage(
                            channel="smpp", to="+27821234567", content=f"bench {i}"
                        )
                    ]
                ),
                metadata=metadata[o],
            )
            sent_per_org[o] += 1

        await asyncio.gather(*(send(i) for i in range(total)))
        per_subscriber = [sent_per_org[names[i % orgs]] * 3 for i in range(subscribers)]
        expected = sum(per_subscriber)
        deadline = time.monotonic() + 60
        while len(latencies) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - began
        rss_end = rss(server.process.pid)
        for r in readers:
            r.cancel()
        for c in calls:
            c.cancel()
    finally:
        for ch in [*channels, sender_channel]:
            await ch.close()
    events = sum(sent_per_org.values()) * 3
    return Run(
        subscribers=subscribers,
        orgs=orgs,
        offered_messages_per_second=rate,
        events_per_second=round(events / elapsed, 1),
        deliveries_per_second=round(len(latencies) / elapsed, 1),
        latency_p50_ms=round(percentile(latencies, 0.5), 1),
        latency_p99_ms=round(percentile(latencies, 0.99), 1),
        latency_max_ms=round(max(latencies), 1),
        received=len(latencies),
        expected=expected,
        server_rss_streams_open_bytes=rss_open,
        server_rss_growth_bytes=max(0, rss_open - rss_idle),
        server_rss_end_bytes=rss_end,
    )


async def measure(subscribers: int, orgs: int, rate: float, seconds: float, work: Path) -> Result:
    async with Server(work / "ceiling") as server:
        ceiling = await run(server, 1, 1, rate, seconds)
    async with Server(work / "load") as server:
        load = await run(server, subscribers, orgs, rate, seconds)
    ratio = load.latency_p99_ms / ceiling.latency_p99_ms if ceiling.latency_p99_ms else 0.0
    return Result(load=load, ceiling=ceiling, ratio_p99_to_ceiling=round(ratio, 2))


def report(result: Result) -> None:
    lines = [
        "# Event streams: delivery latency and memory",
        "",
        "| subscribers | orgs | events/s | deliveries/s | p50 ms | p99 ms | max ms | received "
        "| server RSS, streams open | RSS growth | RSS at end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (result.ceiling, result.load):
        lines.append(
            f"| {r.subscribers:,} | {r.orgs} | {r.events_per_second:,.0f} "
            f"| {r.deliveries_per_second:,.0f} | {r.latency_p50_ms:,.1f} "
            f"| {r.latency_p99_ms:,.1f} | {r.latency_max_ms:,.1f} | {r.received:,}/{r.expected:,} "
            f"| {r.server_rss_streams_open_bytes / 2**20:.0f} MiB "
            f"| {r.server_rss_growth_bytes / 2**20:.0f} MiB "
            f"| {r.server_rss_end_bytes / 2**20:.0f} MiB |"
        )
    lines += ["", f"p99 with the load over p99 with one subscriber: {result.ratio_p99_to_ceiling}"]
    rate = result.ceiling.offered_messages_per_second
    name = "streams" + ("" if rate == DEFAULT_RATE else f"_rate{rate:g}")
    if result.load.orgs != DEFAULT_ORGS:  # e.g. one subscriber per org: no event multiplied
        name += f"_orgs{result.load.orgs}"
    write_results(name, {**platform_info(), **asdict(result)}, lines)
    emit(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--orgs", type=int, default=DEFAULT_ORGS)
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="SendSms messages per second"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "ceiling").mkdir()
        (work / "load").mkdir()
        report(asyncio.run(measure(args.subscribers, args.orgs, args.rate, args.seconds, work)))


if __name__ == "__main__":
    main()
