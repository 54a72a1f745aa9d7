"""Contact jobs across restarts and interruptions: they resume after their last committed batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from switchboard.contacts.v1 import contacts_service_pb2 as pb
from switchboard.contacts.v1 import contacts_service_pb2_grpc

from switchboard.server.app.server import Application, build_application
from switchboard.server.attachments.models import Attachment
from switchboard.server.contacts.job_worker import ContactJobWorker
from switchboard.server.contacts.jobs import jobs
from switchboard.server.contacts.models import ContactRecord
from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.db import table_of
from switchboard.server.core.models import EventRecord
from tests.support.auth import TEST_SECRET
from tests.support.clock import TEST_CLOCK
from tests.support.server import make_settings

Stub = contacts_service_pb2_grpc.ContactsServiceStub
_contacts = table_of(ContactRecord)
_attachments = table_of(Attachment)
_events = table_of(EventRecord)


def _auth(org: str) -> list[tuple[str, str]]:
    token = TokenService(TEST_SECRET, TEST_CLOCK).issue(
        org=org, roles=[Role.CLIENT], subject="restart-test"
    )
    return [("authorization", f"Bearer {token}")]


async def _started(tmp: Path, url: str, **overrides: Any) -> Application:
    values: dict[str, Any] = {
        "drain_seconds": 0.2,
        "contact_job_batch_rows": 10,
        "contact_job_poll_seconds": 0.2,
    }
    settings = make_settings(tmp, database_url=url, **(values | overrides))
    app = build_application(settings)
    await app.start()
    return app


def _job_worker(app: Application) -> ContactJobWorker:
    return next(w for w in app.contacts.workers if isinstance(w, ContactJobWorker))


@pytest.fixture
async def first(tmp_path: Path, fresh_database_url: str) -> AsyncIterator[Application]:
    app = await _started(tmp_path, fresh_database_url)
    yield app
    await app.stop()


async def _job_row(app: Application, job_id: str) -> Any:
    async with app.db.read() as session:
        return (await session.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one()


async def _count(app: Application, org: str) -> tuple[int, int]:
    """(contacts, distinct external ids) of the org."""
    query = select(func.count(), func.count(func.distinct(_contacts.c.external_id))).where(
        _contacts.c.org_id == org
    )
    async with app.db.read() as session:
        total, distinct = (await session.execute(query)).one()
    return int(total), int(distinct)


async def _wait_rows(stub: Stub, auth: list[tuple[str, str]], job_id: str, rows: int) -> Any:
    request = pb.GetContactImportJobRequest(job_id=job_id)
    async with asyncio.timeout(30):
        while (job := await stub.GetContactImportJob(request, metadata=auth)).rows_read < rows:
            assert job.state in ("CREATED", "RUNNING"), job
            await asyncio.sleep(0.005)
    return job


def _big_csv(rows: int) -> str:
    # Every other row has no external_id: importing such a row twice would duplicate a contact.
    lines = ["external_id,first_name,primary_addr_country"]
    lines += [(f"ext{i:05d}" if i % 2 else "") + f",Name {i},ES" for i in range(rows)]
    return "\n".join(lines) + "\n"


async def test_an_import_stopped_mid_way_resumes_after_a_restart(
    tmp_path: Path, fresh_database_url: str
) -> None:
    org, auth = "org-import-restart", _auth("org-import-restart")
    total = 2000
    app = await _started(tmp_path, fresh_database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = Stub(channel)
            created = await stub.CreateContactImportJob(
                pb.CreateContactImportJobRequest(csv=_big_csv(total)), metadata=auth
            )
            await _wait_rows(stub, auth, created.id, 30)
            await _job_worker(app).stop()  # finishes its batch and hands the job back
    finally:
        await app.stop()
    stopped = await _job_row_in(tmp_path, fresh_database_url, created.id)
    assert stopped["state"] == "RUNNING" and stopped["lease_until"] is None
    assert 30 <= stopped["rows_read"] < total
    assert stopped["rows_read"] % 10 == 0  # whole batches only
    assert stopped["created_count"] == stopped["rows_read"]

    second = await _started(tmp_path, fresh_database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            stub = Stub(channel)
            job = await _wait_rows(stub, auth, created.id, total)
            async with asyncio.timeout(10):
                while job.state != "COMPLETED":
                    job = await stub.GetContactImportJob(
                        pb.GetContactImportJobRequest(job_id=created.id), metadata=auth
                    )
                    await asyncio.sleep(0.02)
        assert (job.rows_read, job.created_count, job.updated_count) == (total, total, 0)
        assert job.failed_count == 0
        assert await _count(second, org) == (total, total // 2)
        # Progress events: one per committed batch, never two for the same rows.
        async with second.db.read() as session:
            payloads = (
                await session.execute(
                    select(_events.c.payload)
                    .where(_events.c.resource_id == created.id)
                    .order_by(_events.c.seq)
                )
            ).scalars()
            read = [p["rows_read"] for p in payloads]
        assert read == sorted(read) and len(read) == len(set(read))
        assert read[-1] == total
    finally:
        await second.stop()


async def _job_row_in(tmp: Path, url: str, job_id: str) -> Any:
    """Read the job with a throwaway application object (the database outlives processes)."""
    app = build_application(make_settings(tmp, database_url=url))
    try:
        return await _job_row(app, job_id)
    finally:
        await app.db.dispose()


async def test_deleting_a_running_import_stops_it_after_its_batch(first: Application) -> None:
    org, auth = "org-import-delete", _auth("org-import-delete")
    total = 3000
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        stub = Stub(channel)
        created = await stub.CreateContactImportJob(
            pb.CreateContactImportJobRequest(csv=_big_csv(total)), metadata=auth
        )
        await _wait_rows(stub, auth, created.id, 20)
        await stub.DeleteContactImportJob(
            pb.DeleteContactImportJobRequest(job_id=created.id), metadata=auth
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.GetContactImportJob(
                pb.GetContactImportJobRequest(job_id=created.id), metadata=auth
            )
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        imported, _ = await _count(first, org)
        await asyncio.sleep(0.5)
        assert await _count(first, org) == (imported, imported // 2)  # nothing more came in
        assert 20 <= imported < total
        async with first.db.read() as session:
            files = (
                await session.execute(select(_attachments.c.id).where(_attachments.c.org_id == org))
            ).all()
            types = list(
                (
                    await session.execute(
                        select(_events.c.type)
                        .where(_events.c.resource_id == created.id)
                        .order_by(_events.c.seq)
                    )
                ).scalars()
            )
        assert files == []
        assert types[0] == "contact_import_job.created"
        assert types[-1] == "contact_import_job.deleted"
        assert "contact_import_job.completed" not in types
        # The worker is free for the next job.
        again = await stub.CreateContactImportJob(
            pb.CreateContactImportJobRequest(csv="external_id\nafter\n"), metadata=auth
        )
        job = await _wait_rows(stub, auth, again.id, 1)
        assert job.created_count == 1


async def test_an_export_stopped_mid_way_resumes_after_a_restart(
    tmp_path: Path, fresh_database_url: str
) -> None:
    org, auth = "org-export-restart", _auth("org-export-restart")
    total = 1500
    app = await _started(tmp_path, fresh_database_url, contact_job_batch_rows=500)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = Stub(channel)
            created = await stub.CreateContactImportJob(
                pb.CreateContactImportJobRequest(csv=_big_csv(total)), metadata=auth
            )
            await _wait_rows(stub, auth, created.id, total)
    finally:
        await app.stop()
    # Small batches now: the export is stopped after a few.
    app = await _started(tmp_path, fresh_database_url, contact_job_batch_rows=10)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = Stub(channel)
            export = await stub.CreateContactExportJob(
                pb.CreateContactExportJobRequest(), metadata=auth
            )
            request = pb.GetContactExportJobRequest(job_id=export.id)
            async with asyncio.timeout(30):
                while (await stub.GetContactExportJob(request, metadata=auth)).exported_count < 30:
                    await asyncio.sleep(0.005)
            await _job_worker(app).stop()
            stopped = await stub.GetContactExportJob(request, metadata=auth)
            assert stopped.state == "RUNNING" and 30 <= stopped.exported_count < total
    finally:
        await app.stop()
    app = await _started(tmp_path, fresh_database_url, contact_job_batch_rows=100)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = Stub(channel)
            async with asyncio.timeout(30):
                while (job := await stub.GetContactExportJob(request, metadata=auth)).state != (
                    "COMPLETED"
                ):
                    await asyncio.sleep(0.02)
            assert job.exported_count == total
            call = stub.DownloadContactExport(
                pb.DownloadContactExportRequest(job_id=export.id), metadata=auth
            )
            data = b"".join([body.data async for body in call])
        lines = data.decode().splitlines()
        ids = [line.split(",", 1)[0] for line in lines[1:]]
        assert lines[0].startswith("id,external_id,")
        assert len(ids) == total and len(set(ids)) == total and ids == sorted(ids)
        async with app.db.read() as session:
            stored = list(
                (
                    await session.execute(
                        select(_contacts.c.id)
                        .where(_contacts.c.org_id == org)
                        .order_by(_contacts.c.id)
                    )
                ).scalars()
            )
        assert ids == stored
    finally:
        await app.stop()
