"""Benchmark: importing contacts from CSV through the real server, and counting a DYNAMIC group.

For each file size a fresh server process (`switchboard serve`, SQLite in WAL mode with
synchronous=FULL, the defaults) is started on a fresh database. The client uploads the generated
CSV with the client-streaming UploadContactImportFile (1 MiB messages), creates the import job
and polls it until COMPLETED. Figures:

  import rows/s    data rows / (job completed_date - job created_date), the server's own clock
  ceiling rows/s   the same rows written by a bare `executemany` INSERT into the contacts table of
                   another fresh database with the same schema and pragmas, in transactions of
                   the same size as the job's batches (contact_job_batch_rows), in this process
  peak RSS growth  the server process's resident set (VmRSS in /proc, sampled every 10 ms)
                   above its level just before the upload, once warmed up by a 100-row import;
                   measured outside the process, so it includes everything the process holds

Then, on the largest import's server, a DYNAMIC group `primary_addr_country = ES` is created
and timed until its status is Ready with its member_count; the ceiling is the raw
`SELECT count(*)` with the same predicate on the same database file.

Run: `make bench` (or `python -m bench.contacts_import --rows 10000 100000`). Writes
bench/results/contacts_import.json and .md. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from switchboard.contacts.v1 import contact_group_pb2, contacts_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from bench._harness import (
    RssSampler,
    Server,
    auth,
    bare_insert,
    cores,
    emit,
    epoch_micros,
    migrate,
    utc_stamp,
    with_defaults,
    write_results,
)
from switchboard.server.contacts.models import ContactRecord
from switchboard.server.core.db import table_of
from switchboard.server.core.ids import new_id

BATCH_ROWS = 1000  # the server's default contact_job_batch_rows, also the ceiling's transaction
COLUMNS = [
    "external_id",
    "first_name",
    "last_name",
    "primary_mdn",
    "primary_email_addr",
    "primary_addr_city",
    "primary_addr_country",
]
COUNTRIES = ["ES", "FR", "DE", "IT", "PT"]
CITIES = {"ES": "Madrid", "FR": "Paris", "DE": "Berlin", "IT": "Roma", "PT": "Lisboa"}
CRITERIA = {"field": "primary_addr_country", "op": "eq", "value": "ES"}


@dataclass
class ImportRun:
    rows: int
    file_bytes: int
    upload_seconds: float
    import_seconds: float  # the job's completed_date - created_date
    wall_seconds: float  # create call to COMPLETED seen by polling
    rows_per_second: float
    created: int
    failed: int
    rss_before_mib: float
    rss_peak_mib: float
    rss_growth_mib: float
    rss_growth_at_tenth_mib: float  # the peak growth when a tenth of the rows were imported
    ceiling_rows_per_second: float | None = None
    ratio_to_ceiling: float | None = None


@dataclass
class GroupCount:
    contacts: int
    members: int
    ready_seconds: float
    raw_count: int
    raw_count_seconds: float
    ratio: float


@dataclass
class Report:
    runs: list[ImportRun] = field(default_factory=list)
    group: GroupCount | None = None


def generate(rows: int, seed: int = 7) -> Iterator[list[str]]:
    rng = random.Random(seed)
    for i in range(rows):
        country = COUNTRIES[i % len(COUNTRIES)]
        yield [
            f"ext-{i:08d}",
            rng.choice(["Ana", "Luis", "Marie", "Jan", "Giulia", "João"]),
            f"Surname{i}",
            f"+3460{i:07d}",
            f"user{i}@example.com",
            CITIES[country],
            country,
        ]


def csv_bytes(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerows(generate(rows))
    return out.getvalue().encode()


async def upload(
    stub: contacts_service_pb2_grpc.ContactsServiceStub, metadata: Any, data: bytes
) -> str:
    async def pieces() -> AsyncIterator[pb.UploadContactImportFileRequest]:
        step = 1024 * 1024
        for start in range(0, len(data), step):
            yield pb.UploadContactImportFileRequest(data=data[start : start + step])

    reply = await stub.UploadContactImportFile(pieces(), metadata=metadata)
    assert reply.size_bytes == len(data)
    attachment_id: str = reply.import_attachment_id
    return attachment_id


async def import_file(
    stub: contacts_service_pb2_grpc.ContactsServiceStub,
    metadata: Any,
    attachment_id: str,
    progress: Callable[[int], None] = lambda rows: None,
) -> tuple[Any, float]:
    start = time.perf_counter()
    created = await stub.CreateContactImportJob(
        pb.CreateContactImportJobRequest(import_attachment_id=attachment_id), metadata=metadata
    )
    request = pb.GetContactImportJobRequest(job_id=created.id)
    while True:
        job = await stub.GetContactImportJob(request, metadata=metadata)
        if job.state in ("COMPLETED", "FAILED"):
            break
        progress(job.rows_read)
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - start
    if job.state != "COMPLETED":
        raise RuntimeError(f"import failed: {job.failure_details}")
    return job, wall


def seconds_between(job: Any) -> float:
    created = job.created_date.ToDatetime()
    completed = job.completed_date.ToDatetime()
    return float((completed - created).total_seconds())


async def measure_import(rows: int, work: Path, report: Report) -> Server:
    """Runs one import on a fresh server; returns the server (still running)."""
    # The job's batch size pinned to the ceiling's transaction size.
    server = Server(work, contact_job_batch_rows=str(BATCH_ROWS))
    await server.wait_serving()
    data = csv_bytes(rows)
    metadata = auth(f"bench-{rows}")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
        # Warm-up: every code path loaded, caches filled, before the baseline is taken.
        warm = await upload(stub, auth("bench-warmup"), csv_bytes(100))
        await import_file(stub, auth("bench-warmup"), warm)
        await asyncio.sleep(0.5)
        with RssSampler(server.process.pid) as sampler:
            before = sampler.rss()
            start = time.perf_counter()
            attachment_id = await upload(stub, metadata, data)
            upload_seconds = time.perf_counter() - start
            # The peak so far once a tenth of the rows are in: memory that grew with the file
            # would keep growing after that, memory bounded by the batch size would not.
            early: list[int] = []

            def progress(read: int) -> None:
                if read >= rows // 10 and not early:
                    early.append(sampler.peak)

            job, wall = await import_file(stub, metadata, attachment_id, progress)
    seconds = seconds_between(job)
    run = ImportRun(
        rows=rows,
        file_bytes=len(data),
        upload_seconds=upload_seconds,
        import_seconds=seconds,
        wall_seconds=wall,
        rows_per_second=rows / seconds,
        created=job.created_count,
        failed=job.failed_count,
        rss_before_mib=before / 2**20,
        rss_peak_mib=sampler.peak / 2**20,
        rss_growth_mib=(sampler.peak - before) / 2**20,
        rss_growth_at_tenth_mib=((early or [sampler.peak])[0] - before) / 2**20,
    )
    report.runs.append(run)
    emit(run)
    return server


def ceiling(rows: int, work: Path) -> float:
    """Rows/s of a bare executemany INSERT of the same rows, same schema and pragmas."""
    db = work / "ceiling.db"
    migrate(db, work)
    micros = epoch_micros(datetime.now(UTC))
    given = ["id", "org_id", *COLUMNS, "application_id", "created_at", "updated_at", "version"]
    names, rest = with_defaults(table_of(ContactRecord), given)
    values = [
        (new_id("ct_"), "bench-ceiling", *row, "bench", micros, micros, 1, *rest)
        for row in generate(rows)
    ]
    elapsed = bare_insert(db, "contacts", names, values, BATCH_ROWS, foreign_keys=True)
    conn = sqlite3.connect(db)
    count = conn.execute("SELECT count(*) FROM contacts").fetchone()[0]
    conn.close()
    assert count == rows, count
    return rows / elapsed


async def measure_group(server: Server, rows: int, report: Report) -> None:
    metadata = auth(f"bench-{rows}")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
        body = contact_group_pb2.ContactGroupInput(
            name="spain", type="DYNAMIC", criteria=json.dumps(CRITERIA)
        )
        start = time.perf_counter()
        created = await stub.CreateContactGroup(
            pb.CreateContactGroupRequest(body=body), metadata=metadata
        )
        request = pb.GetContactGroupRequest(group_id=created.id)
        while True:  # polled: the time to Ready is what is measured
            group = await stub.GetContactGroup(request, metadata=metadata)
            if group.status == "Ready":
                break
            await asyncio.sleep(0.005)
        ready = time.perf_counter() - start
    conn = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)
    start = time.perf_counter()
    raw = conn.execute(
        "SELECT count(*) FROM contacts WHERE org_id = ? AND primary_addr_country = ?",
        (f"bench-{rows}", "ES"),
    ).fetchone()[0]
    raw_seconds = time.perf_counter() - start
    conn.close()
    result = GroupCount(
        contacts=rows,
        members=group.member_count,
        ready_seconds=ready,
        raw_count=raw,
        raw_count_seconds=raw_seconds,
        ratio=raw_seconds / ready,
    )
    report.group = result
    emit(result)


async def main(sizes: list[int], group: bool) -> None:
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="switchboard-bench-contacts-"))
    try:
        for rows in sorted(sizes):
            run_dir = work / f"rows-{rows}"
            run_dir.mkdir()
            server = await measure_import(rows, run_dir, report)
            try:
                if group and rows == max(sizes):
                    await measure_group(server, rows, report)
            finally:
                server.stop()
            run = report.runs[-1]
            run.ceiling_rows_per_second = ceiling(rows, run_dir)
            run.ratio_to_ceiling = run.rows_per_second / run.ceiling_rows_per_second
            print(f"ceiling {rows}: {run.ceiling_rows_per_second:,.0f} rows/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(report)


def write(report: Report) -> None:
    lines = [
        "# Contact import",
        "",
        f"{utc_stamp()}, {cores()}; one server process (`switchboard serve`) per size on a fresh "
        "SQLite database (WAL, synchronous=FULL), batches of "
        f"{BATCH_ROWS} rows per transaction; the client uploads with the client-streaming RPC "
        "in 1 MiB messages, then creates the job and polls it.",
        "",
        "| rows | file MiB | upload s | import s | import rows/s | ceiling rows/s | "
        "import / ceiling | server RSS before MiB | peak RSS growth MiB: at 10% of rows | "
        "at the end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report.runs:
        lines.append(
            f"| {run.rows:,} | {run.file_bytes / 2**20:.1f} | {run.upload_seconds:.2f} | "
            f"{run.import_seconds:.1f} | {run.rows_per_second:,.0f} | "
            f"{run.ceiling_rows_per_second or 0:,.0f} | {run.ratio_to_ceiling or 0:.1%} | "
            f"{run.rss_before_mib:.0f} | {run.rss_growth_at_tenth_mib:.1f} | "
            f"{run.rss_growth_mib:.1f} |"
        )
    lines += [
        "",
        "Import time is the job's own `completed_date - created_date`. The ceiling is a bare "
        "`executemany` INSERT of the same rows into `contacts` (same schema, indexes and "
        "pragmas, same transaction size) from this process: no validation, no upsert lookup, "
        "no events, no CSV.",
        "",
        "Peak RSS growth is measured from outside the server process: VmRSS sampled every "
        "10 ms from the upload's start to the job's completion, minus the level just before "
        "(after a warm-up import). It covers everything the process holds: gRPC buffers of "
        "the upload, one batch of rows with their contacts and events, and SQLite's page "
        "caches (up to 2 MiB per pooled connection by default), which fill as the database "
        "grows and then stay. Memory that grew with the file would keep climbing after the "
        "first tenth of the rows; the two growth columns show whether it does.",
    ]
    if report.group is not None:
        g = report.group
        lines += [
            "",
            "## Counting a DYNAMIC group",
            "",
            f"Group `primary_addr_country = ES` over {g.contacts:,} contacts: created, then "
            f"status `Ready` with member_count {g.members:,} after {g.ready_seconds * 1000:,.0f} "
            f"ms (create, the maintenance worker's wake-up and settle delay, the count, polling "
            f"every 5 ms). Ceiling: the raw `SELECT count(*)` with the same predicate on the "
            f"same file took {g.raw_count_seconds * 1000:,.1f} ms ({g.raw_count:,} rows): "
            f"{g.ratio:.1%} of the group's time.",
        ]
    data = {
        "runs": [asdict(r) for r in report.runs],
        "group": report.group and asdict(report.group),
    }
    write_results("contacts_import", data, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--no-group", action="store_true", help="skip the DYNAMIC group count")
    args = parser.parse_args()
    asyncio.run(main(args.rows, not args.no_group))
