"""Benchmark: event committed → signed webhook received, at a steady event rate.

A fresh server process (`switchboard serve`, SQLite WAL, synchronous=FULL, the defaults, with
SWITCHBOARD_WEBHOOKS_ALLOW_PRIVATE_URLS=true so it may call 127.0.0.1) and, in this process,
aiohttp receivers on 127.0.0.1 that answer 204 at once. Events are SMS accepted through gRPC
`SendSms` (sandbox routes), sent every 10 ms in batches that make up the rate: each message's
`sms.accepted` event is committed (group commit) before the RPC returns; event handlers
subscribe to `sms.accepted`. Scenarios:

  one receiver     one org, one handler gets every event
  50 receivers     50 orgs, each with one handler on its own receiver port; the batches go
                   round-robin over the orgs

Figures per scenario and rate (200 and 1,000 events/s, `--seconds` long each):

  offered/s        the rate the driver achieved creating events (it cannot exceed what the
                   server accepts; reported, not assumed)
  p50/p99 ms       received time - the envelope's `time` (the commit's clock reading), on the
                   machine's one clock
  received         webhooks received within 30 s after the last event
  ceiling/s        in the same run, the receivers' raw request rate: a plain aiohttp client
                   (the dispatcher's) POSTing from this process with the dispatcher's
                   concurrency (16 per receiver, at most 256)
  ratio            offered/s / ceiling/s

Run: `python -m bench.webhooks [--seconds 10]`. Writes bench/results/webhooks.json and .md.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web
from switchboard.messaging.v1 import event_handler_pb2, messaging_service_pb2_grpc
from switchboard.messaging.v1 import messaging_service_pb2 as mpb
from switchboard.sms.v1 import sms_message_pb2, sms_service_pb2_grpc

from bench._harness import (
    Server,
    cores,
    emit,
    percentile,
    platform_info,
    token,
    utc_stamp,
    write_results,
)

ORG = "bench-hooks"
RATES = (200, 1000)
CONCURRENCY = 256  # the dispatcher's attempts in flight per process (the default)
PER_HANDLER = 16  # ... and per handler


@dataclass
class Result:
    scenario: str
    receivers: int
    target_per_second: int
    offered_per_second: float
    events: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    ceiling_per_second: float
    ratio_to_ceiling: float


class Receivers:
    """`count` aiohttp sites; each records (receive time, envelope time) of every POST."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.ports: list[int] = []
        self.latencies: list[float] = []
        self.received = 0
        self._runner: web.AppRunner | None = None
        self._seen: set[str] = set()
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for _ in range(self.count):
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        if request.headers.get("webhook-id", "").startswith("msg_"):
            webhook_id = request.headers["webhook-id"]
            if webhook_id not in self._seen:  # a retry would count twice
                self._seen.add(webhook_id)
                sent = datetime.fromisoformat(json.loads(body)["time"]).timestamp()
                self.latencies.append((now - sent) * 1000)
                self.received += 1
                self.arrived.set()
        return web.Response(status=204)

    def reset(self) -> None:
        self.latencies = []
        self.received = 0


async def ceiling(receivers: Receivers, seconds: float = 3.0) -> float:
    """Requests/s the receivers take from a plain client like the dispatcher's (aiohttp, one
    pool of PER_HANDLER connections per receiver) at its concurrency."""
    body = json.dumps({"type": "bench", "data": {"x": "y" * 200}}).encode()
    done = 0
    deadline = time.monotonic() + seconds
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=PER_HANDLER))
        for _ in receivers.ports
    ]
    try:

        async def worker(index: int) -> None:
            nonlocal done
            port = receivers.ports[index % len(receivers.ports)]
            session = sessions[index % len(sessions)]
            while time.monotonic() < deadline:
                async with session.post(f"http://127.0.0.1:{port}/ceiling", data=body) as r:
                    await r.read()
                done += 1

        started = time.monotonic()
        workers = min(CONCURRENCY, PER_HANDLER * len(receivers.ports))
        await asyncio.gather(*(worker(i) for i in range(workers)))
        return done / (time.monotonic() - started)
    finally:
        for session in sessions:
            await session.close()


TICK = 0.01  # the driver sends one batch per tick


async def drive(
    stub: sms_service_pb2_grpc.SmsServiceStub,
    metadata: list[list[tuple[str, str]]],
    rate: int,
    seconds: float,
) -> tuple[int, float]:
    """Send `rate * seconds` SMS at `rate`/s, one batch per tick, the batches round-robin over
    `metadata` (orgs); the number sent and the achieved rate."""
    ticks = int(seconds / TICK)
    per_tick = max(1, round(rate * TICK))
    gate = asyncio.Semaphore(64)
    started = time.monotonic()

    async def one(index: int) -> None:
        async with gate:
            batch = [
                sms_message_pb2.SmsMessage(
                    channel="smpp", to="+27821234567", content=f"Your code is {index}-{n}"
                )
                for n in range(per_tick)
            ]
            await stub.SendSms(
                sms_message_pb2.SendSmsRequest(messages=batch),
                metadata=metadata[index % len(metadata)],
            )

    tasks = []
    for index in range(ticks):
        delay = started + index * TICK - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return ticks * per_tick, ticks * per_tick / (time.monotonic() - started)


async def scenario(
    server: Server,
    name: str,
    count: int,
    seconds: float,
    ceilings: dict[str, float],
    rates: tuple[int, ...],
) -> list[Result]:
    receivers = Receivers(count)
    await receivers.start()
    results = []
    try:
        ceilings[name] = await ceiling(receivers)
        orgs = [f"{ORG}-{name}-{i}" for i in range(count)]
        senders = [[("authorization", f"Bearer {token(org)}")] for org in orgs]
        async with grpc.aio.insecure_channel(server.target) as channel:
            messaging = messaging_service_pb2_grpc.MessagingServiceStub(channel)
            stub = sms_service_pb2_grpc.SmsServiceStub(channel)
            for port, metadata in zip(receivers.ports, senders, strict=True):
                await messaging.CreateEventHandler(
                    mpb.CreateEventHandlerRequest(
                        body=event_handler_pb2.EventHandlerInput(
                            url=f"http://127.0.0.1:{port}/hook", event_types=["sms.accepted"]
                        )
                    ),
                    metadata=metadata,
                )
            warm, _ = await drive(stub, senders, 100, 1.0)  # warm up
            await _settle(receivers, warm)
            for rate in rates:
                receivers.reset()
                events, offered = await drive(stub, senders, rate, seconds)
                await _settle(receivers, events)
                lat = receivers.latencies or [float("nan")]
                result = Result(
                    scenario=name,
                    receivers=count,
                    target_per_second=rate,
                    offered_per_second=round(offered, 1),
                    events=events,
                    received=receivers.received,
                    p50_ms=round(percentile(lat, 0.50), 1),
                    p99_ms=round(percentile(lat, 0.99), 1),
                    max_ms=round(max(lat), 1),
                    ceiling_per_second=round(ceilings[name], 1),
                    ratio_to_ceiling=round(offered / ceilings[name], 3),
                )
                emit(result)
                results.append(result)
    finally:
        await receivers.stop()
    return results


async def _settle(receivers: Receivers, expected: int, within: float = 30.0) -> None:
    """Until `expected` webhooks arrived, or `within` seconds passed."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while receivers.received < expected:
                await receivers.arrived.wait()
                receivers.arrived.clear()


async def main_async(seconds: float, rates: tuple[int, ...], only: str) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    try:
        async with Server(work, webhooks_allow_private_urls="true") as server:
            ceilings: dict[str, float] = {}
            results = []
            if only in ("", "one"):
                results += await scenario(server, "one-receiver", 1, seconds, ceilings, rates)
            if only in ("", "50"):
                results += await scenario(server, "50-receivers", 50, seconds, ceilings, rates)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--rates", default=",".join(map(str, RATES)), help="events/s, e.g. 200,1000"
    )
    parser.add_argument("--only", choices=("", "one", "50"), default="", help="one scenario")
    args = parser.parse_args()
    rates = tuple(int(r) for r in args.rates.split(","))
    results = asyncio.run(main_async(args.seconds, rates, args.only))
    lines = [
        "# Webhooks: event committed → webhook received",
        "",
        f"{utc_stamp()}, {cores()}; `python -m bench.webhooks --seconds {args.seconds:g}`",
        "",
        "| scenario | target/s | offered/s | events | received | p50 ms | p99 ms | max ms "
        "| receivers' ceiling/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.target_per_second} | {r.offered_per_second} | {r.events} "
            f"| {r.received} | {r.p50_ms} | {r.p99_ms} | {r.max_ms} "
            f"| {r.ceiling_per_second} | {r.ratio_to_ceiling} |"
        )
    data = {"platform": platform_info(), "results": [asdict(r) for r in results]}
    write_results("webhooks", data, lines)


if __name__ == "__main__":
    main()
