"""Benchmark: call creation rate, concurrent live calls, and call-event latency.

A fresh `switchboard serve` (SQLite, synchronous=FULL, the sandbox carrier: calls ring 0.2 s and
are answered) gets N calls created through gRPC CreateCall with C requests in flight, all kept
up at once, then hung up. A StreamCallEvents subscriber (another connection) receives every
call event; its latency is the receipt time minus the event's own time (same machine clock).

  creation calls/s   N / time to create them all (client side)
  ceiling req/s      DiagnosticsService.Ping at the same concurrency on the same server: an
                     authenticated no-op RPC, measured in the same run
  live at once       calls ACTIVE together before the hang-ups (all N, checked)
  event latency      p50 / p99 / max over call.started, call.active and call.completed events
  server RSS growth  VmRSS with all N calls live, above its level before the first call

Run: `python -m bench.calling [--calls 1000] [--concurrency 32] [--rate 50]`; --rate paces the
creates, so event latency is the engine's own rather than a backlog's. Writes
bench/results/calling[_rate<N>].json and .md. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from switchboard.calling.v1 import call_pb2, calling_service_pb2_grpc
from switchboard.calling.v1 import calling_service_pb2 as pb
from switchboard.common.v1 import diagnostics_service_pb2, diagnostics_service_pb2_grpc
from switchboard.messaging.v1 import messaging_service_pb2 as mpb
from switchboard.messaging.v1 import messaging_service_pb2_grpc, sender_pb2

from bench._harness import Server, auth, emit, percentile, platform_info, rss, write_results

ORG = "bench-calling"


@dataclass
class Result:
    calls: int
    concurrency: int
    offered_rate: float  # calls/s the bench created them at (0: as fast as possible)
    creation_calls_per_second: float
    ceiling_requests_per_second: float
    ratio_to_ceiling: float
    live_at_once: int
    event_latency_p50_ms: float
    event_latency_p99_ms: float
    event_latency_max_ms: float
    events: int
    server_rss_growth_bytes: int


def _number(i: int) -> str:
    """Numbers ending in 7: none of the sandbox's scripted outcomes, so every call answers."""
    return f"+1415{2340000 + i * 10 + 7}"


async def _gather_limited(
    count: int, concurrency: int, make: object, rate: float = 0.0
) -> list[object]:
    """`make(i)` for every i, at most `concurrency` at once; paced at `rate` per second when
    given (0: as fast as the server answers)."""
    gate = asyncio.Semaphore(concurrency)
    began = time.perf_counter()

    async def one(i: int) -> object:
        if rate:
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        async with gate:
            return await make(i)  # type: ignore[operator]

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def measure(count: int, concurrency: int, work: Path, rate: float = 0.0) -> Result:
    async with Server(work) as server:
        metadata = auth(ORG)
        async with (
            grpc.aio.insecure_channel(server.target) as channel,
            grpc.aio.insecure_channel(server.target) as events_channel,
        ):
            messaging = messaging_service_pb2_grpc.MessagingServiceStub(channel)
            sender = await messaging.CreateSenderId(
                mpb.CreateSenderIdRequest(
                    body=sender_pb2.SenderIdInput(
                        type_id="sms-long-code", class_id="alerts-na", address="+14155550123"
                    )
                ),
                metadata=metadata,
            )
            ping = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)
            start = time.perf_counter()
            await _gather_limited(
                count,
                concurrency,
                lambda i: ping.Ping(diagnostics_service_pb2.PingRequest(), metadata=metadata),
            )
            ceiling = count / (time.perf_counter() - start)

            calls = calling_service_pb2_grpc.CallingServiceStub(channel)
            stream_stub = calling_service_pb2_grpc.CallingServiceStub(events_channel)
            latencies: list[float] = []
            states: dict[str, str] = {}
            all_completed = asyncio.Event()

            async def follow() -> None:
                request = pb.StreamCallEventsRequest(heartbeat_seconds=300)
                async for event in stream_stub.StreamCallEvents(request, metadata=metadata):
                    if not event.envelope.type.startswith("call."):
                        continue
                    happened = event.envelope.occur_time.ToDatetime(UTC)
                    latencies.append((datetime.now(UTC) - happened).total_seconds() * 1000)
                    states[event.call.id] = event.call.state
                    done = sum(1 for s in states.values() if s == "COMPLETED")
                    if done >= count:
                        all_completed.set()
                        return

            following = asyncio.create_task(follow())
            await asyncio.sleep(0.5)
            rss_before = rss(server.process.pid)
            start = time.perf_counter()
            created = await _gather_limited(
                count,
                concurrency,
                rate=rate,
                make=lambda i: calls.CreateCall(
                    pb.CreateCallRequest(
                        body=call_pb2.CallInput(**{"from": sender.id, "to": _number(i)})
                    ),
                    metadata=metadata,
                ),
            )
            creation = count / (time.perf_counter() - start)
            ids = [c.id for c in created]  # type: ignore[attr-defined]
            deadline = time.monotonic() + 120
            while sum(1 for i in ids if states.get(i) == "ACTIVE") < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("not every call was answered")
                await asyncio.sleep(0.1)
            live = sum(1 for i in ids if states.get(i) == "ACTIVE")
            rss_live = rss(server.process.pid)
            await _gather_limited(  # hang-ups at the same pace as the creates
                count,
                concurrency,
                rate=rate,
                make=lambda i: calls.DeleteCall(
                    pb.DeleteCallRequest(call_id=ids[i]), metadata=metadata
                ),
            )
            await asyncio.wait_for(all_completed.wait(), 120)
            following.cancel()
    return Result(
        calls=count,
        concurrency=concurrency,
        offered_rate=rate,
        creation_calls_per_second=round(creation, 1),
        ceiling_requests_per_second=round(ceiling, 1),
        ratio_to_ceiling=round(creation / ceiling, 3),
        live_at_once=live,
        event_latency_p50_ms=round(percentile(latencies, 0.5), 1),
        event_latency_p99_ms=round(percentile(latencies, 0.99), 1),
        event_latency_max_ms=round(max(latencies), 1),
        events=len(latencies),
        server_rss_growth_bytes=max(0, rss_live - rss_before),
    )


def report(result: Result) -> None:
    name = "calling" + (f"_rate{result.offered_rate:g}" if result.offered_rate else "")
    lines = [
        "# Calls on the sandbox carrier",
        "",
        "| calls live at once | create calls/s | Ping req/s | ratio | event p50 ms | p99 ms "
        "| max ms | RSS growth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result.live_at_once:,} | {result.creation_calls_per_second:,.0f} "
        f"| {result.ceiling_requests_per_second:,.0f} | {result.ratio_to_ceiling:.0%} "
        f"| {result.event_latency_p50_ms:,.1f} | {result.event_latency_p99_ms:,.1f} "
        f"| {result.event_latency_max_ms:,.1f} "
        f"| {result.server_rss_growth_bytes / 2**20:.1f} MiB |",
    ]
    write_results(name, {**platform_info(), **asdict(result)}, lines)
    emit(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0, help="create calls at this rate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report(asyncio.run(measure(args.calls, args.concurrency, Path(scratch), args.rate)))


if __name__ == "__main__":
    main()
