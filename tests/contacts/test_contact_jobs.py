"""Contact import and export jobs through gRPC and through Envoy's REST, on the session server."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import func, select
from switchboard.contacts.v1 import contact_group_pb2, contact_job_pb2, contacts_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from switchboard.server.app.server import Application
from switchboard.server.attachments.models import Attachment, AttachmentChunk
from switchboard.server.attachments.store import CHUNK_BYTES
from switchboard.server.contacts.models import ContactJobRecord, ContactRecord, JobState
from switchboard.server.contacts.service import ContactService
from switchboard.server.core.db import table_of
from switchboard.server.core.ids import new_id
from tests.support.auth import Metadata, TokenFactory
from tests.support.errors import error_details

Stub = contacts_service_pb2_grpc.ContactsServiceStub
ImportJob = contact_job_pb2.ContactImportJob
ExportJob = contact_job_pb2.ContactExportJob
FINISHED = ("COMPLETED", "FAILED")


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return Stub(channel)


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


async def wait_import(stub: Stub, auth: Metadata, job_id: str, timeout: float = 20) -> ImportJob:
    request = pb.GetContactImportJobRequest(job_id=job_id)
    async with asyncio.timeout(timeout):
        while True:
            job: ImportJob = await stub.GetContactImportJob(request, metadata=auth)
            if job.state in FINISHED:
                return job
            await asyncio.sleep(0.02)


async def wait_export(stub: Stub, auth: Metadata, job_id: str, timeout: float = 20) -> ExportJob:
    request = pb.GetContactExportJobRequest(job_id=job_id)
    async with asyncio.timeout(timeout):
        while True:
            job: ExportJob = await stub.GetContactExportJob(request, metadata=auth)
            if job.state in FINISHED:
                return job
            await asyncio.sleep(0.02)


async def run_import(stub: Stub, auth: Metadata, text: str, **request: Any) -> ImportJob:
    created = await stub.CreateContactImportJob(
        pb.CreateContactImportJobRequest(csv=text, **request), metadata=auth
    )
    return await wait_import(stub, auth, created.id)


async def contacts_of(app: Application, org: str) -> list[Any]:
    table = table_of(ContactRecord)
    async with app.db.read() as session:
        query = select(table).where(table.c.org_id == org).order_by(table.c.id)
        return list((await session.execute(query)).mappings())


async def create_group(stub: Stub, auth: Metadata, **body: Any) -> str:
    request = pb.CreateContactGroupRequest(body=contact_group_pb2.ContactGroupInput(**body))
    group_id: str = (await stub.CreateContactGroup(request, metadata=auth)).id
    return group_id


async def download(stub: Stub, auth: Metadata, job_id: str) -> tuple[str, bytes]:
    call = stub.DownloadContactExport(pb.DownloadContactExportRequest(job_id=job_id), metadata=auth)
    content_type, data = "", b""
    async for body in call:
        content_type = content_type or body.content_type
        data += body.data
    return content_type, data


# -- import ----------------------------------------------------------------------------------------


async def test_import_counts_rows_and_reports_failures_by_line(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    text = (
        "\ufeffexternal_id,first_name,primary_email_addr,primary_addr_country\r\n"
        "c1,Ana,ana@example.com,ES\r\n"
        '"c2","Multi\nline",bo@example.com,ES\r\n'  # one record over lines 3-4
        "c3,Bad,not-an-email,ES\r\n"
        "\r\n"  # blank lines are skipped, not counted
        "c4,Too,many,cells,here\r\n"
        ",,,\r\n"
        "c5,Eve,eve@example.com,PT"  # no final line break
    )
    job = await run_import(stub, auth, text)
    assert job.state == "COMPLETED", job.failure_details
    assert (job.rows_read, job.created_count, job.updated_count) == (5, 3, 0)
    assert (job.imported_count, job.failed_count) == (3, 2)
    assert len(job.failures) == 2
    assert job.failures[0].startswith("line 5: primary_email_addr")
    assert job.failures[1] == "line 7: has 5 values but the header names 4 columns"
    assert job.failures_attachment_id
    assert job.started_date.seconds and job.completed_date.seconds
    assert job.application_id == "test-app"
    rows = await contacts_of(app, org)
    assert sorted(r["external_id"] for r in rows) == ["c1", "c2", "c5"]
    assert {r["external_id"]: r["first_name"] for r in rows}["c2"] == "Multi\nline"
    # The failures file lists every failed row as CSV (line, reason), and is complete.
    store = app.contacts.jobs.store
    attachment = await store.get(org, job.failures_attachment_id)
    assert attachment is not None and attachment["state"] == "UPLOADED"
    content = b"".join([c async for c in store.chunks(org, job.failures_attachment_id)])
    failures = list(csv.reader(io.StringIO(content.decode())))
    assert failures[0] == ["line", "reason"]
    assert [f[0] for f in failures[1:]] == ["5", "7"]
    assert attachment["size_bytes"] == len(content)


async def test_reimport_updates_by_external_id(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    first = await run_import(stub, auth, "external_id,first_name\nx1,Old\nx2,Two\n")
    assert (first.created_count, first.updated_count) == (2, 0)
    second = await run_import(stub, auth, "external_id,last_name\nx1,Smith\nx3,Three\n")
    assert (second.created_count, second.updated_count, second.imported_count) == (1, 1, 2)
    assert not second.failures_attachment_id and second.failed_count == 0
    rows = {r["external_id"]: r for r in await contacts_of(app, org)}
    assert sorted(rows) == ["x1", "x2", "x3"]
    assert (rows["x1"]["first_name"], rows["x1"]["last_name"]) == ("Old", "Smith")


async def test_import_links_contacts_to_a_static_group(
    stub: Stub, auth: Metadata, org: str
) -> None:
    group_id = await create_group(stub, auth, name="imported", type="STATIC")
    job = await run_import(
        stub, auth, "external_id,first_name\ng1,A\ng2,B\ng3,C\n", contact_group_id=group_id
    )
    assert job.state == "COMPLETED" and job.contact_group_id == group_id
    members = await stub.ListGroupContacts(
        pb.ListGroupContactsRequest(group_id=group_id), metadata=auth
    )
    assert sorted(c.external_id for c in members.contacts) == ["g1", "g2", "g3"]
    group = await stub.GetContactGroup(pb.GetContactGroupRequest(group_id=group_id), metadata=auth)
    assert group.member_count == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("externalid,first_name,nickname\nx,y,z\n", "unknown columns: externalid, nickname"),
        ("first_name,First_Name\na,b\n", "duplicate columns: first_name"),
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ("first_name,,last_name\na,b,c\n", "columns without a name: 2"),
    ],
)
async def test_bad_files_fail_the_job(
    app: Application, stub: Stub, auth: Metadata, org: str, text: str, expected: str
) -> None:
    if not text:
        # An empty csv field means "no csv": an empty file can only come as an upload.
        upload = await _upload_raw(app, org, [b""])
        job = await wait_import(
            stub,
            auth,
            (
                await stub.CreateContactImportJob(
                    pb.CreateContactImportJobRequest(import_attachment_id=upload), metadata=auth
                )
            ).id,
        )
    else:
        job = await run_import(stub, auth, text)
    assert job.state == "FAILED"
    assert expected in job.failure_details
    assert job.completed_date.seconds and job.rows_read == 0
    assert await contacts_of(app, org) == []


async def test_invalid_utf8_fails_the_job_after_the_rows_before_it(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    data = b"external_id\nok1\nok2\nbad\xff\n"
    attachment_id = await _upload_raw(app, org, [data])
    created = await stub.CreateContactImportJob(
        pb.CreateContactImportJobRequest(import_attachment_id=attachment_id), metadata=auth
    )
    job = await wait_import(stub, auth, created.id)
    assert job.state == "FAILED"
    assert "not UTF-8" in job.failure_details


async def _upload_raw(app: Application, org: str, pieces: list[bytes]) -> str:
    """An UPLOADED attachment with exactly these bytes (as chunks), bypassing the RPC."""
    store = app.contacts.jobs.store
    now = app.clock.now()

    def work(session: Any) -> str:
        attachment_id = store.create(
            session,
            org_id=org,
            application_id="test-app",
            purpose="contact_import",
            content_type="text/csv",
            now=now,
        )
        store.append(session, attachment_id, [p for p in pieces if p], first_seq=0)
        store.finalize(session, attachment_id, now)
        return attachment_id

    return await app.db.run_write(work)


async def test_create_import_job_validates_its_sources(
    stub: Stub, auth: Metadata, make_token: TokenFactory
) -> None:
    cases: list[tuple[dict[str, str], grpc.StatusCode, list[str]]] = [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, ["import_attachment_id"]),
        (
            {"csv": "first_name\nA\n", "import_attachment_id": "att_x"},
            grpc.StatusCode.INVALID_ARGUMENT,
            ["csv"],
        ),
        ({"import_attachment_id": "att_missing"}, grpc.StatusCode.NOT_FOUND, []),
        (
            {"csv": "first_name\nA\n", "contact_group_id": "grp_missing"},
            grpc.StatusCode.NOT_FOUND,
            [],
        ),
    ]
    for request, code, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.CreateContactImportJob(
                pb.CreateContactImportJobRequest(**request), metadata=auth
            )
        assert failure.value.code() == code, request
        assert [f for f, _ in error_details(failure.value)[2]] == fields
    dynamic = await create_group(
        stub,
        auth,
        name="dyn",
        type="DYNAMIC",
        criteria=json.dumps({"field": "primary_addr_country", "op": "eq", "value": "ES"}),
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.CreateContactImportJob(
            pb.CreateContactImportJobRequest(csv="first_name\nA\n", contact_group_id=dynamic),
            metadata=auth,
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(failure.value)[2] == [("contact_group_id", "Invalid")]
    # Another org's attachment is as unknown as a missing one.
    other = [("authorization", f"Bearer {make_token('org-other-' + uuid.uuid4().hex[:8])}")]
    upload = await stub.UploadContactImportFile(_pieces([b"first_name\nA\n"]), metadata=other)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.CreateContactImportJob(
            pb.CreateContactImportJobRequest(import_attachment_id=upload.import_attachment_id),
            metadata=auth,
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def _pieces(parts: list[bytes]) -> AsyncIterator[pb.UploadContactImportFileRequest]:
    for part in parts:
        yield pb.UploadContactImportFileRequest(data=part)


async def test_client_streaming_upload_of_a_multi_chunk_file(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    header = "external_id,first_name,primary_addr_line1\n"
    # Long rows, so that a file of a few thousand contacts spans several stored chunks; quoted
    # fields with line breaks, so that chunk boundaries fall inside records.
    rows = [f'up{i:05d},First {i},"{"x" * 100}\n{"y" * 100}"\n' for i in range(6000)]
    data = (header + "".join(rows)).encode()
    assert len(data) > 4 * CHUNK_BYTES
    # Pieces that cut lines (and the CSV) anywhere; each at most 1 MiB.
    cuts = [0, 1, 700_000, 700_001, len(data) - 1, len(data)]
    parts = [data[a:b] for a, b in itertools.pairwise(cuts)]
    uploaded = await stub.UploadContactImportFile(_pieces(parts), metadata=auth)
    assert uploaded.size_bytes == len(data)
    chunks_table = table_of(AttachmentChunk)
    async with app.db.read() as session:
        sizes = list(
            (
                await session.execute(
                    select(func.length(chunks_table.c.data))
                    .where(chunks_table.c.attachment_id == uploaded.import_attachment_id)
                    .order_by(chunks_table.c.seq)
                )
            ).scalars()
        )
    assert sum(sizes) == len(data) and len(sizes) > 4
    assert all(size == CHUNK_BYTES for size in sizes[:-1])
    created = await stub.CreateContactImportJob(
        pb.CreateContactImportJobRequest(import_attachment_id=uploaded.import_attachment_id),
        metadata=auth,
    )
    job = await wait_import(stub, auth, created.id, timeout=60)
    assert job.state == "COMPLETED", job.failure_details
    assert (job.rows_read, job.created_count, job.failed_count) == (6000, 6000, 0)
    assert job.import_attachment_id == uploaded.import_attachment_id
    stored = await contacts_of(app, org)
    assert len(stored) == 6000
    assert {r["primary_addr_line1"] for r in stored} == {"x" * 100 + "\n" + "y" * 100}


async def test_upload_limits(app: Application, stub: Stub, auth: Metadata, org: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.UploadContactImportFile(_pieces([b"a" * (1024 * 1024 + 1)]), metadata=auth)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(failure.value)[2] == [("data", "Invalid")]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.UploadContactImportFile(_pieces([]), metadata=auth)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Refused uploads leave nothing behind.
    table = table_of(Attachment)
    async with app.db.read() as session:
        left = (await session.execute(select(table.c.id).where(table.c.org_id == org))).all()
    assert left == []


async def test_uploads_need_a_valid_token(stub: Stub, make_token: TokenFactory) -> None:
    """Client-streaming RPCs pass the same gateway: no token, an expired one, no upload."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.UploadContactImportFile(_pieces([b"first_name\nA\n"]))
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    expired = make_token("org-expired", ttl=timedelta(seconds=-60))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.UploadContactImportFile(
            _pieces([b"first_name\nA\n"]), metadata=[("authorization", f"Bearer {expired}")]
        )
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_jobs_of_another_org_are_not_found(
    stub: Stub, auth: Metadata, make_token: TokenFactory
) -> None:
    job = await run_import(stub, auth, "first_name\nA\n")
    export = await stub.CreateContactExportJob(pb.CreateContactExportJobRequest(), metadata=auth)
    other = [("authorization", f"Bearer {make_token('org-other-' + uuid.uuid4().hex[:8])}")]
    calls = [
        stub.GetContactImportJob(pb.GetContactImportJobRequest(job_id=job.id), metadata=other),
        stub.DeleteContactImportJob(
            pb.DeleteContactImportJobRequest(job_id=job.id), metadata=other
        ),
        stub.GetContactExportJob(pb.GetContactExportJobRequest(job_id=export.id), metadata=other),
        stub.DeleteContactExportJob(
            pb.DeleteContactExportJobRequest(job_id=export.id), metadata=other
        ),
        # Ids of the other kind are unknown too.
        stub.GetContactExportJob(pb.GetContactExportJobRequest(job_id=job.id), metadata=auth),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await download(stub, other, export.id)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListContactImportJobs(pb.ListContactImportJobsRequest(), metadata=other)
    assert list(listed.contact_import_jobs) == []


async def test_list_filters_and_pages(stub: Stub, auth: Metadata) -> None:
    ids = [(await run_import(stub, auth, "first_name\nA\n")).id for _ in range(3)]
    failed = await run_import(stub, auth, "nope\nA\n")
    assert failed.state == "FAILED"
    everything = await stub.ListContactImportJobs(pb.ListContactImportJobsRequest(), metadata=auth)
    assert [j.id for j in everything.contact_import_jobs] == [*ids, failed.id]
    completed = await stub.ListContactImportJobs(
        pb.ListContactImportJobsRequest(state="COMPLETED"), metadata=auth
    )
    assert [j.id for j in completed.contact_import_jobs] == ids
    first = await stub.ListContactImportJobs(
        pb.ListContactImportJobsRequest(limit=2), metadata=auth
    )
    assert [j.id for j in first.contact_import_jobs] == ids[:2] and first.next_page_token
    rest = await stub.ListContactImportJobs(
        pb.ListContactImportJobsRequest(limit=2, page_token=first.next_page_token), metadata=auth
    )
    assert [j.id for j in rest.contact_import_jobs] == [ids[2], failed.id]
    assert not rest.next_page_token
    today = everything.contact_import_jobs[0].created_date.ToDatetime().date().isoformat()
    by_day = await stub.ListContactImportJobs(
        pb.ListContactImportJobsRequest(created_date=today), metadata=auth
    )
    assert len(by_day.contact_import_jobs) == 4
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListContactImportJobs(
            pb.ListContactImportJobsRequest(completed_date="yesterday"), metadata=auth
        )
    assert error_details(failure.value)[2] == [("completed_date", "Format")]


async def test_job_events_are_streamed(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    job = await run_import(stub, auth, "first_name\nA\nB\n")
    export = await stub.CreateContactExportJob(pb.CreateContactExportJobRequest(), metadata=auth)
    await wait_export(stub, auth, export.id)
    await stub.DeleteContactImportJob(
        pb.DeleteContactImportJobRequest(job_id=job.id), metadata=auth
    )
    call = stub.StreamContactsEvents(
        pb.StreamContactsEventsRequest(
            after="0",
            types=[
                "contact_import_job.created",
                "contact_import_job.progress",
                "contact_import_job.completed",
                "contact_import_job.deleted",
                "contact_export_job.created",
                "contact_export_job.completed",
            ],
            heartbeat_seconds=1,
        ),
        metadata=auth,
    )
    seen: list[tuple[str, str, str]] = []
    async with asyncio.timeout(10):
        async for event in call:
            if event.envelope.type == "heartbeat":
                break
            kind = event.WhichOneof("resource")
            resource = getattr(event, kind)
            seen.append((event.envelope.type, resource.id, resource.state))
    call.cancel()
    assert seen == [
        ("contact_import_job.created", job.id, "CREATED"),
        ("contact_import_job.completed", job.id, "COMPLETED"),
        ("contact_export_job.created", export.id, "CREATED"),
        ("contact_export_job.completed", export.id, "COMPLETED"),
        ("contact_import_job.deleted", job.id, "COMPLETED"),
    ]


async def test_a_job_left_by_a_dead_worker_resumes_after_its_last_batch(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    """A RUNNING job whose lease ran out, having read 2 rows: the rest is imported, once."""
    attachment_id = await _upload_raw(app, org, [b"external_id\nr1\nr2\nr3\n\nr4\n"])
    now = app.clock.now()
    job = ContactJobRecord(
        id=new_id("cij_"),
        org_id=org,
        kind="IMPORT",
        attachment_id=attachment_id,
        state=JobState.RUNNING.value,
        rows_read=2,
        created_count=2,
        failures=[],
        lease_until=now - timedelta(seconds=1),
        started_at=now,
        application_id="test-app",
        created_at=now,
        updated_at=now,
    )
    async with app.db.write() as session:
        session.add(job)
    app.contacts.jobs._wake()
    done = await wait_import(stub, auth, job.id)
    assert (done.state, done.rows_read, done.created_count) == ("COMPLETED", 4, 4)
    assert sorted(r["external_id"] for r in await contacts_of(app, org)) == ["r3", "r4"]


# -- export ----------------------------------------------------------------------------------------


def _parse(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


async def test_export_all_contacts_and_download(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    text = csv_text(
        ["external_id", "first_name", "extended_attributes", "primary_addr_country"],
        [[f"e{i}", f"Name, {i}", json.dumps({"n": i}), "ES"] for i in range(25)],
    )
    assert (await run_import(stub, auth, text)).created_count == 25
    created = await stub.CreateContactExportJob(pb.CreateContactExportJobRequest(), metadata=auth)
    job = await wait_export(stub, auth, created.id)
    assert (job.state, job.exported_count) == ("COMPLETED", 25), job.failure_details
    assert job.export_attachment_id and job.started_date.seconds and job.completed_date.seconds
    content_type, data = await download(stub, auth, job.id)
    assert content_type.startswith("text/csv")
    header = next(csv.reader(io.StringIO(data.decode())))
    assert header == ContactService.CSV_COLUMNS
    exported = _parse(data)
    stored = await contacts_of(app, org)
    assert [r["id"] for r in exported] == [r["id"] for r in stored]
    by_external_id = {r["external_id"]: r for r in exported}
    assert by_external_id["e3"]["first_name"] == "Name, 3"
    assert json.loads(by_external_id["e7"]["extended_attributes"]) == {"n": 7}
    # The file re-imports as is: every row updates its contact.
    again = await run_import(stub, auth, data.decode())
    assert (again.state, again.updated_count, again.created_count) == ("COMPLETED", 25, 0)


async def test_export_of_groups(stub: Stub, auth: Metadata) -> None:
    text = csv_text(
        ["external_id", "primary_addr_country"],
        [[f"k{i}", "ES" if i % 3 == 0 else "FR"] for i in range(12)],
    )
    static = await create_group(stub, auth, name="static", type="STATIC")
    await run_import(stub, auth, text)
    await run_import(stub, auth, "external_id\nk1\nk2\n", contact_group_id=static)
    dynamic = await create_group(
        stub,
        auth,
        name="spain",
        type="DYNAMIC",
        criteria=json.dumps({"field": "primary_addr_country", "op": "eq", "value": "ES"}),
    )
    for group_id, expected in [(static, ["k1", "k2"]), (dynamic, ["k0", "k3", "k6", "k9"])]:
        created = await stub.CreateContactExportJob(
            pb.CreateContactExportJobRequest(contact_group_id=group_id), metadata=auth
        )
        job = await wait_export(stub, auth, created.id)
        assert job.state == "COMPLETED" and job.contact_group_id == group_id
        rows = _parse((await download(stub, auth, job.id))[1])
        assert sorted(r["external_id"] for r in rows) == expected
        assert job.exported_count == len(expected)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.CreateContactExportJob(
            pb.CreateContactExportJobRequest(contact_group_id="grp_nope"), metadata=auth
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_empty_export_is_a_header(stub: Stub, auth: Metadata) -> None:
    created = await stub.CreateContactExportJob(pb.CreateContactExportJobRequest(), metadata=auth)
    job = await wait_export(stub, auth, created.id)
    assert (job.state, job.exported_count) == ("COMPLETED", 0)
    content_type, data = await download(stub, auth, job.id)
    assert content_type.startswith("text/csv")
    assert data.decode().strip() == ",".join(ContactService.CSV_COLUMNS)


async def test_download_needs_a_completed_export(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    now = app.clock.now()
    failed = ContactJobRecord(
        id=new_id("cej_"),
        org_id=org,
        kind="EXPORT",
        state=JobState.FAILED.value,
        failure_details="group deleted",
        application_id="test-app",
        created_at=now,
        updated_at=now,
    )
    async with app.db.write() as session:
        session.add(failed)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await download(stub, auth, failed.id)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await download(stub, auth, "cej_unknown")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_removes_the_job_and_its_files(
    app: Application, stub: Stub, auth: Metadata, org: str
) -> None:
    job = await run_import(stub, auth, "external_id,primary_email_addr\na,bad\nb,b@example.com\n")
    assert job.failures_attachment_id
    export = await wait_export(
        stub,
        auth,
        (await stub.CreateContactExportJob(pb.CreateContactExportJobRequest(), metadata=auth)).id,
    )
    await stub.DeleteContactImportJob(
        pb.DeleteContactImportJobRequest(job_id=job.id), metadata=auth
    )
    await stub.DeleteContactExportJob(
        pb.DeleteContactExportJobRequest(job_id=export.id), metadata=auth
    )
    table = table_of(Attachment)
    async with app.db.read() as session:
        left = (await session.execute(select(table.c.id).where(table.c.org_id == org))).all()
    assert left == []
    for call in (
        stub.GetContactImportJob(pb.GetContactImportJobRequest(job_id=job.id), metadata=auth),
        stub.DeleteContactExportJob(
            pb.DeleteContactExportJobRequest(job_id=export.id), metadata=auth
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(await contacts_of(app, org)) == 1  # imported contacts stay


# -- REST through Envoy ----------------------------------------------------------------------------


@pytest.mark.envoy
async def test_rest_import_list_get_delete(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    created = await http.post(
        "/contactimport",
        json={"csv": "external_id,first_name\nr1,Ann\nr2,Bob\nr2,Bob again\n"},
        headers=bearer,
    )
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    async with asyncio.timeout(20):
        while (job := (await http.get(f"/contactimport/{job_id}", headers=bearer)).json())[
            "state"
        ] not in FINISHED:
            await asyncio.sleep(0.05)
    assert job["state"] == "COMPLETED"
    assert (job["imported_count"], job["created_count"], job["updated_count"]) == (3, 2, 1)
    assert job["failed_count"] == 0 and job["failures"] == []
    assert job["failures_attachment_id"] == "" and job["contact_group_id"] == ""
    assert job["completed_date"].endswith("Z") and job["version_number"] >= 2
    listed = await http.get("/contactimport", headers=bearer)
    assert listed.status_code == 200 and [j["id"] for j in listed.json()] == [job_id]
    filtered = await http.get("/contactimport", params={"state": "RUNNING"}, headers=bearer)
    assert filtered.json() == []
    # Filters are accepted and ignored on the item GET.
    assert (
        await http.get(f"/contactimport/{job_id}", params={"state": "X"}, headers=bearer)
    ).status_code == 200
    other = {"Authorization": f"Bearer {make_token('org-rest-' + uuid.uuid4().hex[:8])}"}
    assert (await http.get(f"/contactimport/{job_id}", headers=other)).status_code == 404
    assert (await http.delete(f"/contactimport/{job_id}", headers=other)).status_code == 404
    deleted = await http.delete(f"/contactimport/{job_id}", headers=bearer)
    assert deleted.status_code == 200
    assert (await http.get(f"/contactimport/{job_id}", headers=bearer)).status_code == 404


@pytest.mark.envoy
async def test_rest_import_errors(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    neither = await http.post("/contactimport", json={}, headers=bearer)
    assert neither.status_code == 400
    assert neither.json()["error_code"] == "400"
    assert "import_attachment_id" in neither.json()["error_description"]
    both = await http.post(
        "/contactimport", json={"csv": "a\n", "import_attachment_id": "x"}, headers=bearer
    )
    assert both.status_code == 400 and "csv" in both.json()["error_description"]
    missing = await http.post(
        "/contactimport", json={"csv": "a\n", "contact_group_id": "nope"}, headers=bearer
    )
    assert missing.status_code == 404


@pytest.mark.envoy
async def test_rest_export_and_download(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    created = await http.post(
        "/contactimport",
        json={"csv": 'external_id,first_name\nd1,Ann\nd2,"Bob ""B"""\n'},
        headers=bearer,
    )
    assert created.status_code == 200
    import_id = created.json()["id"]
    async with asyncio.timeout(20):
        while (await http.get(f"/contactimport/{import_id}", headers=bearer)).json()[
            "state"
        ] not in FINISHED:
            await asyncio.sleep(0.05)
    export = await http.post("/contactexport", json={}, headers=bearer)
    assert export.status_code == 200, export.text
    export_id = export.json()["id"]
    async with asyncio.timeout(20):
        while (job := (await http.get(f"/contactexport/{export_id}", headers=bearer)).json())[
            "state"
        ] not in FINISHED:
            await asyncio.sleep(0.05)
    assert (job["state"], job["exported_count"]) == ("COMPLETED", 2)
    assert job["export_attachment_id"]
    content = await http.get(f"/contactexport/{export_id}/content", headers=bearer)
    assert content.status_code == 200
    assert content.headers["content-type"].startswith("text/csv")
    rows = _parse(content.content)
    assert sorted((r["external_id"], r["first_name"]) for r in rows) == [
        ("d1", "Ann"),
        ("d2", 'Bob "B"'),
    ]
    listed = await http.get("/contactexport", params={"state": "COMPLETED"}, headers=bearer)
    assert export_id in [j["id"] for j in listed.json()]
    other = {"Authorization": f"Bearer {make_token('org-rest-' + uuid.uuid4().hex[:8])}"}
    foreign = await http.get(f"/contactexport/{export_id}/content", headers=other)
    assert foreign.status_code == 404
    assert (await http.delete(f"/contactexport/{export_id}", headers=bearer)).status_code == 200
    assert (
        await http.get(f"/contactexport/{export_id}/content", headers=bearer)
    ).status_code == 404


@pytest.mark.envoy
async def test_rest_download_of_an_imports_failed_rows(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    created = await http.post(
        "/contactimport",
        json={"csv": "external_id,birth_date\nf1,1990-01-01\nf2,yesterday\nf3,1990-02-30\n"},
        headers=bearer,
    )
    job_id = created.json()["id"]
    async with asyncio.timeout(20):
        while (job := (await http.get(f"/contactimport/{job_id}", headers=bearer)).json())[
            "state"
        ] not in FINISHED:
            await asyncio.sleep(0.05)
    assert (job["imported_count"], job["failed_count"]) == (1, 2)
    failures = await http.get(f"/contactimport/{job_id}/failures", headers=bearer)
    assert failures.status_code == 200
    assert failures.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(failures.text)))
    assert rows[0] == ["line", "reason"]
    assert [(r[0], r[1].split(":")[0]) for r in rows[1:]] == [
        ("3", "birth_date"),
        ("4", "birth_date"),
    ]
    other = {"Authorization": f"Bearer {make_token('org-f-' + uuid.uuid4().hex[:8])}"}
    assert (await http.get(f"/contactimport/{job_id}/failures", headers=other)).status_code == 404
    clean = await http.post("/contactimport", json={"csv": "first_name\nOk\n"}, headers=bearer)
    clean_id = clean.json()["id"]
    async with asyncio.timeout(20):
        while (await http.get(f"/contactimport/{clean_id}", headers=bearer)).json()[
            "state"
        ] not in FINISHED:
            await asyncio.sleep(0.05)
    none = await http.get(f"/contactimport/{clean_id}/failures", headers=bearer)
    assert none.status_code == 404 and none.json()["error_code"] == "404"
