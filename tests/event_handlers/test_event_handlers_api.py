"""The event handler resource as clients use it: REST family B through the real Envoy (create
shows the secret once, bare-array lists, item GET, partial POST update with versions, DELETE,
error_code bodies naming fields), gRPC, SSRF refusals on a server that does not allow private
URLs (the suite's shared one), and other orgs' ids answering 404."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from switchboard.messaging.v1 import event_handler_pb2, messaging_service_pb2_grpc
from switchboard.messaging.v1 import messaging_service_pb2 as pb

from tests.support.auth import TokenFactory
from tests.support.errors import assert_error, error_details
from tests.support.rest import bare

EH = "/messaging/event_handlers"
# A name under the reserved .invalid TLD never resolves: accepted at write time (each attempt
# resolves and checks it again), whatever DNS the machine has.
PUBLIC = "https://hooks.switchboard.invalid/receive"


@pytest.fixture
def other(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:12]}')}"}


@pytest.mark.envoy
async def test_rest_create_list_get_update_delete(
    http: httpx.AsyncClient, bearer: dict[str, str], other: dict[str, str]
) -> None:
    created = await http.post(
        EH,
        json={
            "url": PUBLIC,
            "event_types": ["message.delivered", "message.*"],
            "description": "receipts",
            "application_id": "app-1",
        },
        headers=bearer,
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == {"id", "secret"} and body["secret"].startswith("whsec_")
    handler_id = body["id"]

    got = await http.get(f"{EH}/{handler_id}", headers=bearer)
    assert got.status_code == 200, got.text
    handler = got.json()
    assert "secret" not in got.text and body["secret"] not in got.text
    assert handler["url"] == PUBLIC and handler["state"] == "ACTIVE"
    assert handler["event_types"] == ["message.delivered", "message.*"]
    assert handler["application_id"] == "app-1" and handler["channel_id"] == ""
    assert handler["version_number"] == 1 and handler["create_time"].endswith("Z")

    listed = bare(await http.get(EH, headers=bearer))
    assert [h["id"] for h in listed] == [handler_id] and "secret" not in str(listed)
    assert bare(await http.get(f"{EH}?event_type=message.failed", headers=bearer))
    assert bare(await http.get(f"{EH}?event_type=call.ended", headers=bearer)) == []
    assert bare(await http.get(f"{EH}?state=DISABLED", headers=bearer)) == []

    updated = await http.post(
        f"{EH}/{handler_id}", json={"state": "DISABLED", "version_number": 1}, headers=bearer
    )
    assert updated.status_code == 200 and updated.json() == {"id": handler_id}, updated.text
    stale = await http.post(
        f"{EH}/{handler_id}", json={"description": "x", "version_number": 1}, headers=bearer
    )
    assert_error(stale, 409, "1001")
    handler = (await http.get(f"{EH}/{handler_id}", headers=bearer)).json()
    assert handler["state"] == "DISABLED" and handler["disabled_reason"]
    assert handler["description"] == "receipts" and handler["version_number"] == 2

    assert bare(await http.get(f"{EH}/{handler_id}/deliveries", headers=bearer)) == []
    assert bare(await http.get(f"{EH}/{handler_id}/attempts", headers=bearer)) == []
    rotated = await http.post(
        f"{EH}/{handler_id}/rotate_secret", json={"grace_seconds": 60}, headers=bearer
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["id"] == handler_id and rotated.json()["secret"] != body["secret"]

    # other orgs see nothing
    for response in (
        await http.get(f"{EH}/{handler_id}", headers=other),
        await http.post(f"{EH}/{handler_id}", json={"description": "x"}, headers=other),
        await http.delete(f"{EH}/{handler_id}", headers=other),
        await http.post(f"{EH}/{handler_id}/rotate_secret", json={}, headers=other),
        await http.get(f"{EH}/{handler_id}/deliveries", headers=other),
        await http.get(f"{EH}/{handler_id}/attempts", headers=other),
        await http.post(f"{EH}/{handler_id}/replays", json={"after_cursor": "0"}, headers=other),
    ):
        assert_error(response, 404, "404")
    assert bare(await http.get(EH, headers=other)) == []

    deleted = await http.delete(f"{EH}/{handler_id}", headers=bearer)
    assert deleted.status_code == 200, deleted.text
    assert_error(await http.get(f"{EH}/{handler_id}", headers=bearer), 404, "404")


@pytest.mark.envoy
async def test_rest_validation_names_fields(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    missing = await http.post(EH, json={}, headers=bearer)
    description = assert_error(missing, 400, "400")
    assert "url" in description and "event_types" in description
    bad = await http.post(
        EH, json={"url": PUBLIC, "event_types": ["message.*", "Bad Type"]}, headers=bearer
    )
    assert "event_types[1]" in assert_error(bad, 400, "400")
    state = await http.post(
        EH, json={"url": PUBLIC, "event_types": ["*"], "state": "SOMETIMES"}, headers=bearer
    )
    assert "state" in assert_error(state, 400, "400")
    created = (
        await http.post(EH, json={"url": PUBLIC, "event_types": ["*"]}, headers=bearer)
    ).json()
    replay = await http.post(f"{EH}/{created['id']}/replays", json={}, headers=bearer)
    assert "after_cursor" in assert_error(replay, 400, "400")
    replay = await http.post(
        f"{EH}/{created['id']}/replays", json={"since": "yesterday"}, headers=bearer
    )
    assert "since" in assert_error(replay, 400, "400")
    grace = await http.post(
        f"{EH}/{created['id']}/rotate_secret", json={"grace_seconds": -1}, headers=bearer
    )
    assert "grace_seconds" in assert_error(grace, 400, "400")


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.switchboard.invalid/x",  # https is required
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://localhost/hook",  # a name that resolves to 127.0.0.1
        "https://user:pw@hooks.switchboard.invalid/x",
    ],
)
async def test_ssrf_urls_are_refused(
    channel: grpc.aio.Channel, auth: list[tuple[str, str]], url: str
) -> None:
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    body = event_handler_pb2.EventHandlerInput(url=url, event_types=["*"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateEventHandler(pb.CreateEventHandlerRequest(body=body), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, _, fields = error_details(caught.value)
    assert [f for f, _ in fields] == ["url"]
    # nor can an update point an existing handler there
    ok = event_handler_pb2.EventHandlerInput(url=PUBLIC, event_types=["*"])
    created = await stub.CreateEventHandler(pb.CreateEventHandlerRequest(body=ok), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateEventHandler(
            pb.UpdateEventHandlerRequest(
                event_handler_id=created.id, body=event_handler_pb2.EventHandlerInput(url=url)
            ),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
