"""The SMS API as a REST client sees it: JSON over HTTP/1.1 through the real Envoy edge."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard.server.core.auth import Role
from switchboard.server.core.logging import JsonFormatter
from switchboard.server.edge.envoy import EnvoyProcess
from tests.support.auth import TokenFactory
from tests.support.sms import SEND

pytestmark = pytest.mark.envoy


def message(**overrides: Any) -> dict[str, Any]:
    return {"channel": "smpp", "to": "+27821234567", "content": "hello", **overrides}


def assert_response_status(body: dict[str, Any], error_code: str) -> dict[str, Any]:
    """Family C errors: ServiceStack's ResponseStatus and nothing else."""
    assert set(body) == {"ResponseStatus"}, body
    status: dict[str, Any] = body["ResponseStatus"]
    assert status["ErrorCode"] == error_code, status
    assert status["Message"]
    return status


async def test_send_returns_the_documented_body(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    payload = {
        "Messages": [
            message(channel="grandcom", clientMessageId="g-1"),
            message(channel="clickatell", to="0027821234568"),
            message(channel="SMPP"),
        ]
    }
    response = await http.post(SEND, json=payload, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    body = response.json()
    assert set(body) == {"grandcomMsgResponse", "clickatellMsgResponse", "SMPPMsgResponse"}
    grandcom = body["grandcomMsgResponse"]["messages"][0]
    assert set(grandcom) == {"apiMessageId", "accepted", "to", "hasError", "msg"}
    assert grandcom["accepted"] is True and grandcom["hasError"] is False
    assert grandcom["msg"] == {
        "channel": "grandcom",
        "to": "+27821234567",
        "content": "hello",
        "clientMessageId": "g-1",
    }
    clickatell = body["clickatellMsgResponse"]["messages"][0]
    assert set(clickatell) == {"apiMessageId", "accepted", "to", "msg"}
    assert clickatell["to"] == "+27821234568"
    assert body["SMPPMsgResponse"]["messages"][0]["accepted"] is True

    api_id = grandcom["apiMessageId"]
    status = (await http.get(f"{SEND}/{api_id}", headers=bearer)).json()
    assert status["apiMessageId"] == api_id and status["clientMessageId"] == "g-1"
    assert status["status"] in {"ACCEPTED", "SENT", "DELIVERED"}
    assert status["segments"] == 1 and status["createTime"].endswith("Z")


async def test_per_message_errors_keep_200(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    payload = {
        "Messages": [
            message(channel="pigeon", clientMessageId="p"),
            message(channel="grandcom", to="12345"),
            message(),
        ]
    }
    response = await http.post(SEND, json=payload, headers=bearer)
    assert response.status_code == 200
    body = response.json()
    bad_number = body["grandcomMsgResponse"]["messages"][0]
    assert bad_number["accepted"] is False and bad_number["hasError"] is True
    assert bad_number["apiMessageId"] == "" and "country code" in bad_number["error"]
    assert body["SMPPMsgResponse"]["messages"][0]["accepted"] is True
    assert body["error"] == "2 of 3 messages were not accepted"
    [unrouted] = body["ResponseStatus"]["Errors"]
    assert unrouted["FieldName"] == "Messages[0].channel"
    assert unrouted["ErrorCode"] == "InvalidChannel"
    assert unrouted["Meta"] == {"index": "0", "clientMessageId": "p", "to": "+27821234567"}


async def test_retry_with_same_client_message_id_is_idempotent(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    payload = {"Messages": [message(clientMessageId="retry-me")]}
    first, second = [(await http.post(SEND, json=payload, headers=bearer)).json() for _ in range(2)]
    assert (
        first["SMPPMsgResponse"]["messages"][0]["apiMessageId"]
        == second["SMPPMsgResponse"]["messages"][0]["apiMessageId"]
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Messages": [message(content="x" * 1601)]}, "Messages[0].content"),
        ({"Messages": []}, "Messages"),
        ({"Messages": [message(to="")]}, "Messages[0].to"),
        ({"Messages": [message()] * 51}, "Messages"),
    ],
)
async def test_invalid_requests_get_field_errors(
    http: httpx.AsyncClient, bearer: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await http.post(SEND, json=body, headers=bearer)
    assert response.status_code == 400
    status = assert_response_status(response.json(), "ValidationException")
    assert [e["FieldName"] for e in status["Errors"]] == [field]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"Messages": [',  # malformed JSON
        b'{"Messages": "not a list"}',  # wrong type
        b'{"Messages": [{"channel": "smpp", "to": +27}]}',  # wrong type
    ],
)
async def test_malformed_bodies_are_400_in_the_documented_shape(
    http: httpx.AsyncClient, bearer: dict[str, str], raw: bytes
) -> None:
    headers = {**bearer, "content-type": "application/json"}
    response = await http.post(SEND, content=raw, headers=headers)
    assert response.status_code == 400, response.text
    assert_response_status(response.json(), "ValidationException")


@pytest.mark.parametrize(
    ("body", "unknown"),
    [
        ({"Messages": [message()], "Priority": "high"}, ["Priority"]),
        ({"Messages": [message(chanel="smpp")]}, ["Messages[].chanel"]),
        ({"Messages": [message(msg={"to": "x"})], "x": {"y": 1}}, ["Messages[].msg", "x"]),
    ],
)
async def test_unknown_fields_are_refused_not_dropped(
    http: httpx.AsyncClient, bearer: dict[str, str], body: dict[str, Any], unknown: list[str]
) -> None:
    response = await http.post(SEND, json=body, headers=bearer)
    assert response.status_code == 400, response.text
    status = assert_response_status(response.json(), "ValidationException")
    assert [e["FieldName"] for e in status["Errors"]] == unknown
    assert {e["ErrorCode"] for e in status["Errors"]} == {"Unknown"}
    # Nothing was half-applied: the first thing the org's event log shows is a heartbeat.
    async with (
        asyncio.timeout(5),
        http.stream("GET", f"{SEND}/events?after=0&heartbeatSeconds=1", headers=bearer) as stream,
    ):
        first = await anext(line async for line in stream.aiter_lines() if line.startswith("data:"))
    assert json.loads(first[5:])["envelope"]["type"] == "heartbeat"


async def test_oversize_bodies_and_other_content_types(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    big = {"Messages": [message(content="x" * 1_100_000)]}
    response = await http.post(SEND, json=big, headers=bearer)
    assert response.status_code == 413
    assert_response_status(response.json(), "PayloadTooLarge")
    # The transcoder reads any body as JSON, so the unknown-key check must not depend on it.
    raw = json.dumps({"Messages": [message(foo=1)]})
    response = await http.post(SEND, content=raw, headers={**bearer, "content-type": "text/plain"})
    assert response.status_code == 400
    status = assert_response_status(response.json(), "ValidationException")
    assert status["Errors"][0]["FieldName"] == "Messages[].foo"


async def test_field_names_in_either_spelling_are_known(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    body = {"messages": [{**message(), "client_message_id": "snake"}]}
    response = await http.post(SEND, json=body, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json()["SMPPMsgResponse"]["messages"][0]["msg"]["clientMessageId"] == "snake"


async def test_unknown_query_parameter_and_path(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    response = await http.post(
        f"{SEND}?priority=high", json={"Messages": [message()]}, headers=bearer
    )
    assert response.status_code == 400
    assert_response_status(response.json(), "ValidationException")
    response = await http.get("/communication/message/nothing-here", headers=bearer)
    assert response.status_code == 404
    assert_response_status(response.json(), "NotFound")


async def test_auth_failures(http: httpx.AsyncClient, org: str, make_token: TokenFactory) -> None:
    payload = {"Messages": [message()]}
    expired = make_token(org, ttl=timedelta(seconds=-60))
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {expired}"}):
        response = await http.post(SEND, json=payload, headers=headers)
        assert response.status_code == 401
        assert_response_status(response.json(), "Unauthorized")
    no_role = {"Authorization": f"Bearer {make_token(org, roles=())}"}
    response = await http.post(SEND, json=payload, headers=no_role)
    assert response.status_code == 403
    assert_response_status(response.json(), "Forbidden")
    partner = {"Authorization": f"Bearer {make_token(org, roles=[Role.PARTNER])}"}
    assert (await http.post(SEND, json=payload, headers=partner)).status_code == 200


async def test_another_orgs_message_is_404(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    sent = (await http.post(SEND, json={"Messages": [message()]}, headers=bearer)).json()
    api_id = sent["SMPPMsgResponse"]["messages"][0]["apiMessageId"]
    other = {"Authorization": f"Bearer {make_token('org-other')}"}
    response = await http.get(f"{SEND}/{api_id}", headers=other)
    assert response.status_code == 404
    assert_response_status(response.json(), "NotFound")


async def sse_events(
    http: httpx.AsyncClient, headers: dict[str, str], query: str, until: int
) -> list[dict[str, Any]]:
    """Reads `data:` lines of the SSE stream until `until` non-heartbeat events arrived."""
    events: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(10),
        http.stream("GET", f"{SEND}/events?{query}", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["envelope"]["type"] != "heartbeat":
                    events.append(event)
                    if len(events) >= until:
                        break
    return events


async def test_events_stream_as_sse_and_resume(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sent = (await http.post(SEND, json={"Messages": [message()]}, headers=bearer)).json()
    api_id = sent["SMPPMsgResponse"]["messages"][0]["apiMessageId"]
    events = await sse_events(http, bearer, f"after=0&apiMessageIds={api_id}", until=3)
    assert [e["message"]["status"] for e in events] == ["ACCEPTED", "SENT", "DELIVERED"]
    assert events[2]["envelope"]["type"] == "sms.delivered"
    # An EventSource reconnects with Last-Event-ID: the stream resumes after it.
    resumed = await sse_events(
        http, {**bearer, "Last-Event-ID": events[0]["envelope"]["cursor"]}, "", until=2
    )
    assert [e["envelope"]["cursor"] for e in resumed] == [
        e["envelope"]["cursor"] for e in events[1:]
    ]


async def test_fixed_line_fails_with_a_clear_error_event(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    payload = {"Messages": [message(channel="grandcom", to="+27 11 123 4567")]}
    sent = (await http.post(SEND, json=payload, headers=bearer)).json()
    accepted = sent["grandcomMsgResponse"]["messages"][0]
    assert accepted["accepted"] is True and accepted["to"] == "+27111234567"
    query = f"after=0&apiMessageIds={accepted['apiMessageId']}"
    events = await sse_events(http, bearer, query, until=2)
    assert [e["envelope"]["type"] for e in events] == ["sms.accepted", "sms.failed"]
    assert events[1]["message"]["error"] == "+27111234567 is a fixed line and cannot receive SMS"


async def test_stream_errors_are_visible(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    response = await http.get(f"{SEND}/events?states=LOST", headers=bearer)
    assert response.status_code == 400
    assert_response_status(response.json(), "ValidationException")


async def test_access_log_carries_the_request_id(
    http: httpx.AsyncClient, bearer: dict[str, str], envoy: EnvoyProcess
) -> None:
    response = await http.post(
        SEND, json={"Messages": [message()]}, headers={**bearer, "x-request-id": "trace-me-123"}
    )
    assert response.headers["x-request-id"] == "trace-me-123"
    log_path = Path(envoy.settings.access_log_path)
    for _ in range(50):
        if "trace-me-123" in log_path.read_text():
            break
        await asyncio.sleep(0.1)
    entry = next(
        json.loads(line) for line in log_path.read_text().splitlines() if "trace-me-123" in line
    )
    assert entry["path"] == SEND and entry["status"] in ("200", 200)


async def test_request_id_reaches_the_server_log(
    http: httpx.AsyncClient, bearer: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.rpc")
    headers = {**bearer, "x-request-id": "trace-fail-7"}
    response = await http.post(SEND, json={"Messages": []}, headers=headers)
    assert response.status_code == 400
    [record] = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-fail-7"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-fail-7"
    assert line["method"] == "/switchboard.sms.v1.SmsService/SendSms"
    assert line["code"] == "INVALID_ARGUMENT" and "Messages" in line["msg"]
