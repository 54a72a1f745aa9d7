"""Sender ID classes and types (reference data, Admin-only writes) and sender IDs through the
REST edge (family B): seeding, the OTHER rule, address validation, operator-managed fields,
masked credentials, locking, unique keys, SHARED copies, the PREPROVISIONED purchase flow,
Admin provisioning, cross-org isolation and resolve_sendable."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from switchboard.server.app.server import Application
from switchboard.server.core.auth import Role
from switchboard.server.core.db import table_of
from switchboard.server.core.errors import NotFound
from switchboard.server.core.models import EventRecord
from switchboard.server.messaging.senders.service import SenderService
from tests.support.auth import TokenFactory
from tests.support.errors import assert_error
from tests.support.messaging import create_sender, us_number
from tests.support.rest import FORM

pytestmark = pytest.mark.envoy


def short_code() -> str:
    return str(random.randint(100000, 99999999))


@pytest.fixture
def admin(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('operator', roles=(Role.ADMIN,))}"}


@pytest.fixture
def other(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(f'org-{uuid.uuid4().hex[:12]}')}"}


async def get_sender(
    http: httpx.AsyncClient, headers: dict[str, str], sender_id: str
) -> dict[str, Any]:
    response = await http.get(f"/messaging/sender_ids/{sender_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def system_sender(
    http: httpx.AsyncClient, admin: dict[str, str], ownership: str = "PREPROVISIONED"
) -> str:
    response = await http.post(
        "/messaging/admin/sender_ids",
        json={
            "ownership": ownership,
            "type_id": "sms-long-code",
            "class_id": "notifications-na",
            "address": us_number(),
            "operators": ["ATT", "VERIZON"],
            "name": "operator number",
        },
        headers=admin,
    )
    assert response.status_code == 200, response.text
    sender_id: str = response.json()["id"]
    return sender_id


# -- reference data ---------------------------------------------------------------------------


async def test_seeded_classes_and_types_are_listed_and_read_only(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    response = await http.get("/messaging/sender_id_classes", headers=bearer)
    assert response.status_code == 200, response.text
    classes = response.json()
    assert isinstance(classes, list)
    ids = {c["id"] for c in classes}
    assert {"alerts-na", "notifications-na", "commercial-eu", "alerts-other"} <= ids
    alerts = await http.get(
        "/messaging/sender_id_classes?designation=alerts&applicable_countries=other",
        headers=bearer,
    )
    assert [c["id"] for c in alerts.json()] == ["alerts-other"]
    one = await http.get("/messaging/sender_id_classes/commercial-eu?name=ignored", headers=bearer)
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["applicable_countries"][:2] == ["ES", "FR"]
    assert body["country_peak_throughput"] == 5
    assert body["country_peak_total_throughput"] == 20
    assert body["country_daily_throughput"] == 40000
    window = json.loads(body["delivery_window"])
    assert window["FR"]["SUN"] == [] and window["DEFAULT"]["MON"] == ["09:00-21:00"]
    assert body["version_number"] >= 1 and body["created_date"].endswith("Z")
    assert_error(await http.get("/messaging/sender_id_classes/nope", headers=bearer), 404, "404")

    types = (await http.get("/messaging/sender_id_types", headers=bearer)).json()
    by_id = {t["id"]: t for t in types}
    assert set(by_id) >= {
        "sms-long-code",
        "sms-short-code",
        "sms-alphanumeric",
        "email",
        "whatsapp",
    }
    assert by_id["whatsapp"]["address_format"] == "E164"
    assert "application/pdf" in by_id["whatsapp"]["allowed_mime_types"]
    assert by_id["email"]["credential_parameter_list"] == ["SMTP:username;password"]
    filtered = await http.get("/messaging/sender_id_types?capabilities=EMAIL", headers=bearer)
    assert [t["id"] for t in filtered.json()] == ["email"]  # exact match on the string
    email = await http.get("/messaging/sender_id_types/email?name=x", headers=bearer)
    assert email.json()["address_format"] == "EMAIL"
    bad = await http.get("/messaging/sender_id_types?version_number=x", headers=bearer)
    assert "version_number" in assert_error(bad, 400, "400")

    # customers cannot write reference data
    put = {"name": "Mine", "applicable_countries": ["US"]}
    forbidden = await http.put("/messaging/admin/sender_id_classes/mine", json=put, headers=bearer)
    assert_error(forbidden, 403, "403")


async def test_admin_manages_classes_and_types(
    http: httpx.AsyncClient, admin: dict[str, str], bearer: dict[str, str]
) -> None:
    class_id = f"test-{uuid.uuid4().hex[:8]}"
    body = {
        "name": "Test alerts",
        "designation": "alerts",
        "applicable_countries": ["jp,kr"],
        "country_peak_throughput": 3,
        "country_peak_total_throughput": 9,
        "country_daily_throughput": 1000,
        "delivery_window": json.dumps({"DEFAULT": {"OTH": ["08:00-20:00"]}}),
    }
    response = await http.put(
        f"/messaging/admin/sender_id_classes/{class_id}", json=body, headers=admin
    )
    assert response.status_code == 200, response.text
    created = (await http.get(f"/messaging/sender_id_classes/{class_id}", headers=bearer)).json()
    assert created["applicable_countries"] == ["JP", "KR"]
    assert created["version_number"] == 1
    stale = await http.put(
        f"/messaging/admin/sender_id_classes/{class_id}",
        json={**body, "version_number": 7},
        headers=admin,
    )
    assert_error(stale, 409, "1001")
    again = await http.put(
        f"/messaging/admin/sender_id_classes/{class_id}",
        json={**body, "country_peak_throughput": 4, "version_number": 1},
        headers=admin,
    )
    assert again.status_code == 200, again.text
    updated = (await http.get(f"/messaging/sender_id_classes/{class_id}", headers=bearer)).json()
    assert updated["country_peak_throughput"] == 4 and updated["version_number"] == 2
    bad_window = await http.put(
        f"/messaging/admin/sender_id_classes/{class_id}",
        json={**body, "delivery_window": '{"DEFAULT": {"XYZ": ["8-20"]}}'},
        headers=admin,
    )
    assert "delivery_window" in assert_error(bad_window, 400, "400")

    type_id = f"test-{uuid.uuid4().hex[:8]}"
    type_body = {
        "name": "Push",
        "capabilities": "PSH",
        "address_format": "ANY",
        "credential_parameter_list": ["APN:key_id,team_id", "GCM:server_key"],
        "blocked_mime_types": "application/x-sh",
    }
    put = await http.put(
        f"/messaging/admin/sender_id_types/{type_id}", json=type_body, headers=admin
    )
    assert put.status_code == 200, put.text
    pushed = (await http.get(f"/messaging/sender_id_types/{type_id}", headers=bearer)).json()
    assert pushed["credential_parameter_list"] == ["APN:key_id;team_id", "GCM:server_key"]
    bad_type = await http.put(
        f"/messaging/admin/sender_id_types/{type_id}",
        json={**type_body, "address_format": "SMOKE", "allowed_mime_types": "not a mime"},
        headers=admin,
    )
    description = assert_error(bad_type, 400, "400")
    assert "address_format" in description and "allowed_mime_types" in description
    assert_error(
        await http.put(
            f"/messaging/admin/sender_id_types/{type_id}", json=type_body, headers=bearer
        ),
        403,
        "403",
    )


async def test_seeding_is_idempotent_per_version(app: Application) -> None:
    assert await app.messaging.reference.seed() is False  # applied at start-up already


# -- sender IDs -------------------------------------------------------------------------------


async def test_create_get_update_delete_sender(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    address = us_number()
    credentials = json.dumps([{"provider": "SMPP", "system_id": "acme", "password": "s3cret"}])
    sender_id = await create_sender(
        http,
        bearer,
        address=address.replace("+1", "+1 "),
        name="Support line",
        credentials=credentials,
        message_templates=["tpl_1,tpl_2"],
        two_way_required="yes",
        dr_required="YES",
        consent_managed_by="SCG",
        capabilities=["SMS"],
        check_white_list=True,
    )
    sender = await get_sender(http, bearer, sender_id)
    assert sender["state"] == "ACTIVE"  # sandbox provisioning
    assert sender["ownership"] == "PRIVATE" and sender["parent_id"] == ""
    assert sender["address"] == address and sender["country"] == "US"
    assert sender["message_templates"] == ["tpl_1", "tpl_2"]
    assert sender["capabilities"] == ["SMS"] and sender["check_white_list"] is True
    assert sender["two_way_required"] == "YES" and sender["keep_sender_address"] == "NO"
    assert "s3cret" not in json.dumps(sender)
    assert json.loads(sender["credentials"]) == [
        {"provider": "SMPP", "system_id": "****", "password": "****"}
    ]
    assert sender["version_number"] == 2  # created, then provisioned

    # a GET → POST round trip (operator fields unchanged, masked credentials) is accepted
    echo = {k: v for k, v in sender.items() if k not in ("id", "application_id", "billing")}
    echo = {k: v for k, v in echo.items() if not k.endswith("_date")}
    response = await http.post(f"/messaging/sender_ids/{sender_id}", json=echo, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": sender_id}
    assert (await get_sender(http, bearer, sender_id))["credentials"] == sender["credentials"]

    response = await http.post(
        f"/messaging/sender_ids/{sender_id}",
        json={"name": "Renamed", "version_number": 3},
        headers=bearer,
    )
    assert response.status_code == 200, response.text
    renamed = await get_sender(http, bearer, sender_id)
    assert renamed["name"] == "Renamed" and renamed["version_number"] == 4
    stale = await http.post(
        f"/messaging/sender_ids/{sender_id}",
        json={"name": "X", "version_number": 3},
        headers=bearer,
    )
    assert_error(stale, 409, "1001")
    stale_header = await http.post(
        f"/messaging/sender_ids/{sender_id}",
        json={"name": "X"},
        headers={**bearer, "If-Match": '"1"'},
    )
    assert_error(stale_header, 409, "1001")
    fixed = await http.post(
        f"/messaging/sender_ids/{sender_id}", json={"address": us_number()}, headers=bearer
    )
    assert "address" in assert_error(fixed, 400, "400")

    listed = await http.get("/messaging/sender_ids?ownership=PRIVATE", headers=bearer)
    assert [s["id"] for s in listed.json()] == [sender_id]
    assert [
        s["id"]
        for s in (
            await http.get(
                "/messaging/sender_ids?state=ATIVE&capabilities=SMS&check_white_list=true",
                headers=bearer,
            )
        ).json()
    ] == [sender_id]
    bad = await http.get("/messaging/sender_ids?check_white_list=maybe", headers=bearer)
    assert "check_white_list" in assert_error(bad, 400, "400")

    deleted = await http.delete(f"/messaging/sender_ids/{sender_id}", headers=bearer)
    assert deleted.status_code == 200, deleted.text
    assert_error(await http.get(f"/messaging/sender_ids/{sender_id}", headers=bearer), 404, "404")
    assert_error(
        await http.delete(f"/messaging/sender_ids/{sender_id}", headers=bearer), 404, "404"
    )


@pytest.mark.parametrize(
    ("type_id", "class_id", "address", "ok"),
    [
        ("sms-long-code", "notifications-na", "+1415", False),
        ("sms-short-code", "alerts-na", "12ab5", False),
        ("sms-short-code", "alerts-na", "SHORT", False),
        ("sms-alphanumeric", "alerts-eu", "TWELVECHARS1", False),
        ("sms-alphanumeric", "alerts-eu", "123456", False),
        ("email", "notifications-other", "not-an-email", False),
        ("whatsapp", "alerts-na", "+1 415 abc", False),
        ("sms-alphanumeric", "alerts-eu", "ACME Bank", True),
        ("email", "notifications-other", "Alerts@Example.com", True),
        ("whatsapp", "alerts-other", "+61 412 345 678", True),
    ],
)
async def test_address_is_validated_against_the_type(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    type_id: str,
    class_id: str,
    address: str,
    ok: bool,
) -> None:
    body = {"type_id": type_id, "class_id": class_id, "address": address}
    response = await http.post("/messaging/sender_ids", json=body, headers=bearer)
    if ok:
        assert response.status_code == 200, response.text
        sender = await get_sender(http, bearer, response.json()["id"])
        if type_id == "email":
            assert sender["address"] == "alerts@example.com"
        if type_id == "whatsapp":
            assert sender["address"] == "+61412345678" and sender["country"] == "AU"
    else:
        assert "address" in assert_error(response, 400, "400")


async def test_other_country_rule_and_reference_checks(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    spain = {"type_id": "sms-long-code", "address": "+34600" + str(random.randint(100000, 999999))}
    refused = await http.post(
        "/messaging/sender_ids", json={**spain, "class_id": "alerts-other"}, headers=bearer
    )
    assert "class_id" in assert_error(refused, 400, "400")  # ES has its own classes
    await create_sender(http, bearer, **spain, class_id="alerts-eu")
    wrong = await http.post(
        "/messaging/sender_ids",
        json={"type_id": "sms-long-code", "class_id": "alerts-eu", "address": us_number()},
        headers=bearer,
    )
    assert "class_id" in assert_error(wrong, 400, "400")
    unknown = await http.post(
        "/messaging/sender_ids",
        json={"type_id": "pigeon", "class_id": "alerts-eu", "address": "x"},
        headers=bearer,
    )
    assert "type_id" in assert_error(unknown, 400, "400")
    missing = await http.post("/messaging/sender_ids", json={"name": "x"}, headers=bearer)
    description = assert_error(missing, 400, "400")
    assert "type_id" in description and "address" in description
    caps = await http.post(
        "/messaging/sender_ids",
        json={
            "type_id": "sms-alphanumeric",
            "class_id": "alerts-eu",
            "address": "ACME",
            "capabilities": ["MMS"],
        },
        headers=bearer,
    )
    assert "capabilities" in assert_error(caps, 400, "400")
    creds = await http.post(
        "/messaging/sender_ids",
        json={
            "type_id": "email",
            "class_id": "alerts-other",
            "address": "a@example.com",
            "credentials": '[{"username": "u"}]',
        },
        headers=bearer,
    )
    assert "password" in assert_error(creds, 400, "400")
    too_long = await http.post(
        "/messaging/sender_ids",
        json={
            "type_id": "sms-long-code",
            "class_id": "notifications-na",
            "address": us_number(),
            "name": "n" * 300,
        },
        headers=bearer,
    )
    assert "name" in assert_error(too_long, 400, "1023")


@pytest.mark.parametrize(
    ("field", "value"),
    [("ownership", "SHARED"), ("country", "US"), ("operators", ["ATT"]), ("state", "ACTIVE")],
)
async def test_customers_cannot_set_operator_fields(
    http: httpx.AsyncClient, bearer: dict[str, str], field: str, value: Any
) -> None:
    body = {
        "type_id": "sms-long-code",
        "class_id": "notifications-na",
        "address": us_number(),
        field: value,
    }
    response = await http.post("/messaging/sender_ids", json=body, headers=bearer)
    assert field in assert_error(response, 403, "403")
    sender_id = await create_sender(http, bearer)
    changed = {"ownership": "PURCHASED", "country": "CA", "operators": ["X"], "state": "BROKEN"}
    update = await http.post(
        f"/messaging/sender_ids/{sender_id}", json={field: changed[field]}, headers=bearer
    )
    assert field in assert_error(update, 403, "403")


async def test_unique_address_per_org(
    http: httpx.AsyncClient, bearer: dict[str, str], other: dict[str, str]
) -> None:
    address = us_number()
    await create_sender(http, bearer, address=address)
    again = await http.post(
        "/messaging/sender_ids",
        json={"type_id": "sms-long-code", "class_id": "notifications-na", "address": address},
        headers=bearer,
    )
    assert_error(again, 409, "1011")
    await create_sender(http, other, address=address)  # another org's own sender


async def test_cross_org_isolation(
    http: httpx.AsyncClient, bearer: dict[str, str], other: dict[str, str]
) -> None:
    sender_id = await create_sender(http, bearer)
    path = f"/messaging/sender_ids/{sender_id}"
    assert_error(await http.get(path, headers=other), 404, "404")
    assert_error(await http.post(path, json={"name": "x"}, headers=other), 404, "404")
    assert_error(await http.delete(path, headers=other), 404, "404")
    listed = (await http.get("/messaging/sender_ids?ownership=PRIVATE", headers=other)).json()
    assert listed == []
    assert (await get_sender(http, bearer, sender_id))["name"] == ""


async def test_shared_sender_copy(
    http: httpx.AsyncClient, bearer: dict[str, str], admin: dict[str, str]
) -> None:
    shared = (await http.get("/messaging/sender_ids?ownership=SHARED", headers=bearer)).json()
    assert "sid_shared_us_alerts" in {s["id"] for s in shared}
    original = await get_sender(http, bearer, "sid_shared_us_alerts")
    assert original["address"] == "22395" and original["operators"] == ["ATT", "TMOBILE", "VERIZON"]
    created = await http.post(
        "/messaging/sender_ids",
        json={
            "parent_id": "sid_shared_us_alerts",
            "name": "our alerts",
            "type_id": "sms-short-code",
        },
        headers=bearer,
    )
    assert created.status_code == 200, created.text
    copy_id = created.json()["id"]
    copy = await get_sender(http, bearer, copy_id)
    assert copy["ownership"] == "PRIVATE" and copy["parent_id"] == "sid_shared_us_alerts"
    assert copy["address"] == "22395" and copy["state"] == "ACTIVE" and copy["name"] == "our alerts"
    twice = await http.post(
        "/messaging/sender_ids", json={"parent_id": "sid_shared_us_alerts"}, headers=bearer
    )
    assert_error(twice, 409, "1011")
    other_address = await http.post(
        "/messaging/sender_ids",
        json={"parent_id": "sid_shared_us_alerts", "address": "99999"},
        headers=bearer,
    )
    assert "address" in assert_error(other_address, 400, "400")
    # the operator's sender itself is not the customer's to change
    edit = await http.post(
        "/messaging/sender_ids/sid_shared_us_alerts", json={"name": "mine"}, headers=bearer
    )
    assert_error(edit, 403, "403")
    assert_error(
        await http.delete("/messaging/sender_ids/sid_shared_us_alerts", headers=bearer), 403, "403"
    )
    # a PREPROVISIONED sender is bought, not copied
    pre = await system_sender(http, admin)
    refused = await http.post("/messaging/sender_ids", json={"parent_id": pre}, headers=bearer)
    assert "purchase" in assert_error(refused, 400, "400")
    unknown = await http.post(
        "/messaging/sender_ids", json={"parent_id": "sid_nope"}, headers=bearer
    )
    assert_error(unknown, 404, "404")


async def test_purchase_flow(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    other: dict[str, str],
    admin: dict[str, str],
) -> None:
    original_id = await system_sender(http, admin)
    original = await get_sender(http, bearer, original_id)
    assert original["ownership"] == "PREPROVISIONED" and original["state"] == "ACTIVE"
    listed = await http.get("/messaging/sender_ids?ownership=PREPROVISIONED", headers=bearer)
    assert original_id in {s["id"] for s in listed.json()}

    bought = await http.post(
        "/messaging/sender_ids/purchase", json={"parent_id": original_id}, headers=bearer
    )
    assert bought.status_code == 200, bought.text
    copy_id = bought.json()["id"]
    copy = await get_sender(http, bearer, copy_id)
    assert copy["ownership"] == "PRIVATE" and copy["parent_id"] == original_id
    assert copy["address"] == original["address"] and copy["state"] == "ACTIVE"
    assert copy["operators"] == ["ATT", "VERIZON"]
    # the original is PURCHASED: hidden from the catalog, not for sale again
    assert_error(await http.get(f"/messaging/sender_ids/{original_id}", headers=other), 404, "404")
    again = await http.post(
        "/messaging/sender_ids/purchase", json={"parent_id": original_id}, headers=other
    )
    assert_error(again, 409, "1011")
    # deleting the copy returns the original to PREPROVISIONED
    deleted = await http.delete(f"/messaging/sender_ids/{copy_id}", headers=bearer)
    assert deleted.status_code == 200, deleted.text
    back = await get_sender(http, other, original_id)
    assert back["ownership"] == "PREPROVISIONED"
    form = await http.post(
        "/messaging/sender_ids/purchase",
        content=f"parent_id={original_id}",
        headers={**other, "content-type": FORM},
    )
    assert form.status_code == 200, form.text

    shared = await http.post(
        "/messaging/sender_ids/purchase",
        json={"parent_id": "sid_shared_us_alerts"},
        headers=bearer,
    )
    assert "parent_id" in assert_error(shared, 400, "400")
    unknown = await http.post(
        "/messaging/sender_ids/purchase", json={"parent_id": "sid_nope"}, headers=bearer
    )
    assert_error(unknown, 404, "404")
    empty = await http.post("/messaging/sender_ids/purchase", json={}, headers=bearer)
    assert "parent_id" in assert_error(empty, 400, "400")


async def test_admin_only_operations(
    http: httpx.AsyncClient, bearer: dict[str, str], admin: dict[str, str]
) -> None:
    sender_id = await create_sender(http, bearer)
    provision = await http.post(
        f"/messaging/admin/sender_ids/{sender_id}/provision", json={}, headers=bearer
    )
    assert_error(provision, 403, "403")
    create = await http.post(
        "/messaging/admin/sender_ids",
        json={"ownership": "SHARED", "type_id": "sms-short-code", "class_id": "alerts-na"},
        headers=bearer,
    )
    assert_error(create, 403, "403")
    private = await http.post(
        "/messaging/admin/sender_ids",
        json={
            "ownership": "PRIVATE",
            "type_id": "sms-short-code",
            "class_id": "alerts-na",
            "address": short_code(),
        },
        headers=admin,
    )
    assert "ownership" in assert_error(private, 400, "400")
    # the operator provisions a customer's sender: state, country, operators, billing
    response = await http.post(
        f"/messaging/admin/sender_ids/{sender_id}/provision",
        json={"state": "INACTIVE", "operators": ["ATT", "TMOBILE"], "billing": "plan-a"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    sender = await get_sender(http, bearer, sender_id)
    assert sender["state"] == "INACTIVE" and sender["operators"] == ["ATT", "TMOBILE"]
    assert sender["billing"] == "plan-a"
    bad = await http.post(
        f"/messaging/admin/sender_ids/{sender_id}/provision", json={"state": "ON"}, headers=admin
    )
    assert "state" in assert_error(bad, 400, "400")
    assert_error(
        await http.post("/messaging/admin/sender_ids/sid_nope/provision", json={}, headers=admin),
        404,
        "404",
    )


async def test_pending_until_provisioned_and_resolve_sendable(
    app: Application,
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    admin: dict[str, str],
    org: str,
) -> None:
    """Without sandbox provisioning a sender waits PENDING_IMPLEMENTATION for the operator."""
    strict = SenderService(app.db, app.events, app.clock, auto_provision=False)
    sender_id = await strict.create(
        org,
        "test-app",
        {"type_id": "sms-long-code", "class_id": "notifications-na", "address": us_number()},
    )
    sender = await get_sender(http, bearer, sender_id)
    assert sender["state"] == "PENDING_IMPLEMENTATION" and sender["version_number"] == 1
    assert await strict.resolve_sendable(org, sender_id) == []
    response = await http.post(
        f"/messaging/admin/sender_ids/{sender_id}/provision", json={}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert (await get_sender(http, bearer, sender_id))["state"] == "ACTIVE"
    for ref in (sender_id, f"sender_id:{sender_id}", f"sender_id-{sender_id}"):
        [resolved] = await strict.resolve_sendable(org, ref)
        assert resolved.id == sender_id and resolved.priority == "normal"
    [shared] = await strict.resolve_sendable(org, "sid_shared_us_alerts")
    assert shared.address == "22395"
    with pytest.raises(NotFound):
        await strict.resolve_sendable(org, "sid_nope")
    with pytest.raises(NotFound):
        await strict.resolve_sendable("another-org", sender_id)


async def test_changes_are_events(
    app: Application, http: httpx.AsyncClient, bearer: dict[str, str], org: str
) -> None:
    secret = json.dumps([{"provider": "SMPP", "password": "hunter2"}])
    sender_id = await create_sender(http, bearer, credentials=secret)
    await http.post(f"/messaging/sender_ids/{sender_id}", json={"name": "n"}, headers=bearer)
    await http.delete(f"/messaging/sender_ids/{sender_id}", headers=bearer)
    table = table_of(EventRecord)
    query = select(table.c.type, table.c.payload).where(
        table.c.org_id == org, table.c.resource_id == sender_id
    )
    async with app.db.read() as session:
        rows = list((await session.execute(query.order_by(table.c.seq))).all())
    assert [r.type for r in rows] == [
        "sender_id.created",
        "sender_id.provisioned",
        "sender_id.updated",
        "sender_id.deleted",
    ]
    assert rows[0].payload["state"] == "PENDING_IMPLEMENTATION"
    assert rows[1].payload["state"] == "ACTIVE"
    assert "hunter2" not in json.dumps([r.payload for r in rows])
