"""The SMS API over native gRPC: what a gRPC client in any language sees."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from switchboard.sms.v1 import sms_message_pb2 as pb
from switchboard.sms.v1 import sms_service_pb2_grpc

from switchboard.server.app.server import Application
from switchboard.server.core.auth import Role
from tests.support.auth import Metadata, TokenFactory
from tests.support.errors import error_details
from tests.support.sms import Stub, collect_events, first_event, sms


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return sms_service_pb2_grpc.SmsServiceStub(channel)


async def test_send_groups_outcomes_per_provider(stub: Stub, auth: Metadata) -> None:
    request = pb.SendSmsRequest(
        messages=[
            sms("grandcom", "+27 82 123 4567"),
            sms("Clickatell", "0027821234568"),
            sms("smpp", "+447911123456", client_message_id="c-1"),
        ]
    )
    response = await stub.SendSms(request, metadata=auth)
    [grandcom] = response.grandcom_msg_response.messages
    [clickatell] = response.clickatell_msg_response.messages
    [smpp] = response.smpp_msg_response.messages
    assert grandcom.accepted
    assert not grandcom.has_error
    assert grandcom.to == "+27821234567"
    assert clickatell.accepted
    assert clickatell.to == "+27821234568"
    assert smpp.accepted
    assert smpp.to == "+447911123456"
    assert smpp.msg.client_message_id == "c-1"
    assert smpp.msg.to == "+447911123456"
    ids = {grandcom.api_message_id, clickatell.api_message_id, smpp.api_message_id}
    assert len(ids) == 3
    assert all(i.startswith("sms_") for i in ids)
    assert not response.HasField("error")
    assert not response.HasField("response_status")


async def test_unknown_channel_fails_only_that_message(stub: Stub, auth: Metadata) -> None:
    request = pb.SendSmsRequest(
        messages=[sms("smpp"), sms("pigeon", client_message_id="p-1"), sms("grandcom")]
    )
    response = await stub.SendSms(request, metadata=auth)
    assert response.smpp_msg_response.messages[0].accepted
    assert response.grandcom_msg_response.messages[0].accepted
    [problem] = response.response_status.errors
    assert problem.field_name == "Messages[1].channel"
    assert problem.error_code == "InvalidChannel"
    assert "pigeon" in problem.message
    assert problem.meta["clientMessageId"] == "p-1"
    assert response.error == "1 of 3 messages were not accepted"


@pytest.mark.parametrize(
    ("to", "fragment"),
    [
        ("not-a-number", "not a phone number"),
        ("+2782", "not a valid phone number"),
        ("0821234567", "no country code"),
        ("+999123456789", "not"),
    ],
)
async def test_invalid_numbers_are_rejected_per_message(
    stub: Stub, auth: Metadata, to: str, fragment: str
) -> None:
    response = await stub.SendSms(
        pb.SendSmsRequest(messages=[sms("grandcom", to), sms("grandcom")]), metadata=auth
    )
    bad, good = response.grandcom_msg_response.messages
    assert not bad.accepted
    assert bad.has_error
    assert fragment in bad.error
    assert bad.api_message_id == ""
    assert bad.to == to
    assert good.accepted


async def test_fixed_line_is_accepted_then_fails_with_clear_error(
    stub: Stub, auth: Metadata
) -> None:
    response = await stub.SendSms(
        pb.SendSmsRequest(messages=[sms("smpp", "+27111234567")]), metadata=auth
    )
    api_id = response.smpp_msg_response.messages[0].api_message_id
    events = await collect_events(stub, auth, until=2, after="0", api_message_ids=[api_id])
    assert [e.envelope.type for e in events] == ["sms.accepted", "sms.failed"]
    assert events[1].message.error == "+27111234567 is a fixed line and cannot receive SMS"
    status = await stub.GetSmsMessage(pb.GetSmsMessageRequest(api_message_id=api_id), metadata=auth)
    assert status.status == "FAILED"
    assert status.error.startswith("+27111234567 is a fixed line")


async def test_accepted_message_is_delivered_and_readable(stub: Stub, auth: Metadata) -> None:
    response = await stub.SendSms(
        pb.SendSmsRequest(messages=[sms("clickatell", content="€ costs extra")]), metadata=auth
    )
    api_id = response.clickatell_msg_response.messages[0].api_message_id
    events = await collect_events(stub, auth, until=3, after="0", api_message_ids=[api_id])
    assert [e.message.status for e in events] == ["ACCEPTED", "SENT", "DELIVERED"]
    cursors = [int(e.envelope.cursor) for e in events]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == 3
    status = await stub.GetSmsMessage(pb.GetSmsMessageRequest(api_message_id=api_id), metadata=auth)
    assert status.status == "DELIVERED"
    assert status.channel == "clickatell"
    assert status.segments == 1
    assert status.content == "€ costs extra"
    assert status.update_time.ToDatetime() >= status.create_time.ToDatetime()


async def test_client_message_id_makes_retries_idempotent(stub: Stub, auth: Metadata) -> None:
    request = pb.SendSmsRequest(messages=[sms("smpp", client_message_id="order-42")])
    first = await stub.SendSms(request, metadata=auth)
    again = await asyncio.gather(*(stub.SendSms(request, metadata=auth) for _ in range(5)))
    first_id = first.smpp_msg_response.messages[0].api_message_id
    assert {r.smpp_msg_response.messages[0].api_message_id for r in again} == {first_id}
    events = await collect_events(stub, auth, until=1, after="0", states=["ACCEPTED"])
    assert [e.message.api_message_id for e in events] == [first_id]


async def test_client_message_id_reused_for_other_content_is_refused(
    stub: Stub, auth: Metadata
) -> None:
    await stub.SendSms(pb.SendSmsRequest(messages=[sms(client_message_id="k")]), metadata=auth)
    response = await stub.SendSms(
        pb.SendSmsRequest(messages=[sms(content="different", client_message_id="k")]),
        metadata=auth,
    )
    [outcome] = response.smpp_msg_response.messages
    assert not outcome.accepted
    assert "already used for a different message" in outcome.error


async def test_duplicate_client_message_id_within_one_request(stub: Stub, auth: Metadata) -> None:
    response = await stub.SendSms(
        pb.SendSmsRequest(messages=[sms(client_message_id="d"), sms(client_message_id="d")]),
        metadata=auth,
    )
    first, second = response.smpp_msg_response.messages
    assert first.accepted
    assert second.accepted
    assert first.api_message_id == second.api_message_id


async def test_oversize_content_rejects_whole_request_with_1023(stub: Stub, auth: Metadata) -> None:
    request = pb.SendSmsRequest(messages=[sms(), sms(content="x" * 1601)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendSms(request, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, metadata, fields = error_details(caught.value)
    assert reason == "1023"
    assert metadata["http_status"] == "400"
    assert fields == [("Messages[1].content", "Length")]
    # Nothing was half-applied: the valid first message was not accepted either.
    assert (await first_event(stub, auth)).envelope.type == "heartbeat"


async def test_missing_fields_and_batch_limit(stub: Stub, auth: Metadata) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendSms(pb.SendSmsRequest(messages=[pb.SmsMessage()]), metadata=auth)
    reason, _, fields = error_details(caught.value)
    assert reason == "400"
    assert fields == [
        ("Messages[0].channel", "Required"),
        ("Messages[0].to", "Required"),
        ("Messages[0].content", "Required"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendSms(pb.SendSmsRequest(), metadata=auth)
    assert error_details(caught.value)[2] == [("Messages", "Required")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendSms(pb.SendSmsRequest(messages=[sms()] * 51), metadata=auth)
    assert error_details(caught.value)[2] == [("Messages", "Range")]


async def test_concurrent_sends_are_all_durable(
    stub: Stub, auth: Metadata, app: Application
) -> None:
    responses = await asyncio.gather(
        *(
            stub.SendSms(pb.SendSmsRequest(messages=[sms(content=f"n{i}")]), metadata=auth)
            for i in range(200)
        )
    )
    ids = {r.smpp_msg_response.messages[0].api_message_id for r in responses}
    assert len(ids) == 200
    for api_id in list(ids)[:5]:
        got = await stub.GetSmsMessage(
            pb.GetSmsMessageRequest(api_message_id=api_id), metadata=auth
        )
        assert got.api_message_id == api_id


async def test_stream_resumes_after_cursor_with_nothing_lost(stub: Stub, auth: Metadata) -> None:
    sent = await stub.SendSms(
        pb.SendSmsRequest(messages=[sms(content=f"m{i}") for i in range(4)]), metadata=auth
    )
    ids = [m.api_message_id for m in sent.smpp_msg_response.messages]
    everything = await collect_events(stub, auth, until=12, after="0")
    assert sorted(e.message.api_message_id for e in everything) == sorted(ids * 3)
    # A subscriber that stopped after 5 events resumes from the fifth cursor: it gets exactly
    # the remaining 7, in order, with no duplicates.
    cursor = everything[4].envelope.cursor
    resumed = await collect_events(stub, auth, until=7, after=cursor)
    assert [e.envelope.cursor for e in resumed] == [e.envelope.cursor for e in everything[5:]]


async def test_stream_filters_by_state_and_sends_heartbeats(stub: Stub, auth: Metadata) -> None:
    await stub.SendSms(pb.SendSmsRequest(messages=[sms()]), metadata=auth)
    delivered = await collect_events(stub, auth, until=1, after="0", states=["delivered"])
    assert delivered[0].envelope.type == "sms.delivered"
    call = stub.StreamSmsEvents(
        pb.StreamSmsEventsRequest(heartbeat_seconds=1, states=["FAILED"]), metadata=auth
    )
    first = await asyncio.wait_for(call.read(), 3)
    call.cancel()
    assert first.envelope.type == "heartbeat"
    assert not first.HasField("message")


async def test_stream_rejects_bad_filters(stub: Stub, auth: Metadata) -> None:
    for request in (
        pb.StreamSmsEventsRequest(states=["LOST"]),
        pb.StreamSmsEventsRequest(after="yesterday"),
        pb.StreamSmsEventsRequest(heartbeat_seconds=1000),
    ):
        call = stub.StreamSmsEvents(request, metadata=auth)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_other_orgs_messages_are_invisible(
    stub: Stub, auth: Metadata, make_token: TokenFactory
) -> None:
    response = await stub.SendSms(pb.SendSmsRequest(messages=[sms()]), metadata=auth)
    api_id = response.smpp_msg_response.messages[0].api_message_id
    intruder = [("authorization", f"Bearer {make_token('org-intruder')}")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSmsMessage(pb.GetSmsMessageRequest(api_message_id=api_id), metadata=intruder)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    events = stub.StreamSmsEvents(
        pb.StreamSmsEventsRequest(after="0", api_message_ids=[api_id], heartbeat_seconds=1),
        metadata=intruder,
    )
    first = await asyncio.wait_for(events.read(), 3)
    events.cancel()
    assert first.envelope.type == "heartbeat"
    assert (await first_event(stub, intruder)).envelope.type == "heartbeat"


async def test_authentication_and_roles(stub: Stub, org: str, make_token: TokenFactory) -> None:
    request = pb.SendSmsRequest(messages=[sms()])
    cases = {
        "missing": [],
        "not bearer": [("authorization", "Basic abc")],
        "garbage": [("authorization", "Bearer not.a.jwt")],
        "expired": [("authorization", f"Bearer {make_token(org, ttl=timedelta(seconds=-60))}")],
        "forged": [("authorization", "Bearer " + _forged(org))],
    }
    for name, metadata in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendSms(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert error_details(caught.value)[0] == "401", name
    no_roles = [("authorization", f"Bearer {make_token(org, roles=())}")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendSms(request, metadata=no_roles)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(caught.value)[0] == "403"
    for role in Role:
        allowed = [("authorization", f"Bearer {make_token(org, roles=[role])}")]
        assert (await stub.SendSms(request, metadata=allowed)).smpp_msg_response.messages


def _forged(org: str) -> str:
    import jwt

    return jwt.encode(
        {"sub": "x", "org": org, "roles": ["Admin"], "exp": 4_000_000_000},
        "some-other-secret-of-sufficient-length-000000",
        algorithm="HS256",
    )
