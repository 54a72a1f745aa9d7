"""Contact groups through the REST edge: STATIC membership, DYNAMIC criteria, counts, 1017."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.support.auth import TokenFactory
from tests.support.contacts import create
from tests.support.errors import assert_error
from tests.support.rest import FORM

pytestmark = pytest.mark.envoy

SPAIN = json.dumps({"field": "country", "op": "eq", "value": "ES"})


async def create_group(http: httpx.AsyncClient, bearer: dict[str, str], **fields: Any) -> str:
    response = await http.post("/contact_groups", json=fields, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    group_id: str = response.json()["id"]
    return group_id


async def group(http: httpx.AsyncClient, bearer: dict[str, str], group_id: str) -> dict[str, Any]:
    response = await http.get(f"/contact_groups/{group_id}", headers=bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ready(http: httpx.AsyncClient, bearer: dict[str, str], group_id: str) -> dict[str, Any]:
    """The group once its count is settled (DYNAMIC groups recount after contact changes)."""
    for _ in range(400):
        body = await group(http, bearer, group_id)
        if body["status"] == "Ready":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"group {group_id} never became Ready: {body}")


async def members(http: httpx.AsyncClient, bearer: dict[str, str], group_id: str) -> list[str]:
    response = await http.get(f"/contact_groups/{group_id}/contacts", headers=bearer)
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()]


async def test_static_group_membership(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    group_id = await create_group(http, bearer, name="VIP", description="best", external_id="g-1")
    body = await group(http, bearer, group_id)
    assert (body["type"], body["status"], body["member_count"]) == ("STATIC", "Ready", 0)
    existing = await create(http, bearer, first_name="Ana")
    linked = await http.post(
        f"/contact_groups/{group_id}/contacts", json={"id": existing}, headers=bearer
    )
    assert linked.status_code == 200 and linked.json() == {"id": existing}
    # A contact body creates the contact and links it...
    created = await http.post(
        f"/contact_groups/{group_id}/contacts",
        json={"external_id": "m-2", "first_name": "Bea"},
        headers=bearer,
    )
    new_id = created.json()["id"]
    # ...and the same external_id again updates that contact instead of duplicating it.
    again = await http.post(
        f"/contact_groups/{group_id}/contacts",
        json={"external_id": "m-2", "last_name": "Díaz"},
        headers=bearer,
    )
    assert again.json() == {"id": new_id}
    assert sorted(await members(http, bearer, group_id)) == sorted([existing, new_id])
    assert (await group(http, bearer, group_id))["member_count"] == 2
    member = await http.get(f"/contact_groups/{group_id}/contacts/{new_id}", headers=bearer)
    assert member.json()["last_name"] == "Díaz" and member.json()["first_name"] == "Bea"
    # Linking twice is harmless; filters apply to the members.
    await http.post(f"/contact_groups/{group_id}/contacts", json={"id": existing}, headers=bearer)
    filtered = await http.get(
        f"/contact_groups/{group_id}/contacts", params={"first_name": "Bea"}, headers=bearer
    )
    assert [c["id"] for c in filtered.json()] == [new_id]
    removed = await http.delete(f"/contact_groups/{group_id}/contacts/{existing}", headers=bearer)
    assert removed.status_code == 200
    assert await members(http, bearer, group_id) == [new_id]
    assert_error(
        await http.get(f"/contact_groups/{group_id}/contacts/{existing}", headers=bearer),
        404,
        "404",
    )
    # The contact itself stays; deleting a member contact keeps the count true.
    assert (await http.get(f"/contacts/{existing}", headers=bearer)).status_code == 200
    await http.delete(f"/contacts/{new_id}", headers=bearer)
    assert (await group(http, bearer, group_id))["member_count"] == 0
    unknown = await http.post(
        f"/contact_groups/{group_id}/contacts", json={"id": "ct_nope"}, headers=bearer
    )
    assert_error(unknown, 404, "404")
    both = await http.post(
        f"/contact_groups/{group_id}/contacts",
        json={"id": existing, "first_name": "x"},
        headers=bearer,
    )
    assert_error(both, 400, "400")


async def test_dynamic_group_follows_its_criteria(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    spaniards = [await create(http, bearer, primary_addr_country="ES") for _ in range(3)]
    await create(http, bearer, primary_addr_country="PT")
    group_id = await create_group(http, bearer, name="Spain", type="DYNAMIC", criteria=SPAIN)
    body = await ready(http, bearer, group_id)
    assert body["member_count"] == 3
    assert sorted(await members(http, bearer, group_id)) == sorted(spaniards)
    # Contacts changing move the count: Processing until recounted, then Ready again.
    moved = await create(http, bearer, primary_addr_country="es")
    await http.post(
        f"/contacts/{spaniards[0]}", json={"primary_addr_country": "FR"}, headers=bearer
    )
    body = await ready(http, bearer, group_id)
    assert body["member_count"] == 3
    assert sorted(await members(http, bearer, group_id)) == sorted([*spaniards[1:], moved])
    member = await http.get(f"/contact_groups/{group_id}/contacts/{moved}", headers=bearer)
    assert member.status_code == 200
    outsider = await http.get(f"/contact_groups/{group_id}/contacts/{spaniards[0]}", headers=bearer)
    assert_error(outsider, 404, "404")
    # Members of DYNAMIC groups come from the criteria only.
    assert_error(
        await http.post(f"/contact_groups/{group_id}/contacts", json={"id": moved}, headers=bearer),
        400,
        "400",
    )
    assert_error(
        await http.delete(f"/contact_groups/{group_id}/contacts/{moved}", headers=bearer),
        400,
        "400",
    )
    # New criteria, new members.
    portugal = json.dumps({"any": [{"field": "country", "op": "in", "value": ["PT", "FR"]}]})
    changed = await http.post(
        f"/contact_groups/{group_id}", json={"criteria": portugal}, headers=bearer
    )
    assert changed.status_code == 200
    assert (await ready(http, bearer, group_id))["member_count"] == 2


async def test_criteria_language_operators(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    a = await create(
        http,
        bearer,
        first_name="Alba",
        extended_attributes='{"score": 7}',
        primary_email_addr="alba@example.com",
    )
    b = await create(http, bearer, first_name="Bruno", extended_attributes='{"score": 3}')
    cases = {
        json.dumps({"field": "extended_attributes.score", "op": "gte", "value": 5}): [a],
        json.dumps({"field": "extended_attributes.score", "op": "lt", "value": 5}): [b],
        json.dumps({"field": "email", "op": "exists"}): [a],
        json.dumps({"not": {"field": "email", "op": "exists"}}): [b],
        json.dumps({"field": "first_name", "op": "contains", "value": "RUN"}): [b],
        json.dumps({"field": "first_name", "op": "ne", "value": "Alba"}): [b],
        json.dumps(
            {
                "all": [
                    {"field": "first_name", "op": "starts_with", "value": "a"},
                    {"field": "created_date", "op": "gte", "value": "2000-01-01"},
                ]
            }
        ): [a],
    }
    for criteria, expected in cases.items():
        group_id = await create_group(http, bearer, name="ops", type="DYNAMIC", criteria=criteria)
        assert sorted(await members(http, bearer, group_id)) == sorted(expected), criteria


async def test_invalid_criteria_is_1017(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    invalid = [
        "{not json",
        json.dumps({"field": "salary", "op": "eq", "value": 1}),
        json.dumps({"field": "country", "op": "like", "value": "E%"}),
        json.dumps({"all": []}),
        json.dumps({"field": "country", "op": "in", "value": "ES"}),
        json.dumps({"all": [{"field": "country"}], "any": []}),
        json.dumps(["country"]),
    ]
    for criteria in invalid:
        response = await http.post(
            "/contact_groups",
            json={"name": "x", "type": "DYNAMIC", "criteria": criteria},
            headers=bearer,
        )
        assert "criteria" in assert_error(response, 400, "1017"), criteria
    missing = await http.post(
        "/contact_groups", json={"name": "x", "type": "DYNAMIC"}, headers=bearer
    )
    assert_error(missing, 400, "1017")
    group_id = await create_group(http, bearer, name="ok", type="DYNAMIC", criteria=SPAIN)
    update = await http.post(f"/contact_groups/{group_id}", json={"criteria": "[]"}, headers=bearer)
    assert_error(update, 400, "1017")
    assert (await group(http, bearer, group_id))["criteria"] == SPAIN.replace(" ", "")


async def test_group_attributes_list_locking_and_form_put(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    group_id = await create_group(http, bearer, name="A", external_id="ext-a")
    assert_error(
        await http.post(
            "/contact_groups", json={"name": "B", "external_id": "ext-a"}, headers=bearer
        ),
        409,
        "1011",
    )
    assert_error(
        await http.post("/contact_groups", json={"description": "no name"}, headers=bearer),
        400,
        "400",
    )
    assert_error(
        await http.post("/contact_groups", json={"name": "x", "criteria": SPAIN}, headers=bearer),
        400,
        "400",
    )
    assert_error(
        await http.post("/contact_groups", json={"name": "x" * 257}, headers=bearer), 400, "1023"
    )
    retype = await http.post(
        f"/contact_groups/{group_id}", json={"type": "DYNAMIC"}, headers=bearer
    )
    assert "type" in assert_error(retype, 400, "400")
    stale = await http.post(
        f"/contact_groups/{group_id}", json={"name": "B", "version_number": 9}, headers=bearer
    )
    assert_error(stale, 409, "1001")
    put = await http.put(
        f"/contact_groups/{group_id}",
        content="name=Renamed&version_number=1",
        headers={**bearer, "content-type": FORM},
    )
    assert put.status_code == 200, put.text
    body = await group(http, bearer, group_id)
    assert (body["name"], body["external_id"], body["version_number"]) == ("Renamed", "", 2)
    listed = await http.get(
        "/contact_groups", params={"type": "STATIC", "name": "Renamed"}, headers=bearer
    )
    assert [g["id"] for g in listed.json()] == [group_id]
    intruder = {"Authorization": f"Bearer {make_token('org-x-' + group_id[-8:])}"}
    assert_error(await http.get(f"/contact_groups/{group_id}", headers=intruder), 404, "404")
    assert_error(
        await http.get(f"/contact_groups/{group_id}/contacts", headers=intruder), 404, "404"
    )
    assert (await http.get("/contact_groups", headers=intruder)).json() == []
    assert (await http.delete(f"/contact_groups/{group_id}", headers=bearer)).status_code == 200
    assert_error(await http.get(f"/contact_groups/{group_id}", headers=bearer), 404, "404")


async def test_large_dynamic_group_counts_and_pages_in_the_database(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    """Listing pages through members without the server loading them all."""
    for i in range(30):
        await create(http, bearer, primary_addr_country="ES", first_name=f"n{i:02d}")
    group_id = await create_group(http, bearer, name="big", type="DYNAMIC", criteria=SPAIN)
    assert (await ready(http, bearer, group_id))["member_count"] == 30
    seen: list[str] = []
    token = ""
    while True:
        params: dict[str, Any] = {"limit": 7}
        if token:
            params["page_token"] = token
        page = await http.get(f"/contact_groups/{group_id}/contacts", params=params, headers=bearer)
        seen += [c["id"] for c in page.json()]
        token = page.headers.get("x-next-page-token", "")
        if not token:
            break
    assert len(seen) == len(set(seen)) == 30
