"""Messaging attachments through the REST edge (family B): metadata CRUD, access tokens, content
upload (multipart) and download at /scg-attachment/api/v1/…, bytes identical on the round trip,
size limit 1019, MIME checks, token refusals, cross-org isolation, contact import from an
attachment."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from switchboard.messaging.v1 import messaging_service_pb2 as pb
from switchboard.messaging.v1 import messaging_service_pb2_grpc

from switchboard.server.core.errors import InvalidArgument
from switchboard.server.messaging.content.attachments import Part, parse_upload
from tests.support.attachments import CONTENT, create, get, token, upload
from tests.support.auth import TokenFactory
from tests.support.errors import assert_error


@pytest.mark.unit
def test_parse_upload() -> None:
    part = (
        b'Content-Disposition: form-data; name="f"; filename="a.bin"\r\n'
        b"Content-Type: Image/GIF; x=1\r\n\r\n\x00\r\n-\r\n"
    )
    body = b"preamble\r\n--XyZ  \r\n" + part + b"\r\n--XyZ--\r\nepilogue"
    expected = Part(b"\x00\r\n-\r\n", "image/gif", "a.bin")
    assert parse_upload('multipart/form-data; boundary="XyZ"', body) == expected
    assert parse_upload("multipart/form-data; boundary=XyZ", body[10:]) == expected
    # No headers at all: the data right after the blank line.
    assert parse_upload("multipart/form-data; boundary=b", b"--b\r\n\r\nraw\r\n--b--") == Part(
        b"raw", "", ""
    )
    assert parse_upload("text/plain", b"\x00") == Part(b"\x00", "text/plain", "")
    for content_type, bad in (
        ("multipart/form-data", body),
        ("multipart/form-data; boundary=XyZ", b"nothing"),
        ("multipart/form-data; boundary=XyZ", body[: body.index(b"\r\n--XyZ--")]),
        ("multipart/form-data; boundary=b", b"--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b--"),
    ):
        with pytest.raises(InvalidArgument):
            parse_upload(content_type, bad)


@pytest.mark.envoy
async def test_create_upload_download_round_trip(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    attachment_id = await create(http, bearer, name="logo", type="image/png")
    created = await get(http, bearer, attachment_id)
    assert created["state"] == "CREATED"
    assert created["size"] == 0 and created["checksum"] == ""
    assert created["version_number"] == 1
    # Binary content with NUL bytes, CRLFs and a fake boundary, above 1 MiB.
    data = (bytes(range(256)) * 4096 + b"\r\n--boundary\r\n\x00\x00") * 2
    assert len(data) > 2 * 1024 * 1024
    access_token = await token(http, bearer, attachment_id)
    response = await upload(http, access_token, data)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": attachment_id}
    uploaded = await get(http, bearer, attachment_id)
    assert uploaded["state"] == "UPLOADED"
    assert uploaded["size"] == len(data)
    assert uploaded["checksum"] == hashlib.sha256(data).hexdigest()
    assert uploaded["filename"] == "picture.png"
    assert uploaded["version_number"] == 2
    download = await http.get(CONTENT.format(access_token))
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "image/png"
    assert download.content == data


@pytest.mark.envoy
async def test_type_taken_from_the_part_and_raw_uploads(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    attachment_id = await create(http, bearer, name="doc")
    access_token = await token(http, bearer, attachment_id)
    response = await upload(http, access_token, b"%PDF-1.4\x00", mime="application/pdf")
    assert response.status_code == 200, response.text
    assert (await get(http, bearer, attachment_id))["type"] == "application/pdf"
    # A re-upload (raw body, no multipart) replaces the content.
    response = await http.post(
        CONTENT.format(access_token), content=b"\x00second", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    download = await http.get(CONTENT.format(access_token))
    assert download.content == b"\x00second"
    assert download.headers["content-type"] == "application/pdf"


@pytest.mark.envoy
async def test_size_limit_is_1019(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any
) -> None:
    service = app.messaging.attachments
    limit = service.max_bytes
    service.max_bytes = 1000
    try:
        attachment_id = await create(http, bearer, name="big")
        access_token = await token(http, bearer, attachment_id)
        response = await upload(http, access_token, b"x" * 1001)
        assert_error(response, 400, "1019")
        assert (await get(http, bearer, attachment_id))["state"] == "CREATED"
        response = await upload(http, access_token, b"x" * 1000)
        assert response.status_code == 200, response.text
    finally:
        service.max_bytes = limit


@pytest.mark.envoy
async def test_mime_checks(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    response = await http.post(
        "/messaging/attachments", json={"type": "application/x-msdownload"}, headers=bearer
    )
    assert_error(response, 400, "400")
    response = await http.post(
        "/messaging/attachments", json={"type": "not a type"}, headers=bearer
    )
    assert_error(response, 400, "400")
    attachment_id = await create(http, bearer, name="exe")
    access_token = await token(http, bearer, attachment_id)
    response = await upload(http, access_token, b"MZ\x00", mime="application/x-msdownload")
    assert_error(response, 400, "400")
    response = await http.post("/messaging/attachments", json={"name": "n" * 257}, headers=bearer)
    assert_error(response, 400, "1023")


@pytest.mark.envoy
async def test_token_refusals(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any, org: str
) -> None:
    attachment_id = await create(http, bearer, name="t")
    access_token = await token(http, bearer, attachment_id)
    # Not uploaded yet: nothing to download.
    assert_error(await http.get(CONTENT.format(access_token)), 404, "404")
    # Unknown, malformed, wrong-secret and another owner's (an org token) tokens: 401.
    token_id = access_token.split(".")[0]
    for bad in ("nope", f"{token_id}.wrong", token_id):
        assert_error(await upload(http, bad, b"x"), 401, "401")
        assert_error(await http.get(CONTENT.format(bad)), 401, "401")
    org_token = await http.post("/access_tokens", json={}, headers=bearer)
    assert org_token.status_code == 200, org_token.text
    assert_error(await upload(http, org_token.json()["id"], b"x"), 401, "401")
    # Expired.
    tokens = app.contacts.access_tokens
    ttl = tokens._ttl
    tokens._ttl = timedelta(0)  # expired at once
    try:
        expired = await token(http, bearer, attachment_id)
    finally:
        tokens._ttl = ttl
    await asyncio.sleep(0.01)
    assert_error(await upload(http, expired, b"x"), 401, "401")
    # Revoked with the attachment.
    response = await http.delete(f"/messaging/attachments/{attachment_id}", headers=bearer)
    assert response.status_code == 200, response.text
    assert_error(await upload(http, access_token, b"x"), 401, "401")
    assert_error(
        await http.get(f"/messaging/attachments/{attachment_id}", headers=bearer), 404, "404"
    )


@pytest.mark.envoy
async def test_list_update_delete_locking_and_isolation(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    first = await create(http, bearer, name="a", filename="a.txt", type="text/plain")
    second = await create(http, bearer, name="b")
    response = await http.get("/messaging/attachments", headers=bearer)
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)
    assert [a["id"] for a in response.json()] == [first, second]
    response = await http.get("/messaging/attachments", params={"name": "b"}, headers=bearer)
    assert [a["id"] for a in response.json()] == [second]
    response = await http.get(
        "/messaging/attachments", params={"state": "CREATED", "size": "0"}, headers=bearer
    )
    assert len(response.json()) == 2
    # Item GET accepts and ignores filters.
    response = await http.get(
        f"/messaging/attachments/{first}", params={"name": "zzz"}, headers=bearer
    )
    assert response.status_code == 200
    # Partial update, optimistic locking.
    response = await http.post(
        f"/messaging/attachments/{first}",
        json={"name": "renamed", "version_number": 1},
        headers=bearer,
    )
    assert response.json() == {"id": first}
    body = await get(http, bearer, first)
    assert (body["name"], body["filename"], body["version_number"]) == ("renamed", "a.txt", 2)
    response = await http.post(
        f"/messaging/attachments/{first}", json={"name": "x", "version_number": 1}, headers=bearer
    )
    assert_error(response, 409, "1001")
    # Another org sees nothing, can touch nothing.
    other = {"Authorization": f"Bearer {make_token('org-other-attachments')}"}
    assert_error(await http.get(f"/messaging/attachments/{first}", headers=other), 404, "404")
    assert_error(await http.delete(f"/messaging/attachments/{first}", headers=other), 404, "404")
    response = await http.post(
        f"/messaging/attachments/{first}/access_tokens", json={}, headers=other
    )
    assert_error(response, 404, "404")
    assert (await http.get("/messaging/attachments", headers=other)).json() == []
    response = await http.delete(f"/messaging/attachments/{second}", headers=bearer)
    assert response.status_code == 200
    assert [a["id"] for a in (await http.get("/messaging/attachments", headers=bearer)).json()] == [
        first
    ]


@pytest.mark.envoy
async def test_contact_import_from_a_messaging_attachment(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    attachment_id = await create(http, bearer, name="contacts.csv", type="text/csv")
    access_token = await token(http, bearer, attachment_id)
    csv = b"external_id,first_name\nimp-1,Ana\nimp-2,Luis\n"
    response = await upload(http, access_token, csv, mime="text/csv")
    assert response.status_code == 200, response.text
    response = await http.post(
        "/contactimport", json={"import_attachment_id": attachment_id}, headers=bearer
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    for _ in range(100):
        job = (await http.get(f"/contactimport/{job_id}", headers=bearer)).json()
        if job["state"] in ("COMPLETED", "FAILED"):
            break
        await asyncio.sleep(0.1)
    assert job["state"] == "COMPLETED", job
    contacts = (await http.get("/contacts", headers=bearer)).json()
    assert sorted(c["external_id"] for c in contacts) == ["imp-1", "imp-2"]
    # The attachment is the org's: still there after the job.
    assert (await get(http, bearer, attachment_id))["state"] == "UPLOADED"


@pytest.mark.envoy
async def test_default_limit_through_the_edge(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any
) -> None:
    """The configured limit (10 MiB by default) holds end to end: the edge streams the upload
    (no 1 MiB buffer cap), exactly the limit is accepted, one byte more is 1019."""
    limit = app.messaging.attachments.max_bytes
    assert limit == app.settings.attachment_max_bytes
    attachment_id = await create(http, bearer, name="max", type="application/octet-stream")
    access_token = await token(http, bearer, attachment_id)
    data = bytes(range(256)) * (limit // 256)
    response = await upload(http, access_token, data, mime="application/octet-stream")
    assert response.status_code == 200, response.text
    download = await http.get(CONTENT.format(access_token))
    assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(data).hexdigest()
    response = await upload(http, access_token, data + b"!", mime="application/octet-stream")
    assert_error(response, 400, "1019")


@pytest.mark.envoy
async def test_grpc_upload_in_pieces_needs_no_bearer(
    http: httpx.AsyncClient, bearer: dict[str, str], channel: grpc.aio.Channel
) -> None:
    """Native gRPC: the token rides in the first message, the content in as many as wanted."""
    attachment_id = await create(http, bearer, name="pieces", type="application/octet-stream")
    access_token = await token(http, bearer, attachment_id)
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    pieces = [b"\x00" * 70_000, b"\xff\x00middle", b"end\x00"]

    async def requests() -> AsyncIterator[pb.UploadAttachmentContentRequest]:
        yield pb.UploadAttachmentContentRequest(
            access_token=access_token,
            http_body=httpbody_pb2.HttpBody(
                content_type="application/octet-stream", data=pieces[0]
            ),
        )
        for piece in pieces[1:]:
            yield pb.UploadAttachmentContentRequest(http_body=httpbody_pb2.HttpBody(data=piece))

    uploaded = await stub.UploadAttachmentContent(requests())
    assert uploaded.id == attachment_id
    chunks = [
        m.data
        async for m in stub.DownloadAttachmentContent(
            pb.DownloadAttachmentContentRequest(access_token=access_token)
        )
    ]
    assert b"".join(chunks) == b"".join(pieces)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetAttachment(pb.GetAttachmentRequest(attachment_id=attachment_id))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
