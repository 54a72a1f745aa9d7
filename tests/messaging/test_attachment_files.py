"""Messaging attachment content as files in the configured directory: named by SHA-256, bytes
identical, replaced and removed with their rows, damage detected on read, orphans swept, and
readable by a restarted server with the same directory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from sqlalchemy import func, select
from switchboard.messaging.v1 import attachment_pb2, messaging_service_pb2_grpc
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from switchboard.server.app.server import Application, build_application
from switchboard.server.attachments.files import ContentDirectory, location_for
from switchboard.server.attachments.models import Attachment, AttachmentChunk
from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.db import table_of
from tests.support.attachments import CONTENT, create, get, token, upload
from tests.support.auth import TEST_SECRET
from tests.support.clock import TEST_CLOCK
from tests.support.server import make_settings

_attachments = table_of(Attachment)
_chunks = table_of(AttachmentChunk)


async def _row(app: Application, attachment_id: str) -> Any:
    async with app.db.read() as session:
        query = select(_attachments).where(_attachments.c.id == attachment_id)
        return (await session.execute(query)).mappings().one_or_none()


async def _chunk_count(app: Application, attachment_id: str) -> int:
    async with app.db.read() as session:
        query = select(func.count()).where(_chunks.c.attachment_id == attachment_id)
        return int((await session.execute(query)).scalar_one())


def _file(app: Application, location: str) -> Path:
    return app.settings.resolved_attachment_dir() / location


@pytest.mark.envoy
async def test_content_is_a_file_named_by_its_checksum(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application
) -> None:
    attachment_id = await create(http, bearer, name="photo", type="image/png")
    access_token = await token(http, bearer, attachment_id)
    first = os.urandom(700_000)
    assert (await upload(http, access_token, first)).status_code == 200
    row = await _row(app, attachment_id)
    checksum = hashlib.sha256(first).hexdigest()
    # <fan>/<attachment id>/<sha256>.<upload>: a file of its own per upload.
    assert re.fullmatch(
        rf"[0-9a-f]{{2}}/{attachment_id}/{checksum}\.[0-9a-f]{{12}}", row["location"]
    )
    assert _file(app, row["location"]).read_bytes() == first
    assert await _chunk_count(app, attachment_id) == 0  # not in the database as well
    assert (await http.get(CONTENT.format(access_token))).content == first

    # A re-upload points the row at the new file and removes the old one.
    second = b"\x00second\r\n"
    assert (await upload(http, access_token, second)).status_code == 200
    replaced = await _row(app, attachment_id)
    assert _file(app, replaced["location"]).read_bytes() == second
    assert not _file(app, row["location"]).exists()
    assert (await get(http, bearer, attachment_id))["checksum"] == hashlib.sha256(
        second
    ).hexdigest()

    # DELETE removes the file and its directory.
    response = await http.delete(f"/messaging/attachments/{attachment_id}", headers=bearer)
    assert response.status_code == 200, response.text
    assert not _file(app, replaced["location"]).exists()
    assert not _file(app, replaced["location"]).parent.exists()


@pytest.mark.envoy
async def test_damaged_content_is_an_error_not_a_download(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, channel: grpc.aio.Channel
) -> None:
    attachment_id = await create(http, bearer, name="doc", type="application/pdf")
    access_token = await token(http, bearer, attachment_id)
    data = b"%PDF-1.4 " + os.urandom(600_000)
    assert (await upload(http, access_token, data, mime="application/pdf")).status_code == 200
    path = _file(app, (await _row(app, attachment_id))["location"])
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    request = pb.DownloadAttachmentContentRequest(access_token=access_token)

    # Same size, one byte flipped: the checksum fails before the last piece is sent.
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    path.write_bytes(bytes(damaged))
    received: list[bytes] = []

    async def download() -> None:
        async for message in stub.DownloadAttachmentContent(request):
            received.append(message.data)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await download()
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert len(b"".join(received)) < len(data)  # never the whole (wrong) file

    # Truncated: refused before the first byte, so REST clients get a plain 500.
    path.write_bytes(data[:1000])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.DownloadAttachmentContent(request)]
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    response = await http.get(CONTENT.format(access_token))
    assert response.status_code == 500
    assert data[:1000] not in response.content

    # Re-uploading repairs it.
    assert (await upload(http, access_token, data, mime="application/pdf")).status_code == 200
    assert (await http.get(CONTENT.format(access_token))).content == data


@pytest.mark.envoy
async def test_downloads_during_re_uploads_get_one_version_whole(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    """A download that read the row just before a re-upload committed and removed the file it
    named gets that version whole (or the new one), never a false "damaged" error."""
    attachment_id = await create(http, bearer, name="race", type="application/octet-stream")
    access_token = await token(http, bearer, attachment_id)
    versions = [os.urandom(300_000 + i) for i in range(3)]  # two pieces each
    assert (await upload(http, access_token, versions[0])).status_code == 200
    url = CONTENT.format(access_token)
    outcomes: list[int] = []
    stop = asyncio.Event()

    async def re_upload() -> int:
        count = 0
        while not stop.is_set():
            response = await upload(http, access_token, versions[count % 3])
            assert response.status_code == 200, response.text
            count += 1
        return count

    async def download() -> None:
        while not stop.is_set():
            response = await http.get(url)
            assert response.status_code == 200, response.text
            assert response.content in versions
            outcomes.append(response.status_code)

    async def stop_later() -> None:
        await asyncio.sleep(4)
        stop.set()

    uploading = asyncio.create_task(re_upload())
    await asyncio.gather(*(download() for _ in range(3)), stop_later())
    uploads = await uploading
    assert uploads >= 5 and len(outcomes) >= 20, (uploads, len(outcomes))


@pytest.mark.envoy
async def test_a_failed_commit_leaves_no_file(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    app: Application,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attachment_id = await create(http, bearer, name="x", type="text/plain")
    access_token = await token(http, bearer, attachment_id)
    store = app.messaging.attachments.store

    def failing(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("the database went away mid-transaction")

    monkeypatch.setattr(store, "use_file", failing)
    data = b"never committed"
    response = await upload(http, access_token, data, mime="text/plain")
    assert response.status_code == 500
    monkeypatch.undo()
    folder = _file(app, location_for(attachment_id, "x", "y")).parent
    assert not folder.exists() or not any(folder.iterdir())
    assert (await get(http, bearer, attachment_id))["state"] == "CREATED"


async def test_each_upload_of_the_same_content_has_its_own_file(tmp_path: Path) -> None:
    """Re-uploads X, Y, X racing: Y's cleanup of the first X's file must not take the file the
    second X's row names."""
    files = ContentDirectory(tmp_path)
    first = await files.write("att_same", b"X")
    second = await files.write("att_same", b"X")
    assert first.checksum == second.checksum and first.location != second.location
    await files.remove([first.location])
    assert files.path(second.location).read_bytes() == b"X"


async def test_sweep_removes_only_old_unnamed_files(tmp_path: Path) -> None:
    files = ContentDirectory(tmp_path)
    named = await files.write("att_named", b"kept")
    old_orphan = await files.write("att_gone", b"orphan")
    fresh_orphan = await files.write("att_racing", b"commit on its way")
    abandoned = tmp_path / ".tmp" / "att_crashed.1.2"
    abandoned.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    for path in (files.path(named.location), files.path(old_orphan.location), abandoned):
        os.utime(path, (hour_ago, hour_ago))

    removed = await files.sweep({named.location}, older_than_seconds=600)

    assert removed == 2
    assert files.path(named.location).read_bytes() == b"kept"
    assert files.path(fresh_orphan.location).exists()  # younger than the grace period
    assert not files.path(old_orphan.location).exists()
    assert not files.path(old_orphan.location).parent.exists()
    assert not abandoned.exists()
    with pytest.raises(ValueError, match="outside"):
        files.path("../outside")


def _auth(org: str) -> list[tuple[str, str]]:
    token = TokenService(TEST_SECRET, TEST_CLOCK).issue(
        org=org, roles=[Role.CLIENT], subject="files-test"
    )
    return [("authorization", f"Bearer {token}")]


async def _started(tmp: Path, url: str, directory: Path) -> Application:
    settings = make_settings(tmp, database_url=url, attachment_dir=directory, drain_seconds=0.2)
    app = build_application(settings)
    await app.start()
    return app


async def test_content_survives_a_restart_in_the_configured_directory(
    tmp_path: Path, fresh_database_url: str
) -> None:
    directory = tmp_path / "elsewhere" / "attachment-files"
    auth = _auth("files-restart")
    data = os.urandom(300_000)
    first = await _started(tmp_path, fresh_database_url, directory)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{first.port}")
        stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
        created = await stub.CreateAttachment(
            pb.CreateAttachmentRequest(
                body=attachment_pb2.AttachmentInput(name="r", type="application/octet-stream")
            ),
            metadata=auth,
        )
        access_token = (
            await stub.CreateAttachmentAccessToken(
                pb.CreateAttachmentAccessTokenRequest(attachment_id=created.id), metadata=auth
            )
        ).id

        async def requests() -> AsyncIterator[pb.UploadAttachmentContentRequest]:
            yield pb.UploadAttachmentContentRequest(
                access_token=access_token,
                http_body=httpbody_pb2.HttpBody(content_type="application/octet-stream", data=data),
            )

        await stub.UploadAttachmentContent(requests())
        await channel.close()
    finally:
        await first.stop()
    stored = [p for p in directory.rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in stored] == [data]
    assert not (tmp_path / "attachments").exists()  # the default directory went unused

    second = await _started(tmp_path, fresh_database_url, directory)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{second.port}")
        stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
        request = pb.DownloadAttachmentContentRequest(access_token=access_token)
        received = b"".join([m.data async for m in stub.DownloadAttachmentContent(request)])
        assert received == data
        await channel.close()
    finally:
        await second.stop()
