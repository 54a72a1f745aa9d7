"""Benchmark: fanning a message request out to a 100,000-contact DYNAMIC group.

A fresh server process (`switchboard serve`, SQLite in WAL mode, synchronous=FULL, the defaults)
runs on a fresh database into which the bench has inserted the contacts directly (all with an
MDN, country ES). Through gRPC it creates an SMS sender (ACTIVE at once in sandbox mode), a
DYNAMIC group `country = ES`, and a message request to that group with `test_message_flag`
(messages are created in state TEST and never sent: only the fan-out is measured), then polls the
request until COMPLETED. Figures:

  messages/s       recipient_count / (request last_updated_date - created_date), server clock
  ceiling msgs/s   the same number of message rows written by a bare `executemany` INSERT into
                   the messages table of another fresh database with the same schema and
                   pragmas, in transactions of the fan-out's batch size (1000), in this process
  peak RSS growth  the server process's VmRSS (sampled every 10 ms from /proc) above its level
                   just before the request was submitted

Run: `python -m bench.message_fanout [--contacts 100000]`. Writes
bench/results/message_fanout.json and .md. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from switchboard.contacts.v1 import contact_group_pb2, contacts_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2 as cpb
from switchboard.messaging.v1 import message_request_pb2, messaging_service_pb2_grpc, sender_pb2
from switchboard.messaging.v1 import messaging_service_pb2 as mpb

from bench._harness import (
    RssSampler,
    Server,
    auth,
    bare_insert,
    emit,
    epoch_micros,
    migrate,
    platform_info,
    with_defaults,
    write_results,
)
from switchboard.server.contacts.models import ContactRecord
from switchboard.server.core.db import table_of
from switchboard.server.core.ids import new_id
from switchboard.server.messaging.requests.models import MessageRecord

BATCH = 1000  # the fan-out's batch size, also the ceiling's transaction size
ORG = "bench-fanout"
CRITERIA = {"all": [{"field": "country", "op": "eq", "value": "ES"}]}


@dataclass
class Result:
    contacts: int
    messages: int
    seconds: float
    messages_per_second: float
    ceiling_messages_per_second: float
    ratio_to_ceiling: float
    rss_before_bytes: int
    peak_rss_growth_bytes: int


def seed_contacts(db: Path, count: int) -> None:
    now = epoch_micros(datetime.now(UTC))
    given = ["id", "org_id", "primary_mdn", "primary_addr_country", "application_id"]
    given += ["created_at", "updated_at", "version"]
    names, rest = with_defaults(table_of(ContactRecord), given)
    values = [
        (new_id("ct_"), ORG, f"+3460{i:07d}", "ES", "bench", now, now, 1, *rest)
        for i in range(count)
    ]
    bare_insert(db, "contacts", names, values, BATCH)


def ceiling(count: int, work: Path) -> float:
    db = work / "ceiling.db"
    migrate(db, work)
    now = epoch_micros(datetime.now(UTC))
    given = ["id", "org_id", "message_request_id", "direction", "to_address", "state", "body"]
    given += ["contact_id", "created_at", "updated_at", "version"]
    names, rest = with_defaults(table_of(MessageRecord), given)
    values = [
        (
            new_id("msg_"),
            ORG,
            "mr_x",
            "MT",
            f"+3460{i:07d}",
            "TEST",
            "hi",
            f"c{i}",
            now,
            now,
            1,
            *rest,
        )
        for i in range(count)
    ]
    return count / bare_insert(db, "messages", names, values, BATCH)


async def measure(count: int, work: Path) -> Result:
    db = work / "server.db"
    migrate(db, work)
    seed_contacts(db, count)
    async with Server(work) as server:
        metadata = auth(ORG)
        async with grpc.aio.insecure_channel(server.target) as channel:
            messaging = messaging_service_pb2_grpc.MessagingServiceStub(channel)
            contacts = contacts_service_pb2_grpc.ContactsServiceStub(channel)
            sender = await messaging.CreateSenderId(
                mpb.CreateSenderIdRequest(
                    body=sender_pb2.SenderIdInput(
                        type_id="sms-long-code", class_id="notifications-na", address="+14155550123"
                    )
                ),
                metadata=metadata,
            )
            group = await contacts.CreateContactGroup(
                cpb.CreateContactGroupRequest(
                    body=contact_group_pb2.ContactGroupInput(
                        name="spain", type="DYNAMIC", criteria=json.dumps(CRITERIA)
                    )
                ),
                metadata=metadata,
            )
            await asyncio.sleep(1.0)  # let the group's own recount settle
            body = message_request_pb2.MessageRequestInput(
                to=[group.id], body="hi", test_message_flag=True
            )
            setattr(body, "from", f"sender_id:{sender.id}")
            with RssSampler(server.process.pid) as sampler:
                before = sampler.rss()
                created = await messaging.SubmitMessageRequest(
                    mpb.SubmitMessageRequestRequest(body=body), metadata=metadata
                )
                read = mpb.ReadMessageRequestRequest(message_request_id=created.id)
                while True:
                    request = await messaging.ReadMessageRequest(read, metadata=metadata)
                    if request.state in ("COMPLETED", "REJECTED", "CANCELED"):
                        break
                    await asyncio.sleep(0.05)
        assert request.state == "COMPLETED", request.state
        seconds = (
            request.last_updated_date.ToDatetime() - request.created_date.ToDatetime()
        ).total_seconds()
        rate = request.recipient_count / seconds
    top = ceiling(count, work)
    return Result(
        contacts=count,
        messages=request.recipient_count,
        seconds=seconds,
        messages_per_second=rate,
        ceiling_messages_per_second=top,
        ratio_to_ceiling=rate / top,
        rss_before_bytes=before,
        peak_rss_growth_bytes=sampler.peak - before,
    )


def write(result: Result) -> None:
    data = {**platform_info(), **asdict(result)}
    mib = 1024 * 1024
    lines = [
        "# Message request fan-out",
        "",
        f"Machine: {data['machine']}, Python {data['python']}. SQLite (WAL, synchronous=FULL).",
        "",
        "| contacts | messages | seconds | messages/s | ceiling msgs/s | ratio | peak RSS growth |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result.contacts:,} | {result.messages:,} | {result.seconds:.1f} "
        f"| {result.messages_per_second:,.0f} | {result.ceiling_messages_per_second:,.0f} "
        f"| {result.ratio_to_ceiling:.2f} | {result.peak_rss_growth_bytes / mib:.1f} MiB |",
        "",
        "Ceiling: a bare `executemany` INSERT of the same number of message rows, 1000 per",
        "transaction, on a fresh database with the same schema. The server also evaluates the",
        "group's criteria, decides consent per recipient, keeps the request's counters and",
        "resume point, and writes one progress event per batch, in each batch's transaction.",
    ]
    write_results("message_fanout", data, lines)


async def main(count: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="switchboard-bench-fanout-"))
    try:
        result = await measure(count, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(result)
    write(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().contacts))
