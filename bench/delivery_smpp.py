"""Benchmark: accepted → delivered messages per second through SMPP, with latency percentiles.

A fresh `switchboard serve` (SQLite, synchronous=FULL, the defaults) routes the SMS API's `smpp`
channel to the development SMSC (`python -m switchboard.devtools.smsc`, another process, which
answers every submit and sends its DELIVRD receipt after --dlr-delay). The bench accepts N
messages through gRPC SendSms (batches of 1000, several requests in flight), then reads every
message's created and last-updated times from the database once all are DELIVERED:

  messages/s        N / (last DELIVERED - first accepted), server clock
  latency           per message, DELIVERED - accepted: p50, p90, p99, max
  ceiling msgs/s    the same N through a bare SmppProvider in this process (no database, no
                    engine), to the same SMSC in the same run: submit and receipt only

Run: `python -m bench.delivery_smpp [--messages 20000] [--rate 500]`; --rate paces the accepts,
so latency is a message's own path rather than a burst's backlog. Writes
bench/results/delivery_smpp[_rate<N>].json and .md. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from bench._harness import Server, auth, emit, percentile, platform_info, write_results
from switchboard.devtools.smsc_process import SmscProcess
from switchboard.server.providers.base import OutboundSms, Receipt
from switchboard.server.providers.smpp import SmppProvider
from switchboard.server.telephony.phone import PhoneNumber

ORG = "bench-delivery"
BATCH = 1000
IN_FLIGHT = 4  # SendSms requests at once


@dataclass
class Result:
    messages: int
    offered_rate: float  # messages/s the bench accepted at (0: all at once)
    seconds: float
    messages_per_second: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    ceiling_messages_per_second: float
    ratio_to_ceiling: float
    smsc_duplicates: int


def _number(i: int) -> str:
    return f"+2782{i:06d}5"  # ends in 5: none of the SMSC's failure rules


async def _accept(port: int, count: int, rate: float) -> None:
    """All at once (rate 0: a burst, batches of 1000), or paced at `rate` messages/s in
    batches of a tenth of a second's worth."""
    metadata = auth(ORG)
    batch = BATCH if not rate else max(1, int(rate / 10))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = sms_service_pb2_grpc.SmsServiceStub(channel)
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def send(start: int) -> None:
            async with gate:
                messages = [
                    pb.SmsMessage(channel="smpp", to=_number(i), content=f"bench {i}")
                    for i in range(start, min(start + batch, count))
                ]
                reply = await stub.SendSms(
                    pb.SendSmsRequest(messages=messages), metadata=metadata, timeout=120
                )
                assert all(m.accepted for m in reply.smpp_msg_response.messages)

        if not rate:
            await asyncio.gather(*(send(start) for start in range(0, count, batch)))
            return
        began = time.perf_counter()
        sending = []
        for number, start in enumerate(range(0, count, batch)):
            await asyncio.sleep(max(0.0, began + number * batch / rate - time.perf_counter()))
            sending.append(asyncio.create_task(send(start)))
        await asyncio.gather(*sending)


def _finished(db: Path) -> tuple[int, list[tuple[str, int, int]]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT status, created_at, updated_at FROM sms_messages").fetchall()
    finally:
        conn.close()
    done = sum(1 for status, *_ in rows if status in ("DELIVERED", "FAILED"))
    return done, rows


def _seconds(micros: int) -> float:
    """SQLite keeps times as microseconds since the epoch (core.db.UtcDateTime)."""
    return micros / 1_000_000


async def ceiling(smsc: SmscProcess, count: int) -> float:
    """The bare provider: submit everything, wait for every receipt, no database."""
    done = asyncio.Event()
    got = 0

    async def receipts(batch: Sequence[Receipt]) -> None:
        nonlocal got
        got += len(batch)
        if got >= count:
            done.set()

    provider = SmppProvider(
        name="ceiling", host="127.0.0.1", port=smsc.port, system_id="c", password="c"
    )
    await provider.start(receipts)
    try:
        async with asyncio.timeout(30):
            while not provider.healthy():  # noqa: ASYNC110 - no "bound" event to wait on
                await asyncio.sleep(0.01)
        start = time.perf_counter()
        for offset in range(0, count, 200):  # the engine's claim size
            results = await provider.submit_many(
                [
                    OutboundSms(f"c{i}", ORG, "smpp", PhoneNumber(_number(i), "MOBILE"), f"c {i}")
                    for i in range(offset, min(offset + 200, count))
                ]
            )
            refused = [r.error for r in results if not r.accepted]
            if refused:
                raise RuntimeError(f"the SMSC refused submits: {refused[:3]}")
        await asyncio.wait_for(done.wait(), 300)
        return count / (time.perf_counter() - start)
    finally:
        await provider.stop()


async def measure(count: int, work: Path, rate: float = 0.0) -> Result:
    smsc = SmscProcess("--dlr-delay", "0.05")
    smsc.start()
    try:
        top = await ceiling(smsc, count)
        smsc.post("/reset", {})
        routes = {
            "smpp": {
                "type": "smpp",
                "host": "127.0.0.1",
                "port": smsc.port,
                "system_id": "switchboard",
                "password": "secret",
            }
        }
        async with Server(work, routes=json.dumps(routes), sms_max_batch=str(BATCH)) as server:
            await _accept(server.port, count, rate)
            deadline = time.monotonic() + 600
            while (finished := _finished(server.db))[0] < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {finished[0]} of {count} finished")
                await asyncio.sleep(0.5)
        rows = finished[1]
        delivered = [(c, u) for status, c, u in rows if status == "DELIVERED"]
        assert len(delivered) == count, "some messages failed"
        latencies = [(_seconds(u) - _seconds(c)) * 1000 for c, u in delivered]
        first = min(_seconds(c) for c, _ in delivered)
        last = max(_seconds(u) for _, u in delivered)
        seconds = last - first
        throughput = count / seconds
        return Result(
            messages=count,
            offered_rate=rate,
            seconds=round(seconds, 3),
            messages_per_second=round(throughput, 1),
            latency_p50_ms=round(percentile(latencies, 0.5), 1),
            latency_p90_ms=round(percentile(latencies, 0.9), 1),
            latency_p99_ms=round(percentile(latencies, 0.99), 1),
            latency_max_ms=round(max(latencies), 1),
            ceiling_messages_per_second=round(top, 1),
            ratio_to_ceiling=round(throughput / top, 3),
            smsc_duplicates=int(smsc.stats()["duplicates"]),
        )
    finally:
        smsc.kill()


def report(result: Result) -> None:
    name = "delivery_smpp" + (f"_rate{result.offered_rate:g}" if result.offered_rate else "")
    pace = f"at {result.offered_rate:g}/s" if result.offered_rate else "as fast as possible"
    lines = [
        "# Accepted → delivered through SMPP (dev SMSC, receipts after 50 ms)",
        "",
        f"Accepted {pace}.",
        "",
        "| messages | msgs/s | ceiling msgs/s | ratio | p50 ms | p90 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result.messages:,} | {result.messages_per_second:,.0f} "
        f"| {result.ceiling_messages_per_second:,.0f} | {result.ratio_to_ceiling:.0%} "
        f"| {result.latency_p50_ms:,.0f} | {result.latency_p90_ms:,.0f} "
        f"| {result.latency_p99_ms:,.0f} | {result.latency_max_ms:,.0f} |",
        "",
        f"Duplicates seen by the SMSC: {result.smsc_duplicates}.",
    ]
    write_results(name, {**platform_info(), **asdict(result)}, lines)
    emit(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="accept at this many messages/s (0: a burst)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report(asyncio.run(measure(args.messages, Path(scratch), args.rate)))


if __name__ == "__main__":
    main()
