"""Communications through the REST edge (family A) and gRPC: send (202/206/400), masking of
sensitive arguments, language fallback, consent, search, get, attachments, preview, delivery
and its events, cross-org isolation."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import select
from switchboard.communications.v1 import communication_pb2, communications_service_pb2_grpc
from switchboard.communications.v1 import communications_service_pb2 as pb

from switchboard.server.app.server import Application
from switchboard.server.communications.models import DeliveryRecord
from switchboard.server.core.models import EventRecord
from tests.support.auth import Metadata, TokenFactory
from tests.support.clock import TEST_CLOCK
from tests.support.communications import (
    SEED_ARGUMENTS,
    admin,
    envelope,
    errors,
    handed,
    put_template,
    put_type,
    seed_type,
    send_body,
    titles,
    unique_type,
    wait_status,
    with_client,
)
from tests.support.errors import error_details

pytestmark = pytest.mark.envoy

NUMBER = "+34666123123"


@pytest.fixture
def admin_headers(make_token: TokenFactory, org: str) -> dict[str, str]:
    return admin(make_token, org)


async def events_of(app: Application, org: str, resource_id: str) -> list[tuple[str, str]]:
    async with app.db.read() as session:
        rows = (
            await session.execute(
                select(EventRecord)
                .where(EventRecord.org_id == org, EventRecord.resource_id == resource_id)  # type: ignore[arg-type]
                .order_by(EventRecord.seq)  # type: ignore[arg-type]
            )
        ).scalars()
        return [(r.type, r.payload.get("channel", "")) for r in rows]


# ---- send ---------------------------------------------------------------------------------


async def test_send_masks_sensitive_arguments_and_delivers_real_values(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    admin_headers: dict[str, str],
    org: str,
    app: Application,
) -> None:
    code = await seed_type(http, admin_headers, bearer, org)
    response = await http.post(
        f"/v2/orgs/{org}/communications", json=send_body(code), headers=bearer
    )
    data = envelope(response, 202)
    assert response.json()["id"] == data["id"] and data["id"].startswith("com_")
    assert data["type"] == code and data["language"] == "en" and data["status"] == "ACCEPTED"
    assert data["externalId"] == "sale-12512321"
    assert data["smsInput"] == {
        "phoneNumber": NUMBER,
        "countryCode": "34",
        "terminatingNumber": "666123123",
    }
    assert data["emailInput"]["to"] == "juan@example.com"
    # Stored and returned masked: the sensitive link, and file contents never.
    assert data["arguments"]["resetLink"] == "****"
    assert data["arguments"]["name"] == "Juan"
    assert data["arguments"]["attached.txt"] == "[attachment, 14 bytes]"
    assert data["arguments"]["balance"] == 45.7
    sms, mail = data["channels"]
    assert (sms["channel"], sms["status"], sms["language"]) == ("sms", "ACCEPTED", "en")
    assert sms["content"] == "Hi Juan, enter **** to reset password"
    assert sms["destination"] == NUMBER and sms["senderInfo"] == "YOIGO"
    assert (sms["encoding"], sms["segments"]) == ("GSM-7", 1)
    assert mail["subject"] == "Password reset for Juan"
    assert "****" in mail["content"] and "123456" not in mail["content"]
    assert 'src="cid:qrArgument@switchboard"' in mail["content"]
    assert data["qrToken"] and data["attachmentCount"] == 1
    assert "123456" not in response.text

    delivered = await wait_status(http, bearer, org, data["id"], "sms", "DELIVERED")
    await wait_status(http, bearer, org, data["id"], "email", "DELIVERED")
    assert delivered["channels"][0]["sentTime"] and delivered["channels"][0]["deliveredTime"]
    # The provider got the real values, rendered only for the hand-off.
    [sent_sms] = handed(app, org, "sms", NUMBER)
    assert sent_sms.content == "Hi Juan, enter https://password.com/reset/123456 to reset password"
    [sent_mail] = handed(app, org, "email", "juan@example.com")
    assert set(sent_mail.recipients) == {"juan@example.com", "boss@example.com"}
    message = email.message_from_bytes(sent_mail.mime, policy=email.policy.default)
    assert message["Subject"] == "Password reset for Juan"
    assert message["From"] == "Yoigo <no-reply@switchboard.local>"
    parts = {part.get_content_type(): part for part in message.walk()}
    html = parts["text/html"].get_content()
    assert "https://password.com/reset/123456" in html
    inline = [p for p in message.walk() if p["Content-ID"]]
    assert {p["Content-ID"] for p in inline} == {
        "<qrArgument@switchboard>",
        "<embedded_image_png@switchboard>",
    }
    assert all(p.get_content_type() == "image/png" for p in inline)
    [attachment] = [p for p in message.walk() if p.get_filename() == "attached.txt"]
    assert attachment.get_content() == "Hola Pablo :)\n"
    # Nothing sealed is left once handed over; the stored rendering stays masked.
    async with app.db.read() as session:
        rows = (
            await session.execute(
                select(DeliveryRecord).where(DeliveryRecord.communication_id == data["id"])
            )
        ).scalars()
        assert all(r.sealed is None and "123456" not in r.content for r in rows)
    # Every state change is an event, per channel, in order.
    seen = await events_of(app, org, data["id"])
    for channel in ("sms", "email"):
        assert [t for t, c in seen if c == channel] == [
            "communication.accepted",
            "communication.sent",
            "communication.delivered",
        ]


async def test_channels_default_to_every_channel_with_template_and_input(
    http: httpx.AsyncClient, bearer: dict[str, str], admin_headers: dict[str, str], org: str
) -> None:
    code = await seed_type(http, admin_headers, bearer, org, channels=("sms", "email", "whatsapp"))
    body = send_body(code, whatsAppInput={"phoneNumber": NUMBER})
    del body["channels"]
    del body["emailInput"]
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    assert [c["channel"] for c in data["channels"]] == ["sms", "whatsapp"]
    # No input for any channel with a template: nothing can be sent.
    body = send_body(code)
    for key in ("channels", "smsInput", "emailInput"):
        del body[key]
    response = await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer)
    assert titles(response, 400) == {"channels"}


async def test_partial_failure_is_206_with_each_failure_explained(
    http: httpx.AsyncClient, bearer: dict[str, str], admin_headers: dict[str, str], org: str
) -> None:
    code = await seed_type(http, admin_headers, bearer, org, channels=("sms",))
    body = send_body(
        code, channels=["sms", "email", "whatsapp"], whatsAppInput={"phoneNumber": "+34912345678"}
    )
    response = await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer)
    data = envelope(response, 206)
    by_channel = {c["channel"]: c for c in data["channels"]}
    assert by_channel["sms"]["status"] == "ACCEPTED" and not by_channel["sms"]["error"]
    assert by_channel["email"]["status"] == "FAILED"
    assert "no stable email template" in by_channel["email"]["error"]
    assert by_channel["whatsapp"]["status"] == "FAILED"
    assert data["status"] == "ACCEPTED"
    # A fixed line cannot take SMS: that channel fails at once, with the reason.
    body = send_body(code, channels=["sms"], smsInput={"phoneNumber": "+34912345678"})
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 206
    )
    [sms] = data["channels"]
    assert sms["status"] == "FAILED" and "fixed line" in sms["error"]
    assert data["status"] == "FAILED"


async def test_consent_refusal_fails_the_channel(
    http: httpx.AsyncClient, bearer: dict[str, str], admin_headers: dict[str, str], org: str
) -> None:
    code = await seed_type(http, admin_headers, bearer, org)
    status = {"address_type": "MDN", "address": NUMBER, "consent_status": "BLACKLIST"}
    assert (
        await http.post("/consent/contact_address_statuses", json=status, headers=bearer)
    ).status_code == 200
    opted_out = {
        "address_type": "EMAIL",
        "address": "juan@example.com",
        "consent_status": "OPTOUT",
        "sender_id": "Yoigo",
    }
    assert (
        await http.post("/consent/contact_address_statuses", json=opted_out, headers=bearer)
    ).status_code == 200
    response = await http.post(
        f"/v2/orgs/{org}/communications", json=send_body(code), headers=bearer
    )
    data = envelope(response, 206)
    sms, mail = data["channels"]
    assert sms["status"] == "FAILED" and "consent refused" in sms["error"]
    assert "blacklisted" in sms["error"]
    assert mail["status"] == "FAILED" and "opted out" in mail["error"]
    # Lifting the blacklist (family A) lets SMS through again.
    assert (
        await http.delete(f"/v2/orgs/{org}/blacklist/%2B34666123123", headers=bearer)
    ).status_code == 200
    response = await http.post(
        f"/v2/orgs/{org}/communications", json=send_body(code), headers=bearer
    )
    data = envelope(response, 206)
    assert [c["status"] for c in data["channels"]] == ["ACCEPTED", "FAILED"]


async def test_invalid_requests_are_400_and_store_nothing(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    admin_headers: dict[str, str],
    org: str,
    app: Application,
) -> None:
    code = await seed_type(http, admin_headers, bearer, org)
    url = f"/v2/orgs/{org}/communications"
    cases: list[tuple[dict[str, Any], set[str]]] = [
        (send_body("no_such_type"), {"type"}),
        (send_body(code, language="not a language"), {"language"}),
        (send_body(code, channels=["sms", "pigeon"]), {"channels[1]"}),
        (send_body(code, arguments={**SEED_ARGUMENTS, "unknown": 1}), {"arguments.unknown"}),
        (send_body(code, arguments={**SEED_ARGUMENTS, "balance": "lots"}), {"arguments.balance"}),
        (
            send_body(code, arguments={**SEED_ARGUMENTS, "resetLink": "ftp://x"}),
            {"arguments.resetLink"},
        ),
        (
            send_body(code, arguments={k: v for k, v in SEED_ARGUMENTS.items() if k != "name"}),
            {"arguments.name"},
        ),
        (send_body(code, scheduledTime="tomorrow"), {"scheduledTime"}),
        (send_body(code, smsInput=None), {"smsInput"}),
        (send_body(code, smsInput={"phoneNumber": "12"}), {"smsInput.phoneNumber"}),
        (send_body(code, emailInput={"to": "not-an-email"}), {"emailInput.to"}),
        (send_body(code, externalId="x" * 129), {"externalId"}),
    ]
    for body, fields in cases:
        body = {k: v for k, v in body.items() if v is not None}
        response = await http.post(url, json=body, headers=bearer)
        assert titles(response, 400) == fields, (body, response.text)
    # Unknown keys are refused by name (the edge lists them).
    response = await http.post(url, json={**send_body(code), "chanels": ["sms"]}, headers=bearer)
    assert "chanels" in titles(response, 400)
    search = await http.get(url, params={"externalId": "sale-12512321"}, headers=bearer)
    assert envelope(search, 200)["items"] == []


async def test_language_falls_back_to_org_default_then_en(
    http: httpx.AsyncClient, bearer: dict[str, str], admin_headers: dict[str, str], org: str
) -> None:
    code = unique_type()
    await put_type(http, admin_headers, code)
    await put_template(http, bearer, org, code, "sms", "Hola [(${name})]", language="es")
    await put_template(http, bearer, org, code, "email", "<p>Hi [[${name}]]</p>", subject="Hi")
    body = send_body(code, language="es-ES", arguments={"name": "Ana"})
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    sms, mail = data["channels"]
    assert (sms["language"], sms["languageFallback"], sms["content"]) == ("es", True, "Hola Ana")
    assert (mail["language"], mail["languageFallback"]) == ("en", True)
    body = send_body(code, language="fr", channels=["email"], arguments={"name": "Ana"})
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    assert data["language"] == "fr" and data["channels"][0]["language"] == "en"
    body = send_body(code, language="es", channels=["sms"], arguments={"name": "Ana"})
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    assert data["channels"][0]["languageFallback"] is False


async def test_scheduled_time_is_moved_into_the_delivery_window(
    http: httpx.AsyncClient, bearer: dict[str, str], admin_headers: dict[str, str], org: str
) -> None:
    code = await seed_type(http, admin_headers, bearer, org, window="ANYDAY_8AM8PM")
    # 23:30 in Madrid (22:30 UTC in winter): the next opening in both Spanish zones is 08:00
    # in the Canaries, 09:00 in Madrid, 08:00 UTC. In a January a few years after the run's clock,
    # so that it stays in the future.
    year = TEST_CLOCK.now().year + 4
    body = send_body(code, channels=["sms"], scheduledTime=f"{year}-01-15T23:30:00+01:00")
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    assert data["status"] == "SCHEDULED"
    assert data["scheduledTime"] == f"{year}-01-15T22:30:00Z"
    assert data["channels"][0]["dueTime"] == f"{year}-01-16T08:00:00Z"
    # An email without a number: the window in UTC.
    body = send_body(code, channels=["email"], scheduledTime=f"{year}-01-15T21:00:00Z")
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    assert data["channels"][0]["dueTime"] == f"{year}-01-16T08:00:00Z"


# ---- search, get, attachments ----------------------------------------------------------------


async def test_search_filters_and_validation(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    admin_headers: dict[str, str],
    org: str,
    app: Application,
) -> None:
    code = await seed_type(http, admin_headers, bearer, org)
    mysim = with_client(app, org, "mysim-sa")
    first = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=send_body(code), headers=mysim), 202
    )
    assert first["clientId"] == "mysim-sa"
    other = send_body(
        code,
        externalId="sale-2",
        smsInput={"phoneNumber": "+34666000111"},
        emailInput={"to": "ana@example.com"},
    )
    second = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=other, headers=bearer), 202
    )
    assert second["clientId"] == ""
    url = f"/v2/orgs/{org}/communications"

    async def ids(**params: Any) -> list[str]:
        return [
            c["id"]
            for c in envelope(await http.get(url, params=params, headers=bearer), 200)["items"]
        ]

    assert await ids(externalId="sale-12512321") == [first["id"]]
    assert await ids(destinationEmail="JUAN@example.com") == [first["id"]]
    assert await ids(terminatingNumber="666123123", countryCode="34") == [first["id"]]
    assert await ids(terminatingNumber="666123123", countryCode="44") == []
    assert await ids(terminatingNumber="666000111") == [second["id"]]
    # The documented example, with plain values.
    found = await ids(
        destinationEmail="juan@example.com",
        terminatingNumber="666123123",
        countryCode="34",
        **{
            "requestTime[gt]": "2020-01-01T14:00:00+01:00",
            "requestTime[lt]": "2100-12-01T14:00:00+01:00",
        },
        clientId="mysim-sa",
        limit="20",
        offset="0",
        externalId="sale-12512321",
    )
    assert found == [first["id"]]
    # The same query as the seed's URL writes it: brackets and the offsets' `+` unencoded.
    raw = (
        f"{url}?destinationEmail=juan@example.com&terminatingNumber=666123123&countryCode=34"
        "&requestTime[gt]=2020-01-01T14:00:00+01:00&requestTime[lt]=2100-12-01T14:00:00+01:00"
        "&clientId=mysim-sa&limit=20&offset=0&externalId=sale-12512321"
    )
    literal = envelope(await http.get(raw, headers=bearer), 200)["items"]
    assert [c["id"] for c in literal] == [first["id"]]
    assert await ids(externalId="sale-12512321", clientId="other") == []
    assert await ids(externalId="sale-2", **{"requestTime[lt]": "2020-01-01"}) == []
    assert await ids(destinationEmail="ana@example.com", limit=1, offset=1) == []
    # At least one of destinationEmail, terminatingNumber, externalId.
    response = await http.get(url, params={"clientId": "mysim-sa"}, headers=bearer)
    problems = errors(response, 400)
    assert "destinationEmail, terminatingNumber or externalId" in problems[0]["details"]
    response = await http.get(
        url, params={"externalId": "x", "requestTime[gt]": "soon"}, headers=bearer
    )
    assert titles(response, 400) == {"requestTime[gt]"}
    response = await http.get(url, params={"terminatingNumber": "66a"}, headers=bearer)
    assert titles(response, 400) == {"terminatingNumber"}
    response = await http.get(url, params={"externalId": "x", "limit": 5000}, headers=bearer)
    assert titles(response, 400) == {"limit"}


async def test_get_and_attachments_are_scoped_to_the_org(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    admin_headers: dict[str, str],
    org: str,
    make_token: TokenFactory,
) -> None:
    code = await seed_type(http, admin_headers, bearer, org)
    sent = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=send_body(code), headers=bearer), 202
    )
    base = f"/v2/orgs/{org}/communications/{sent['id']}"
    got = envelope(await http.get(base, headers=bearer), 200)
    assert got["id"] == sent["id"] and got["arguments"]["resetLink"] == "****"
    attachments = await http.get(f"{base}/attachments", headers=bearer)
    assert attachments.json()["id"] == sent["id"]
    [attachment] = envelope(attachments, 200)["items"]
    assert attachment["name"] == "attached.txt"
    assert attachment["contentType"] == "text/plain" and attachment["size"] == 14
    assert attachment["id"].startswith("cat_")
    errors(await http.get(f"/v2/orgs/{org}/communications/com_nope", headers=bearer), 404)
    errors(
        await http.get(f"/v2/orgs/{org}/communications/com_nope/attachments", headers=bearer), 404
    )
    # Another org: 403 on this org's path, 404 for this id under its own.
    other_org = org + "-other"
    other = {"Authorization": f"Bearer {make_token(other_org)}"}
    errors(await http.get(base, headers=other), 403)
    errors(await http.get(f"/v2/orgs/{other_org}/communications/{sent['id']}", headers=other), 404)
    response = await http.get(
        f"/v2/orgs/{other_org}/communications",
        params={"externalId": "sale-12512321"},
        headers=other,
    )
    assert envelope(response, 200)["items"] == []
    errors(
        await http.post(f"/v2/orgs/{org}/communications", json=send_body(code), headers=other), 403
    )
    errors(await http.get(base), 401)


# ---- preview --------------------------------------------------------------------------------


async def test_preview_renders_every_channel_without_sending(
    http: httpx.AsyncClient, bearer: dict[str, str], admin_headers: dict[str, str], org: str
) -> None:
    code = await seed_type(http, admin_headers, bearer, org)
    body = {"type": code, "language": "en", "arguments": SEED_ARGUMENTS}
    response = await http.post(f"/v2/orgs/{org}/communications/preview", json=body, headers=bearer)
    data = envelope(response, 200)
    assert response.json()["id"] == ""
    sms, mail = data["channels"]
    assert sms == {
        "channel": "sms",
        "status": "RENDERED",
        "language": "en",
        "languageFallback": False,
        "templateId": sms["templateId"],
        "templateVersion": 1,
        "senderInfo": "YOIGO",
        "subject": "",
        "content": "Hi Juan, enter **** to reset password",
        "error": "",
        "encoding": "GSM-7",
        "characters": 37,
        "segments": 1,
    }
    assert mail["subject"] == "Password reset for Juan" and mail["encoding"] == ""
    assert data["arguments"]["resetLink"] == "****"
    # UCS-2 and several segments.
    long_name = "Łukasz " * 10
    body["arguments"] = {**SEED_ARGUMENTS, "name": long_name}
    body["channels"] = ["sms"]
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications/preview", json=body, headers=bearer), 200
    )
    [sms] = data["channels"]
    assert sms["encoding"] == "UCS-2" and sms["characters"] == len(sms["content"])
    assert sms["segments"] == 2
    # Nothing was sent.
    search = await http.get(
        f"/v2/orgs/{org}/communications",
        params={"destinationEmail": "juan@example.com"},
        headers=bearer,
    )
    assert envelope(search, 200)["items"] == []


async def test_preview_is_206_when_a_channel_cannot_render(
    http: httpx.AsyncClient, bearer: dict[str, str], admin_headers: dict[str, str], org: str
) -> None:
    code = await seed_type(http, admin_headers, bearer, org, channels=("sms",))
    body = {
        "type": code,
        "language": "en",
        "channels": ["sms", "whatsapp"],
        "arguments": SEED_ARGUMENTS,
    }
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications/preview", json=body, headers=bearer), 206
    )
    sms, whatsapp = data["channels"]
    assert sms["status"] == "RENDERED"
    assert whatsapp["status"] == "FAILED" and "no stable whatsapp template" in whatsapp["error"]
    body = {"type": code, "language": "en", "arguments": {"name": "Juan"}}
    data = envelope(
        await http.post(f"/v2/orgs/{org}/communications/preview", json=body, headers=bearer), 206
    )
    [sms] = data["channels"]
    assert sms["status"] == "FAILED" and "resetLink" in sms["error"]
    response = await http.post(
        f"/v2/orgs/{org}/communications/preview",
        json={"type": code, "language": "en", "arguments": {"name": 3}},
        headers=bearer,
    )
    assert titles(response, 400) == {"arguments.name"}


# ---- gRPC ---------------------------------------------------------------------------------


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> communications_service_pb2_grpc.CommunicationsServiceStub:
    return communications_service_pb2_grpc.CommunicationsServiceStub(channel)


async def test_grpc_send_and_get(
    stub: communications_service_pb2_grpc.CommunicationsServiceStub,
    auth: Metadata,
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    admin_headers: dict[str, str],
    org: str,
) -> None:
    code = await seed_type(http, admin_headers, bearer, org, channels=("sms",))
    body = communication_pb2.CommunicationInput(
        type=code,
        language="en",
        sms_input=communication_pb2.SmsInput(phone_number=NUMBER),
    )
    body.arguments.update({"name": "Juan", "resetLink": "https://password.com/reset/1"})
    sent = await stub.SendCommunication(
        pb.SendCommunicationRequest(org=org, body=body), metadata=auth
    )
    assert sent.data.channels[0].content == "Hi Juan, enter **** to reset password"
    got = await stub.GetCommunication(
        pb.GetCommunicationRequest(org=org, communication_id=sent.id), metadata=auth
    )
    assert got.data.id == sent.id
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SearchCommunications(pb.SearchCommunicationsRequest(org=org), metadata=auth)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(failure.value)[0] == "400"


# ---- events ---------------------------------------------------------------------------------


async def test_communication_events_stream_over_grpc_and_sse(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    admin_headers: dict[str, str],
    org: str,
    channel: grpc.aio.Channel,
    auth: Metadata,
    make_token: TokenFactory,
) -> None:
    code = await seed_type(http, admin_headers, bearer, org, channels=("sms",))
    body = send_body(code, channels=["sms"])
    del body["emailInput"]
    sent = envelope(
        await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer), 202
    )
    await wait_status(http, bearer, org, sent["id"], "sms", "DELIVERED")
    stub = communications_service_pb2_grpc.CommunicationsServiceStub(channel)
    call = stub.StreamCommunicationEvents(
        pb.StreamCommunicationEventsRequest(org=org, after="0", communication_ids=[sent["id"]]),
        metadata=auth,
    )
    seen: list[pb.CommunicationEvent] = []
    async with asyncio.timeout(10):
        async for event in call:
            if event.envelope.type != "heartbeat":
                seen.append(event)
            if len(seen) == 3:
                call.cancel()
                break
    assert [e.envelope.type for e in seen] == [
        "communication.accepted",
        "communication.sent",
        "communication.delivered",
    ]
    assert all(e.delivery.communication_id == sent["id"] for e in seen)
    assert seen[2].delivery.status == "DELIVERED" and seen[2].delivery.channel == "sms"
    # An empty `after` starts with events from now on (the proto's contract): none of these.
    live = stub.StreamCommunicationEvents(
        pb.StreamCommunicationEventsRequest(
            org=org, communication_ids=[sent["id"]], heartbeat_seconds=1
        ),
        metadata=auth,
    )
    first = await asyncio.wait_for(live.read(), 5)
    live.cancel()
    assert first.envelope.type == "heartbeat"
    # Over REST: Server-Sent Events in camelCase, resumable from a cursor.
    async with http.stream(
        "GET",
        f"/v2/orgs/{org}/communications/events",
        params={"after": seen[1].envelope.cursor, "communicationIds": sent["id"]},
        headers={**bearer, "Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        async with asyncio.timeout(10):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    payload = json.loads(line[5:])
                    assert payload["envelope"]["type"] == "communication.delivered"
                    assert payload["delivery"]["communicationId"] == sent["id"]
                    break
    # Another org's token may not follow this org's stream.
    intruder = {"Authorization": f"Bearer {make_token('org-other-' + sent['id'][-6:])}"}
    refused = await http.get(f"/v2/orgs/{org}/communications/events", headers=intruder)
    assert errors(refused, 403)[0]["code"] == "403"
