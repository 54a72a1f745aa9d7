"""Hostile input through the real Envoy: every client mistake is a 4xx in the route family's
shape, one client's mistake never fails another's request, and no secret reaches a log."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from switchboard.contacts.v1 import contacts_service_pb2 as cpb
from switchboard.contacts.v1 import contacts_service_pb2_grpc

from switchboard.server.app.server import Application
from switchboard.server.core.auth import Role
from switchboard.server.core.errors import (
    MAX_MESSAGE_BYTES,
    FieldViolation,
    clip,
    to_rpc_status,
    validation_error,
)
from switchboard.server.core.logging import JsonFormatter
from switchboard.server.edge.envoy import EnvoyProcess
from tests.support.attachments import CONTENT, create, token, upload
from tests.support.auth import TokenFactory
from tests.support.communications import envelope, seed_type, send_body
from tests.support.messaging import create_sender

pytestmark = pytest.mark.envoy

# One route of each REST family, with the shape its errors have.
FAMILY_PATHS = {"A": "/v2/types", "B": "/contacts", "C": "/communication/message/sms"}


def family_error(response: httpx.Response, family: str, status: int) -> str:
    """The error text of a response in `family`'s documented shape, which must be exact."""
    assert response.status_code == status, response.text
    body = response.json()
    if family == "A":
        [first, *_] = body["errors"]
        assert set(first) == {"code", "title", "details", "ref", "httpStatusCode"}
        assert first["code"] == str(status) and first["httpStatusCode"] == status
        return str(first["details"])
    if family == "B":
        assert set(body) == {"error_code", "error_description"}
        assert body["error_code"] == str(status)
        return str(body["error_description"])
    assert set(body) == {"ResponseStatus"}
    assert set(body["ResponseStatus"]) == {"ErrorCode", "Message", "Errors"}
    return str(body["ResponseStatus"]["Message"])


@pytest.mark.unit
def test_errors_carry_a_bounded_message_and_field_list() -> None:
    huge = "é" * 50_000
    many = [FieldViolation(f"k{i:05d}", "is not a field of this request") for i in range(3000)]
    status = to_rpc_status(validation_error([FieldViolation(huge, huge), *many]))
    assert len(status.details.encode()) <= MAX_MESSAGE_BYTES
    trailers = dict(status.trailing_metadata)
    # Both trailers together stay far below the 8 KiB a default gRPC client accepts.
    assert len(trailers["grpc-status-details-bin"]) < 3072
    parsed = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert parsed.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad = error_details_pb2.BadRequest()
    assert parsed.details[1].Unpack(bad)
    first, *middle, last = bad.field_violations
    assert first.field.endswith("…") and len(first.field.encode()) <= 128
    assert middle and all(v.field.startswith("k") for v in middle)
    assert last.field == "" and last.description.startswith("and ")
    assert last.description.endswith("more invalid fields")
    assert clip("short", 10) == "short" and clip("abcdefghij", 8) == "abcde…"


async def test_a_huge_error_stays_on_its_own_stream(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    """Errors that echo 50 KB ids or list 20,000 unknown keys, sent alongside well-formed
    requests on the same Envoy→server connection: each hostile request gets its 4xx, every
    innocent one its 200."""
    unknown_keys = json.dumps({f"k{i:05d}": 1 for i in range(20_000)})
    huge_id = "x" * 50_000

    async def hostile(index: int) -> httpx.Response:
        if index % 2:
            return await http.get(f"/contacts/{huge_id}", headers=bearer)
        return await http.post(
            "/contacts",
            content=unknown_keys,
            headers={**bearer, "content-type": "application/json"},
        )

    async def innocent(index: int) -> httpx.Response:
        return await http.get("/contacts", params={"limit": 1, "offset": index}, headers=bearer)

    for _ in range(3):
        results = await asyncio.gather(
            *(hostile(i) for i in range(6)), *(innocent(i) for i in range(60))
        )
        for response in results[:6]:
            assert response.status_code in (400, 404), response.text
            assert len(response.content) < 8192
        assert [r.status_code for r in results[6:]] == [200] * 60


async def test_native_grpc_errors_fit_a_grpc_clients_metadata_limit(
    app: Application, make_token: TokenFactory, org: str
) -> None:
    """A default Python client refuses trailers past 8 KiB: a 100 KB id in the error's text
    must not turn the answer into a transport failure."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetContact(
                cpb.GetContactRequest(contact_id="y" * 100_000),
                metadata=[("authorization", f"Bearer {make_token(org)}")],
            )
    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert len((caught.value.details() or "").encode()) <= MAX_MESSAGE_BYTES


@pytest.mark.parametrize("family", sorted(FAMILY_PATHS))
async def test_oversized_headers_are_431_in_the_familys_shape(
    http: httpx.AsyncClient, bearer: dict[str, str], family: str
) -> None:
    path = FAMILY_PATHS[family]
    big = {**bearer, "x-padding": "a" * 70_000}
    text = family_error(await http.get(path, headers=big), family, 431)
    assert "exceed" in text
    # Below the edge's limit, a large head is served, not refused by the server (once a 429).
    response = await http.get(path, headers={**bearer, "x-padding": "a" * 40_000})
    assert response.status_code < 500 and response.status_code != 429, response.text


@pytest.mark.parametrize("family", sorted(FAMILY_PATHS))
async def test_an_unknown_method_is_405_in_the_familys_shape(
    http: httpx.AsyncClient, bearer: dict[str, str], family: str
) -> None:
    response = await http.request("FOO", FAMILY_PATHS[family], headers=bearer)
    assert "FOO" in family_error(response, family, 405)


@pytest.mark.parametrize(
    ("family", "path", "body", "says"),
    [
        ("B", "/contacts", "null", "body: must be a JSON object, not null"),
        ("B", "/messaging/attachments", "null", "body: must be a JSON object, not null"),
        ("B", "/calling/conferences", "null", "body: must be a JSON object, not null"),
        ("A", "/v2/orgs/{org}/short-urls", "null", "must be a JSON object, not null"),
        # The transcoder refuses these itself.
        ("B", "/messaging/keywords", '"STOP"', 'invalid value "STOP"'),
        ("B", "/contact_groups", "[]", "not repeating"),
        ("C", "/communication/message/sms", "null", "must be a JSON object, not null"),
        ("C", "/communication/message/sms", "7", "Root element must be a message"),
    ],
)
async def test_a_body_that_is_not_an_object_is_400_and_creates_nothing(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    family: str,
    path: str,
    body: str,
    says: str,
) -> None:
    url = path.format(org=org)
    headers = {**bearer, "content-type": "application/json"}
    response = await http.post(url, content=body, headers=headers)
    assert says in family_error(response, family, 400)
    if family == "B" and path == "/contacts":
        listed = await http.get("/contacts", headers=bearer)
        assert listed.json() == []


async def test_secrets_never_reach_a_log(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    envoy: EnvoyProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run that uses every kind of secret the platform handles, then every log line of the
    server (as the JSON formatter writes it) and Envoy's access log is searched for them."""
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    admin = {"Authorization": f"Bearer {make_token(org, roles=(Role.ADMIN,))}"}
    secrets += [bearer["Authorization"].split()[1], admin["Authorization"].split()[1]]

    # Attachment access tokens, in the content URL's path (also %-escaped), upload and download.
    attachment = await create(http, bearer, name="logo", type="image/png")
    access = await token(http, bearer, attachment)
    secrets.append(access.split(".", 1)[1])
    assert (await upload(http, access, b"\x89PNG-bytes")).status_code == 200
    assert (await http.get(CONTENT.format(access))).status_code == 200
    escaped = access.replace(".", "%2E")
    assert (await http.get(CONTENT.format(escaped))).status_code == 200
    forged = access.split(".")[0] + ".forged-secret-value-0001"
    secrets.append("forged-secret-value-0001")
    assert (await http.get(CONTENT.format(forged))).status_code == 401

    # Contact access tokens: shown once, then renewed through their own path.
    minted = await http.post("/access_tokens", json={}, headers=bearer)
    assert minted.status_code == 200, minted.text
    secrets.append(minted.json()["id"].split(".", 1)[1])

    # QR tokens and webhook tokens travel in query strings.
    qr = "qr-secret-token-value-0002"
    secrets.append(qr)
    await http.get("/v2/communications/qr", params={"qrToken": qr})
    hook = "webhook-secret-value-0003"
    secrets.append(hook)
    await http.post("/webhooks/clickatell", params={"token": hook}, json={"x": 1})

    # Sender credentials and a sensitive template argument.
    password = "smpp-password-value-0004"
    secrets.append(password)
    credentials = json.dumps([{"provider": "SMPP", "system_id": "acme", "password": password}])
    await create_sender(http, bearer, credentials=credentials)
    code = await seed_type(http, admin, bearer, org, channels=("sms",))
    reset = "https://password.example/reset/sensitive-value-0005"
    secrets.append("sensitive-value-0005")
    body = send_body(code, channels=["sms"], arguments={"name": "Ana", "resetLink": reset})
    sent = await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer)
    envelope(sent, 202)
    # A failing request that quotes its input: errors are logged too.
    await http.get(f"/contacts/{access}", headers=bearer)

    await asyncio.sleep(1.5)  # Envoy flushes its access log every second
    formatter = JsonFormatter()
    # Everything logged in this process but the test's own HTTP client, which prints its URLs.
    server_log = "\n".join(
        formatter.format(record)
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    access_log = await asyncio.to_thread(Path(envoy.settings.access_log_path).read_text)
    assert "atk_" in access_log and "REDACTED" in access_log
    for secret in secrets:
        assert secret not in server_log, secret
        assert secret not in access_log, secret
