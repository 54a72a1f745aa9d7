"""Contacts through the REST edge (family B) and gRPC: CRUD, form PUT, locking, unique keys,
validation, fast access rules, cross-org isolation and the event stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import httpx
import pytest
from switchboard.contacts.v1 import contact_pb2, contacts_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from tests.support.auth import Metadata, TokenFactory
from tests.support.contacts import create
from tests.support.errors import assert_error, error_details
from tests.support.rest import FORM

pytestmark = pytest.mark.envoy


async def get(http: httpx.AsyncClient, bearer: dict[str, str], contact_id: str) -> dict[str, Any]:
    response = await http.get(f"/contacts/{contact_id}", headers=bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_get_and_every_documented_attribute(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    addresses = [{"priority": 1, "designation": "home", "city": "Madrid", "status": "VALID_NEW"}]
    contact_id = await create(
        http,
        bearer,
        external_id="crm-1",
        first_name="Ana",
        last_name="García",
        birth_date="1990-04-01",
        first_acquisition_date="2020-01-01",
        last_acquisition_date="2026-11-01",
        primary_mdn="0034 600 111 222",
        primary_addr_line1="Calle Mayor 1",
        primary_addr_city="Madrid",
        primary_addr_zip="28013",
        primary_addr_country="es",
        primary_email_addr="ana@example.com",
        primary_social_handle="@ana",
        address_list=json.dumps(addresses),
        interest_list='[{"code": "run", "score": 0.7}]',
        extended_attributes='{"loyalty": {"tier": "gold"}}',
        preferred_language="es",
        voice_preference="PREFER_VOICE",
        time_zone="Europe/Madrid",
    )
    contact = await get(http, bearer, contact_id)
    assert contact["id"] == contact_id
    assert contact["primary_mdn"] == "+34600111222"  # normalised to E.164
    assert contact["primary_addr_country"] == "ES"
    assert json.loads(contact["address_list"]) == addresses
    assert json.loads(contact["extended_attributes"]) == {"loyalty": {"tier": "gold"}}
    assert contact["voice_preference"] == "PREFER_VOICE"
    assert contact["time_zone"] == "Europe/Madrid"
    assert contact["version_number"] == 1
    assert contact["application_id"] == "test-app"
    assert contact["created_date"].endswith("Z") and contact["last_updated_date"]
    # Documented keys are present even when empty.
    assert contact["primary_addr_line2"] == "" and contact["customer_device_list"] == ""
    # Filters as clients send them: `+` in a query is a space, and E.164 survives both ways.
    for query in ("primary_mdn=%2B34600111222", "primary_mdn=+34600111222"):
        found = await http.get(f"/contacts?{query}&last_name=Garc%C3%ADa", headers=bearer)
        assert [c["id"] for c in found.json()] == [contact_id], query
    named = await http.get(
        "/contacts", params={"primary_addr_line1": "Calle Mayor 1"}, headers=bearer
    )
    assert [c["id"] for c in named.json()] == [contact_id]
    # Item GETs accept (and ignore) the list filters.
    response = await http.get(f"/contacts/{contact_id}?first_name=Nope", headers=bearer)
    assert response.status_code == 200 and response.json()["id"] == contact_id


async def test_list_is_a_bare_array_with_exact_filters_and_paging(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    ids = [await create(http, bearer, first_name=f"P{i}", last_name="Page") for i in range(5)]
    other = await create(http, bearer, first_name="Solo", last_name="Other")
    response = await http.get("/contacts", headers=bearer, params={"last_name": "Page"})
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert [c["id"] for c in body] == ids
    assert "x-next-page-token" not in response.headers
    first = await http.get("/contacts", headers=bearer, params={"last_name": "Page", "limit": 2})
    assert [c["id"] for c in first.json()] == ids[:2]
    token = first.headers["x-next-page-token"]
    second = await http.get(
        "/contacts", headers=bearer, params={"last_name": "Page", "limit": 2, "page_token": token}
    )
    assert [c["id"] for c in second.json()] == ids[2:4]
    offset = await http.get(
        "/contacts", headers=bearer, params={"last_name": "Page", "limit": 2, "offset": 4}
    )
    assert [c["id"] for c in offset.json()] == ids[4:]
    exact = await http.get("/contacts", headers=bearer, params={"first_name": "solo"})
    assert exact.json() == []  # exact match, case included
    today = (await get(http, bearer, other))["created_date"][:10]
    by_day = await http.get(
        "/contacts", headers=bearer, params={"created_date": today, "first_name": "Solo"}
    )
    assert [c["id"] for c in by_day.json()] == [other]
    criteria = json.dumps({"field": "first_name", "op": "starts_with", "value": "p"})
    by_criteria = await http.get(
        "/contacts", headers=bearer, params={"criteria": criteria, "last_name": "Page"}
    )
    assert len(by_criteria.json()) == 5
    assert_error(await http.get("/contacts?limit=5000", headers=bearer), 400, "400")
    assert_error(await http.get("/contacts?nickname=x", headers=bearer), 400, "400")
    bad_date = await http.get("/contacts?created_date=yesterday", headers=bearer)
    assert "created_date" in assert_error(bad_date, 400, "400")


async def test_partial_update_replace_with_form_and_delete(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    contact_id = await create(http, bearer, first_name="Ana", last_name="Old", external_id="x-9")
    response = await http.post(f"/contacts/{contact_id}", json={"last_name": "New"}, headers=bearer)
    assert response.status_code == 200 and response.json() == {"id": contact_id}
    contact = await get(http, bearer, contact_id)
    assert (contact["first_name"], contact["last_name"], contact["version_number"]) == (
        "Ana",
        "New",
        2,
    )
    form = "first_name=Eva&primary_email_addr=eva%40example.com&version_number=2"
    response = await http.put(
        f"/contacts/{contact_id}", content=form, headers={**bearer, "content-type": FORM}
    )
    assert response.status_code == 200, response.text
    replaced = await get(http, bearer, contact_id)
    assert replaced["first_name"] == "Eva"
    assert replaced["primary_email_addr"] == "eva@example.com"
    assert replaced["last_name"] == "" and replaced["external_id"] == ""  # replace clears
    assert replaced["version_number"] == 3
    response = await http.delete(f"/contacts/{contact_id}", headers=bearer)
    assert response.status_code == 200
    assert_error(await http.get(f"/contacts/{contact_id}", headers=bearer), 404, "404")
    assert_error(await http.delete(f"/contacts/{contact_id}", headers=bearer), 404, "404")


async def test_optimistic_locking_by_body_and_if_match(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    contact_id = await create(http, bearer, first_name="Ana")
    stale = await http.post(
        f"/contacts/{contact_id}", json={"first_name": "B", "version_number": 7}, headers=bearer
    )
    assert "version 1" in assert_error(stale, 409, "1001")
    stale = await http.post(
        f"/contacts/{contact_id}", json={"first_name": "B"}, headers={**bearer, "If-Match": '"5"'}
    )
    assert_error(stale, 409, "1001")
    fresh = await http.post(
        f"/contacts/{contact_id}", json={"first_name": "B"}, headers={**bearer, "If-Match": "1"}
    )
    assert fresh.status_code == 200
    assert (await get(http, bearer, contact_id))["first_name"] == "B"
    garbage = await http.post(
        f"/contacts/{contact_id}", json={"first_name": "C"}, headers={**bearer, "If-Match": "x"}
    )
    assert "If-Match" in assert_error(garbage, 400, "400")


async def test_concurrent_updates_with_the_same_version_let_exactly_one_win(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    contact_id = await create(http, bearer, first_name="Ana")
    responses = await asyncio.gather(
        *(
            http.post(
                f"/contacts/{contact_id}",
                json={"first_name": f"N{i}", "version_number": 1},
                headers=bearer,
            )
            for i in range(6)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409, 409, 409, 409, 409], [r.text for r in responses]
    assert (await get(http, bearer, contact_id))["version_number"] == 2


async def test_external_id_is_unique_per_org(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    first = await create(http, bearer, external_id="dup-1")
    assert "external_id" in assert_error(
        await http.post("/contacts", json={"external_id": "dup-1"}, headers=bearer), 409, "1011"
    )
    second = await create(http, bearer, external_id="dup-2")
    taken = await http.post(f"/contacts/{second}", json={"external_id": "dup-1"}, headers=bearer)
    assert_error(taken, 409, "1011")
    # Another org may use the same key.
    other = {"Authorization": f"Bearer {make_token('org-other-' + first[-6:])}"}
    await create(http, other, external_id="dup-1")


async def test_validation_names_every_bad_field(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    bad = {
        "birth_date": "01/04/1990",
        "primary_mdn": "not a number",
        "primary_email_addr": "nope",
        "address_list": '{"not": "an array"}',
        "extended_attributes": "{broken",
        "voice_preference": "LOUD",
        "time_zone": "Mars/Olympus",
        "primary_addr_country": "Spain",
    }
    description = assert_error(await http.post("/contacts", json=bad, headers=bearer), 400, "400")
    for field in bad:
        assert field in description, (field, description)
    too_long = await http.post("/contacts", json={"first_name": "x" * 257}, headers=bearer)
    assert "first_name" in assert_error(too_long, 400, "1023")
    unknown = await http.post("/contacts", json={"nick_name": "x"}, headers=bearer)
    assert "nick_name" in assert_error(unknown, 400, "400")
    with_id = await http.post("/contacts", json={"id": "ct_x"}, headers=bearer)
    assert_error(with_id, 400, "400")
    wrong_type = await http.post("/contacts", json={"first_name": {"a": 1}}, headers=bearer)
    assert_error(wrong_type, 400, "400")
    assert await http.get("/contacts", headers=bearer) is not None
    assert (await http.get("/contacts", headers=bearer)).json() == []  # nothing half-created


async def test_other_orgs_ids_are_not_found_and_lists_are_scoped(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    contact_id = await create(http, bearer, first_name="Mine")
    intruder = {"Authorization": f"Bearer {make_token('org-intruder-' + contact_id[-8:])}"}
    for method, body in (("GET", None), ("POST", {"first_name": "x"}), ("DELETE", None)):
        response = await http.request(
            method, f"/contacts/{contact_id}", json=body, headers=intruder
        )
        assert_error(response, 404, "404")
    put = await http.put(
        f"/contacts/{contact_id}",
        content="first_name=x",
        headers={**intruder, "content-type": FORM},
    )
    assert_error(put, 404, "404")
    assert (await http.get("/contacts", headers=intruder)).json() == []
    assert (await get(http, bearer, contact_id))["first_name"] == "Mine"


async def test_requests_without_a_valid_token_are_refused(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/contacts"), 401, "401")
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert_error(await http.post("/contacts", json={}, headers=bad), 401, "401")


async def test_fast_access_rules_derive_and_editable_slots(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    rule = await http.post(
        "/contacts/fast_access",
        json={
            "target_attribute": "fast_access_1",
            "target_attribute_name": "tier",
            "value_derivation_script": "$.extended_attributes.loyalty.tier",
        },
        headers=bearer,
    )
    assert rule.status_code == 200, rule.text
    rule_id = rule.json()["id"]
    editable = await http.post(
        "/contacts/fast_access",
        json={"target_attribute": "fast_access_2", "target_attribute_name": "segment"},
        headers=bearer,
    )
    assert editable.status_code == 200, editable.text
    contact_id = await create(
        http,
        bearer,
        extended_attributes='{"loyalty": {"tier": "gold"}}',
        fast_access='{"segment": "vip"}',
    )
    contact = await get(http, bearer, contact_id)
    assert json.loads(contact["fast_access"]) == {"tier": "gold", "segment": "vip"}
    # Derived slots cannot be set by clients.
    refused = await http.post(
        f"/contacts/{contact_id}", json={"fast_access": '{"tier": "x"}'}, headers=bearer
    )
    assert "tier" in assert_error(refused, 400, "400")
    # Criteria and lists see the values.
    criteria = json.dumps({"field": "fast_access.tier", "op": "eq", "value": "gold"})
    found = await http.get("/contacts", headers=bearer, params={"criteria": criteria})
    assert [c["id"] for c in found.json()] == [contact_id]
    # The literal path is not swallowed by /contacts/{Contact_ID}.
    listed = await http.get("/contacts/fast_access", headers=bearer)
    assert {r["target_attribute"] for r in listed.json()} == {"fast_access_1", "fast_access_2"}
    got = await http.get(f"/contacts/fast_access/{rule_id}", headers=bearer)
    assert got.json()["value_derivation_script"] == "$.extended_attributes.loyalty.tier"
    # Changing a rule re-derives every contact in the background.
    changed = await http.post(
        f"/contacts/fast_access/{rule_id}",
        json={"value_derivation_script": "$.first_name", "version_number": 1},
        headers=bearer,
    )
    assert changed.status_code == 200, changed.text
    await http.post(f"/contacts/{contact_id}", json={"first_name": "Zoe"}, headers=bearer)
    for _ in range(200):
        values = json.loads((await get(http, bearer, contact_id))["fast_access"])
        if values.get("tier") == "Zoe":
            break
        await asyncio.sleep(0.1)
    assert values == {"tier": "Zoe", "segment": "vip"}
    # Deleting the rule removes its value from contacts.
    assert (
        await http.delete(f"/contacts/fast_access/{rule_id}", headers=bearer)
    ).status_code == 200
    for _ in range(200):
        values = json.loads((await get(http, bearer, contact_id))["fast_access"] or "{}")
        if "tier" not in values:
            break
        await asyncio.sleep(0.1)
    assert values == {"segment": "vip"}
    assert_error(await http.get(f"/contacts/fast_access/{rule_id}", headers=bearer), 404, "404")


async def test_fast_access_rule_validation_and_unique_slots(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    bad = await http.post(
        "/contacts/fast_access",
        json={"target_attribute": "fast_access_21", "value_derivation_script": "$$[["},
        headers=bearer,
    )
    description = assert_error(bad, 400, "400")
    assert "target_attribute" in description and "value_derivation_script" in description
    ok = await http.post(
        "/contacts/fast_access", json={"target_attribute": "fast_access_3"}, headers=bearer
    )
    assert ok.status_code == 200
    again = await http.post(
        "/contacts/fast_access", json={"target_attribute": "fast_access_3"}, headers=bearer
    )
    assert_error(again, 409, "1011")


async def test_grpc_clients_get_the_same_rules(channel: grpc.aio.Channel, auth: Metadata) -> None:
    stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    created = await stub.CreateContact(
        pb.CreateContactRequest(body=contact_pb2.ContactInput(first_name="G", external_id="g-1")),
        metadata=auth,
    )
    contact = await stub.GetContact(pb.GetContactRequest(contact_id=created.id), metadata=auth)
    assert contact.first_name == "G" and contact.version_number == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateContact(
            pb.UpdateContactRequest(
                contact_id=created.id,
                body=contact_pb2.ContactInput(first_name="H", version_number=3),
            ),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert error_details(caught.value)[0] == "1001"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateContact(
            pb.CreateContactRequest(body=contact_pb2.ContactInput(birth_date="1990-13-01")),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("birth_date", "Format") in error_details(caught.value)[2]
    listed = await stub.ListContacts(pb.ListContactsRequest(external_id="g-1"), metadata=auth)
    assert [c.id for c in listed.contacts] == [created.id]


async def test_contact_events_stream_and_resume(
    channel: grpc.aio.Channel, auth: Metadata, http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    contact_id = await create(http, bearer, first_name="Ev")
    await http.post(f"/contacts/{contact_id}", json={"first_name": "Ev2"}, headers=bearer)
    await http.delete(f"/contacts/{contact_id}", headers=bearer)

    async def read(after: str, count: int) -> list[pb.ContactsEvent]:
        seen: list[pb.ContactsEvent] = []
        call = stub.StreamContactsEvents(
            pb.StreamContactsEventsRequest(
                after=after, types=["contact.created", "contact.updated", "contact.deleted"]
            ),
            metadata=auth,
        )
        async with asyncio.timeout(10):
            async for event in call:
                if event.envelope.type != "heartbeat":
                    seen.append(event)
                if len(seen) == count:
                    call.cancel()
                    break
        return seen

    events = await read("0", 3)
    assert [e.envelope.type for e in events] == [
        "contact.created",
        "contact.updated",
        "contact.deleted",
    ]
    assert events[1].contact.first_name == "Ev2"
    assert all(e.envelope.resource_id == contact_id for e in events)
    resumed = await read(events[0].envelope.cursor, 2)
    assert [e.envelope.cursor for e in resumed] == [e.envelope.cursor for e in events[1:]]
    # Over REST it is Server-Sent Events.
    async with http.stream(
        "GET",
        "/contacts/events",
        params={"after": "0", "types": "contact.deleted"},
        headers={**bearer, "Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        async with asyncio.timeout(10):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    payload = json.loads(line[5:])
                    assert payload["envelope"]["type"] == "contact.deleted"
                    assert payload["contact"]["id"] == contact_id
                    break


async def test_json_sent_the_curl_way_is_json(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    """`curl -d '{…}'` labels its JSON as a form; the body is still read as JSON."""
    body = '{"first_name": "Curl", "primary_mdn": "+34600111333"}'
    response = await http.post("/contacts", content=body, headers={**bearer, "content-type": FORM})
    assert response.status_code == 200, response.text
    contact = await get(http, bearer, response.json()["id"])
    assert (contact["first_name"], contact["primary_mdn"]) == ("Curl", "+34600111333")
    # A real form still works, `+` and all.
    form = "first_name=Ana+Mar%C3%ADa&primary_mdn=%2B34600111444"
    response = await http.post("/contacts", content=form, headers={**bearer, "content-type": FORM})
    contact = await get(http, bearer, response.json()["id"])
    assert (contact["first_name"], contact["primary_mdn"]) == ("Ana María", "+34600111444")
