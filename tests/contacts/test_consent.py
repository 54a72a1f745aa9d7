"""Consent: address statuses, their history, the blacklist removal and the "may we send?" rule.

REST through the real Envoy edge (family B, and family A for the blacklist), gRPC where the
native surface matters, and the domain calls messaging will make (record_keyword, may_send).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import select
from switchboard.contacts.v1 import consent_pb2, contacts_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from switchboard.server.app.server import Application
from switchboard.server.contacts.consent import (
    ConsentDecision,
    ConsentRequirement,
    ConsentService,
    decide,
)
from switchboard.server.contacts.models import ConsentStatus
from switchboard.server.core.auth import Role
from switchboard.server.core.db import table_of
from switchboard.server.core.models import EventRecord
from switchboard.server.core.version import server_version
from tests.support.auth import Metadata, TokenFactory
from tests.support.clock import TEST_CLOCK
from tests.support.errors import error_details

pytestmark = pytest.mark.envoy

STATUSES = "/consent/contact_address_statuses"
HISTORY = "/consent/contact_address_history"
STATUS_KEYS = {
    "id",
    "address_type",
    "address",
    "sender_id",
    "consent_status",
    "application_id",
    "created_date",
    "last_updated_date",
    "version_number",
}
HISTORY_KEYS = {
    "id",
    "msisdn",
    "address_type",
    "sender_id",
    "source",
    "status",
    "timestamp",
    "message",
    "keyword",
    "address_status_id",
    "application_id",
    "created_date",
    "last_updated_date",
    "version_number",
}


def bare(response: httpx.Response) -> list[dict[str, Any]]:
    """A family B list body: a bare JSON array."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list), body
    return body


def error(response: httpx.Response, status: int, code: str) -> str:
    """A family B error: exactly {error_code, error_description}; returns the description."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "error_description"}, body
    assert body["error_code"] == code, body
    description: str = body["error_description"]
    return description


async def create(http: httpx.AsyncClient, bearer: dict[str, str], **body: Any) -> str:
    payload = {"address_type": "MDN", "address": "+34600111222", "consent_status": "OPTIN"}
    response = await http.post(STATUSES, json={**payload, **body}, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    status_id: str = response.json()["id"]
    return status_id


async def get(http: httpx.AsyncClient, bearer: dict[str, str], status_id: str) -> dict[str, Any]:
    response = await http.get(f"{STATUSES}/{status_id}", headers=bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def consent(app: Application) -> ConsentService:
    return app.contacts.consent


# ---- the rule -------------------------------------------------------------------------------

B, W, IN, OUT, N = "BLACKLIST", "WHITELIST", "OPTIN", "OPTOUT", "NONE"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("sender", "everyone", "opt_in", "opt_out", "none"),
    [
        # (status towards the sender, towards all senders) → allowed under OPT_IN, OPT_OUT, NONE
        (None, None, False, True, True),
        (N, N, False, True, True),
        (IN, None, True, True, True),
        (None, IN, True, True, True),
        (OUT, None, False, False, True),
        (None, OUT, False, False, True),
        (IN, OUT, True, True, True),  # the sender-specific status wins over all senders'
        (OUT, IN, False, False, True),
        (N, OUT, False, False, True),  # ...unless it is NONE
        (B, None, False, False, False),
        (None, B, False, False, False),
        (W, B, False, False, False),  # BLACKLIST anywhere refuses
        (B, W, False, False, False),
        (W, None, True, True, True),
        (OUT, W, True, True, True),  # WHITELIST anywhere allows
    ],
)
def test_decide(
    sender: str | None, everyone: str | None, opt_in: bool, opt_out: bool, none: bool
) -> None:
    outcomes = [
        decide(sender, everyone, requirement).allowed
        for requirement in (
            ConsentRequirement.OPT_IN,
            ConsentRequirement.OPT_OUT,
            ConsentRequirement.NONE,
        )
    ]
    assert outcomes == [opt_in, opt_out, none]


@pytest.mark.unit
def test_decision_names_the_deciding_status() -> None:
    decision = decide(OUT, B, ConsentRequirement.OPT_OUT)
    assert decision == ConsentDecision(False, ConsentStatus.BLACKLIST, decision.reason)
    assert "all sender ids" in decision.reason
    assert decide(None, None, ConsentRequirement.OPT_IN).status == ConsentStatus.NONE


# ---- REST: CRUD -----------------------------------------------------------------------------


async def test_create_get_list_update_delete(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application
) -> None:
    status_id = await create(
        http, bearer, address="+34 600 111 222", sender_id="brand", consent_status="optin"
    )
    assert status_id.startswith("cas_")
    status = await get(http, bearer, status_id)
    assert set(status) == STATUS_KEYS
    assert status["address"] == "+34600111222"  # E.164
    assert status["consent_status"] == "OPTIN"
    assert status["sender_id"] == "brand"
    assert status["application_id"] == "test-app"
    assert status["version_number"] == 1
    assert status["created_date"].endswith("Z")
    assert status["created_date"] == status["last_updated_date"]

    listed = bare(await http.get(STATUSES, headers=bearer))
    assert listed == [status]

    response = await http.post(
        f"{STATUSES}/{status_id}", json={"consent_status": "OPTOUT"}, headers=bearer
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"id": status_id}
    updated = await get(http, bearer, status_id)
    assert updated["consent_status"] == "OPTOUT"
    assert updated["version_number"] == 2
    assert updated["last_updated_date"] > updated["created_date"]

    response = await http.delete(f"{STATUSES}/{status_id}", headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json() == {}
    error(await http.get(f"{STATUSES}/{status_id}", headers=bearer), 404, "404")
    assert bare(await http.get(STATUSES, headers=bearer)) == []

    history = bare(await http.get(HISTORY, headers=bearer))  # kept after the delete
    assert [(h["source"], h["status"]) for h in history] == [
        ("COMPANY", "OPTIN"),
        ("COMPANY", "OPTOUT"),
        ("COMPANY", "NONE"),
    ]
    assert all(set(h) == HISTORY_KEYS for h in history)
    assert {h["address_status_id"] for h in history} == {status_id}
    assert {h["msisdn"] for h in history} == {"+34600111222"}
    assert history[0]["application_id"] == "test-app"

    async with app.db.read() as session:
        columns = table_of(EventRecord).c
        query = select(EventRecord).where(columns.resource_id == status_id).order_by(columns.seq)
        events = list((await session.execute(query)).scalars())
    assert [e.type for e in events] == [
        "contact_address_status.created",
        "contact_address_status.updated",
        "contact_address_status.deleted",
    ]
    assert events[0].payload == status
    assert events[1].payload == updated


async def test_email_and_other_types_normalise(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    email = await create(http, bearer, address_type="email", address=" Ana@Example.COM ")
    assert (await get(http, bearer, email))["address"] == "ana@example.com"
    assert (await get(http, bearer, email))["address_type"] == "EMAIL"
    push = await create(http, bearer, address_type="PUSH", address="Dev-Token-1")
    assert (await get(http, bearer, push))["address"] == "Dev-Token-1"


async def test_filters_and_paging(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    first = await create(http, bearer, consent_status="OPTOUT")
    second = await create(http, bearer, sender_id="s2")
    third = await create(http, bearer, address_type="EMAIL", address="a@b.co")
    # The day the server dated them (the three may straddle a midnight, so expect by that).
    days = {i: (await get(http, bearer, i))["created_date"][:10] for i in (first, second, third)}
    by = {
        "consent_status": "OPTOUT",
        "sender_id": "s2",
        "address_type": "EMAIL",
        "address": "+34600111222",
        "id": second,
        "created_date": days[first],
    }
    expected = {
        "consent_status": [first],
        "sender_id": [second],
        "address_type": [third],
        "address": [first, second],
        "id": [second],
        "created_date": [i for i in (first, second, third) if days[i] == days[first]],
    }
    for name, value in by.items():
        found = bare(await http.get(STATUSES, params={name: value}, headers=bearer))
        assert [s["id"] for s in found] == expected[name], name
    page = bare(await http.get(STATUSES, params={"limit": 1, "offset": 1}, headers=bearer))
    assert [s["id"] for s in page] == [second]
    response = await http.get(STATUSES, params={"limit": 2}, headers=bearer)
    assert [s["id"] for s in bare(response)] == [first, second]
    token = response.headers["x-next-page-token"]
    response = await http.get(STATUSES, params={"page_token": token}, headers=bearer)
    assert [s["id"] for s in bare(response)] == [third]
    error(await http.get(STATUSES, params={"limit": 5000}, headers=bearer), 400, "400")
    error(await http.get(STATUSES, params={"created_date": "soon"}, headers=bearer), 400, "400")


async def test_item_get_accepts_and_ignores_filters(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    status_id = await create(http, bearer)
    response = await http.get(
        f"{STATUSES}/{status_id}", params={"consent_status": "OPTOUT"}, headers=bearer
    )
    assert response.status_code == 200 and response.json()["id"] == status_id


async def test_duplicate_key_is_409_1011(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    first = await create(http, bearer, sender_id="brand")
    response = await http.post(
        STATUSES,
        json={
            "address_type": "MDN",
            "address": "0034600111222",
            "sender_id": "brand",
            "consent_status": "OPTOUT",
        },
        headers=bearer,
    )
    assert "already exists" in error(response, 409, "1011")
    # Other sender ids, and all senders, are other keys.
    await create(http, bearer, sender_id="other")
    await create(http, bearer)
    assert len(bare(await http.get(STATUSES, headers=bearer))) == 3
    assert (await get(http, bearer, first))["consent_status"] == "OPTIN"


async def test_concurrent_duplicates_create_one(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    body = {"address_type": "MDN", "address": "+34600999888", "consent_status": "OPTIN"}
    responses = await asyncio.gather(
        *(http.post(STATUSES, json=body, headers=bearer) for _ in range(8))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 7, [r.text for r in responses]
    assert len(bare(await http.get(STATUSES, headers=bearer))) == 1


async def test_stale_version_is_409_1001(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    status_id = await create(http, bearer)
    url = f"{STATUSES}/{status_id}"
    response = await http.post(
        url, json={"consent_status": "OPTOUT", "version_number": 3}, headers=bearer
    )
    assert "version 1" in error(response, 409, "1001")
    response = await http.post(
        url, json={"consent_status": "OPTOUT"}, headers={**bearer, "If-Match": '"7"'}
    )
    error(response, 409, "1001")
    response = await http.post(
        url,
        json={"consent_status": "OPTOUT", "version_number": 1},
        headers={**bearer, "If-Match": "1"},
    )
    assert response.status_code == 200, response.text
    error(await http.delete(url, headers={**bearer, "If-Match": "1"}), 409, "1001")
    assert (await get(http, bearer, status_id))["consent_status"] == "OPTOUT"
    response = await http.delete(url, headers={**bearer, "If-Match": 'W/"2"'})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"address": "+34" + "6" * 330}, 400, "1023", "address"),
        ({"sender_id": "s" * 65}, 400, "1023", "sender_id"),
        ({"address": "12345"}, 400, "400", "address"),
        ({"address": ""}, 400, "400", "address"),
        ({"address_type": "EMAIL", "address": "not-an-email"}, 400, "400", "address"),
        ({"address_type": "FAX"}, 400, "400", "address_type"),
        ({"consent_status": "MAYBE"}, 400, "400", "consent_status"),
        ({"consent_status": None}, 400, "400", "consent_status"),
        ({"colour": "red"}, 400, "400", "colour"),
    ],
)
async def test_invalid_bodies(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    payload = {"address_type": "MDN", "address": "+34600111222", "consent_status": "OPTIN"}
    payload.update(body)
    payload = {k: v for k, v in payload.items() if v is not None}
    response = await http.post(STATUSES, json=payload, headers=bearer)
    assert field in error(response, status, code)


async def test_update_cannot_move_the_record(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    status_id = await create(http, bearer, sender_id="brand")
    url = f"{STATUSES}/{status_id}"
    same = {"address_type": "MDN", "address": "0034 600 111 222", "sender_id": "brand"}
    response = await http.post(url, json={**same, "consent_status": "OPTOUT"}, headers=bearer)
    assert response.status_code == 200, response.text
    for change in ({"address": "+34600111333"}, {"sender_id": "x"}, {"address_type": "EMAIL"}):
        response = await http.post(url, json={**change, "consent_status": "NONE"}, headers=bearer)
        assert next(iter(change)) in error(response, 400, "400")
    assert (await get(http, bearer, status_id))["consent_status"] == "OPTOUT"


async def test_form_encoded_update(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    status_id = await create(http, bearer)
    response = await http.post(
        f"{STATUSES}/{status_id}",
        content="consent_status=WHITELIST&version_number=1",
        headers={**bearer, "content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert (await get(http, bearer, status_id))["consent_status"] == "WHITELIST"


async def test_missing_auth_is_401(http: httpx.AsyncClient) -> None:
    error(await http.get(STATUSES), 401, "401")
    error(await http.get(HISTORY), 401, "401")
    error(await http.post(STATUSES, json={}), 401, "401")


async def test_other_orgs_see_nothing(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    status_id = await create(http, bearer)
    other = {"Authorization": f"Bearer {make_token('org-other-' + status_id[-8:])}"}
    url = f"{STATUSES}/{status_id}"
    error(await http.get(url, headers=other), 404, "404")
    error(await http.post(url, json={"consent_status": "NONE"}, headers=other), 404, "404")
    error(await http.delete(url, headers=other), 404, "404")
    assert bare(await http.get(STATUSES, headers=other)) == []
    assert bare(await http.get(HISTORY, headers=other)) == []
    # The same key is free in another org.
    await create(http, other)
    assert (await get(http, bearer, status_id))["version_number"] == 1


# ---- keywords, stickiness, history ------------------------------------------------------------


async def test_opt_out_keyword_refuses_that_sender(app: Application, org: str) -> None:
    service = consent(app)
    address = "+34600123123"
    allowed = await service.may_send(org, "brand", "MDN", address, "OPT_OUT")
    assert allowed.allowed and allowed.status == ConsentStatus.NONE
    assert not (await service.may_send(org, "brand", "MDN", address, "OPT_IN")).allowed

    snapshot = await service.record_keyword(
        org_id=org,
        address_type="MDN",
        address="0034 600 123 123",
        sender_id="brand",
        keyword="STOP",
        new_status=ConsentStatus.OPTOUT,
        message="stop please",
        received_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert snapshot is not None and snapshot["consent_status"] == "OPTOUT"
    refused = await service.may_send(org, "brand", "MDN", address, ConsentRequirement.OPT_OUT)
    assert refused == ConsentDecision(False, ConsentStatus.OPTOUT, refused.reason)
    assert not (await service.may_send(org, "brand", "MDN", address, "OPT_IN")).allowed
    assert (await service.may_send(org, "brand", "MDN", address, "NONE")).allowed
    # Another sender of the org is unaffected; so is the same address in another org.
    assert (await service.may_send(org, "other", "MDN", address, "OPT_OUT")).allowed
    assert (await service.may_send(org + "x", "brand", "MDN", address, "OPT_OUT")).allowed

    history, _ = await service.list_history(org, {}, limit=0, offset=0, page_token="")
    [record] = history
    assert (record["source"], record["status"], record["keyword"]) == ("MESSAGE", "OPTOUT", "STOP")
    assert record["message"] == "stop please"
    assert record["timestamp"] == "2030-01-02T03:04:05Z"
    assert record["address_status_id"] == snapshot["id"]

    await service.record_keyword(
        org_id=org,
        address_type="MDN",
        address=address,
        sender_id="brand",
        keyword="START",
        new_status="OPTIN",
    )
    assert (await service.may_send(org, "brand", "MDN", address, "OPT_IN")).allowed


async def test_blacklist_is_sticky_against_keywords(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, org: str
) -> None:
    service = consent(app)
    status_id = await create(http, bearer, consent_status="BLACKLIST", sender_id="brand")
    for keyword, status in (("START", "OPTIN"), ("STOP", "OPTOUT"), ("HELP", None)):
        after = await service.record_keyword(
            org_id=org,
            address_type="MDN",
            address="+34600111222",
            sender_id="brand",
            keyword=keyword,
            new_status=status,
            message=keyword.lower(),
        )
        assert after is not None and after["consent_status"] == "BLACKLIST"
        assert after["version_number"] == 1
    decision = await service.may_send(org, "brand", "MDN", "+34600111222", "NONE")
    assert decision.status == ConsentStatus.BLACKLIST and not decision.allowed

    # Only the explicit change lifts it.
    response = await http.post(
        f"{STATUSES}/{status_id}", json={"consent_status": "NONE"}, headers=bearer
    )
    assert response.status_code == 200, response.text
    after = await service.record_keyword(
        org_id=org,
        address_type="MDN",
        address="+34600111222",
        sender_id="brand",
        keyword="START",
        new_status="OPTIN",
    )
    assert after is not None and after["consent_status"] == "OPTIN"

    history = bare(await http.get(HISTORY, params={"address_status_id": status_id}, headers=bearer))
    assert [(h["source"], h["status"], h["keyword"]) for h in history] == [
        ("COMPANY", "BLACKLIST", ""),
        ("MESSAGE", "BLACKLIST", "START"),
        ("MESSAGE", "BLACKLIST", "STOP"),
        ("MESSAGE", "BLACKLIST", "HELP"),
        ("COMPANY", "NONE", ""),
        ("MESSAGE", "OPTIN", "START"),
    ]
    ids = [h["id"] for h in history]
    assert ids == sorted(ids)
    keywords = bare(
        await http.get(HISTORY, params={"source": "MESSAGE", "keyword": "STOP"}, headers=bearer)
    )
    assert [h["message"] for h in keywords] == ["stop"]


async def test_whitelist_is_sticky_and_allows(app: Application, org: str) -> None:
    service = consent(app)
    await service.record_keyword(
        org_id=org,
        address_type="EMAIL",
        address="x@y.io",
        sender_id="",
        keyword="STOP",
        new_status="OPTOUT",
    )
    [status], _ = await service.list_statuses(org, {}, limit=0, offset=0, page_token="")
    await service.update_status(org, "app", status["id"], {"consent_status": "WHITELIST"}, None)
    after = await service.record_keyword(
        org_id=org,
        address_type="EMAIL",
        address="X@Y.io",
        sender_id="",
        keyword="STOP",
        new_status="OPTOUT",
    )
    assert after is not None and after["consent_status"] == "WHITELIST"
    assert (await service.may_send(org, "any", "EMAIL", "x@y.io", "OPT_IN")).allowed
    with pytest.raises(ValueError, match="cannot blacklist"):
        await service.record_keyword(
            org_id=org,
            address_type="EMAIL",
            address="x@y.io",
            sender_id="",
            keyword="X",
            new_status="BLACKLIST",
        )


async def test_carrier_blacklist_and_batch_decisions(app: Application, org: str) -> None:
    service = consent(app)
    await service.record_keyword(
        org_id=org,
        address_type="MDN",
        address="+34600000001",
        sender_id="",
        keyword="START",
        new_status="OPTIN",
    )
    changed = await service.record_carrier_blacklist(
        org_id=org, address_type="MDN", addresses=["+34600000001", "+34600000002"]
    )
    assert changed == 2
    again = await service.record_carrier_blacklist(
        org_id=org, address_type="MDN", addresses=["+34600000002"]
    )
    assert again == 0
    decisions = await service.may_send_many(
        org, "brand", "MDN", ["+34600000001", "+34 600 000 002", "+34600000003", "junk"], "NONE"
    )
    assert {a: d.allowed for a, d in decisions.items()} == {
        "+34600000001": False,
        "+34 600 000 002": False,
        "+34600000003": True,
        "junk": True,
    }
    history, _ = await service.list_history(
        org, {"source": "CARRIER"}, limit=0, offset=0, page_token=""
    )
    assert [(h["msisdn"], h["status"]) for h in history] == [
        ("+34600000001", "BLACKLIST"),
        ("+34600000002", "BLACKLIST"),
        ("+34600000002", "BLACKLIST"),
    ]


async def test_keyword_without_action_is_only_history(app: Application, org: str) -> None:
    service = consent(app)
    result = await service.record_keyword(
        org_id=org,
        address_type="MDN",
        address="+34600000009",
        sender_id="s",
        keyword="HELP",
        new_status=None,
        message="help?",
    )
    assert result is None
    statuses, _ = await service.list_statuses(org, {}, limit=0, offset=0, page_token="")
    assert statuses == []
    [record], _ = await service.list_history(org, {}, limit=0, offset=0, page_token="")
    assert (record["status"], record["keyword"], record["address_status_id"]) == (
        "NONE",
        "HELP",
        "",
    )


async def test_many_changes_list_in_order(app: Application, org: str) -> None:
    service = consent(app)
    statuses = ["OPTIN", "OPTOUT"] * 15
    for status in statuses:
        await service.record_keyword(
            org_id=org,
            address_type="PUSH",
            address="device",
            sender_id="s",
            keyword=status,
            new_status=status,
        )
    history, token = await service.list_history(org, {}, limit=20, offset=0, page_token="")
    rest, end = await service.list_history(org, {}, limit=20, offset=0, page_token=token)
    assert end == ""
    assert [h["status"] for h in history + rest] == statuses
    [record], _ = await service.list_statuses(org, {}, limit=0, offset=0, page_token="")
    assert record["version_number"] == 30


# ---- family A: DELETE /v2/orgs/{org}/blacklist/{address} --------------------------------------


async def test_blacklist_removal(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, app: Application
) -> None:
    brand = await create(http, bearer, consent_status="BLACKLIST", sender_id="brand")
    everyone = await create(http, bearer, consent_status="BLACKLIST")
    opted_out = await create(http, bearer, consent_status="OPTOUT", sender_id="other")
    email = await create(
        http, bearer, address_type="EMAIL", address="a@b.io", consent_status="BLACKLIST"
    )

    response = await http.delete(f"/v2/orgs/{org}/blacklist/%2B34600111222", headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "commit": server_version(),
        "id": "+34600111222",
        "data": {"address": "+34600111222", "removedCount": 2},
    }
    for status_id, status in (
        (brand, "NONE"),
        (everyone, "NONE"),
        (opted_out, "OPTOUT"),
        (email, "BLACKLIST"),
    ):
        assert (await get(http, bearer, status_id))["consent_status"] == status
    assert (await consent(app).may_send(org, "brand", "MDN", "+34600111222", "OPT_OUT")).allowed
    history = bare(await http.get(HISTORY, params={"address_status_id": brand}, headers=bearer))
    assert [(h["source"], h["status"]) for h in history][-1] == ("COMPANY", "NONE")

    # Nothing left to remove: family A's 404.
    response = await http.delete(f"/v2/orgs/{org}/blacklist/+34600111222", headers=bearer)
    assert response.status_code == 404, response.text
    [problem] = response.json()["errors"]
    assert problem["httpStatusCode"] == 404 and problem["code"] == "404"

    # Emails match case-insensitively; phone numbers also without their +.
    response = await http.delete(f"/v2/orgs/{org}/blacklist/A@B.io", headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "a@b.io"
    await create(http, bearer, address="+34600111444", consent_status="BLACKLIST")
    response = await http.delete(f"/v2/orgs/{org}/blacklist/34600111444", headers=bearer)
    assert response.json()["data"] == {"address": "+34600111444", "removedCount": 1}


async def test_blacklist_removal_is_scoped_to_the_org(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    await create(http, bearer, consent_status="BLACKLIST")
    other_org = org + "-other"
    other = {"Authorization": f"Bearer {make_token(other_org)}"}
    # The path's org must be the token's...
    response = await http.delete(f"/v2/orgs/{org}/blacklist/%2B34600111222", headers=other)
    assert response.status_code == 403, response.text
    assert response.json()["errors"][0]["code"] == "403"
    # ...and another org's blacklist does not reveal this one's.
    response = await http.delete(f"/v2/orgs/{other_org}/blacklist/%2B34600111222", headers=other)
    assert response.status_code == 404, response.text
    response = await http.delete(f"/v2/orgs/{org}/blacklist/%2B34600111222")
    assert response.status_code == 401
    admin = {"Authorization": f"Bearer {make_token(other_org, roles=(Role.ADMIN,))}"}
    response = await http.delete(f"/v2/orgs/{org}/blacklist/%2B34600111222", headers=admin)
    assert response.status_code == 200, response.text


# ---- gRPC ------------------------------------------------------------------------------------


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> contacts_service_pb2_grpc.ContactsServiceStub:
    return contacts_service_pb2_grpc.ContactsServiceStub(channel)


async def test_grpc_surface(
    stub: contacts_service_pb2_grpc.ContactsServiceStub, auth: Metadata
) -> None:
    created = await stub.CreateContactAddressStatus(
        pb.CreateContactAddressStatusRequest(
            body=consent_pb2.ContactAddressStatusInput(
                address_type="MDN", address="+447911123456", consent_status="OPTOUT"
            )
        ),
        metadata=auth,
    )
    status = await stub.GetContactAddressStatus(
        pb.GetContactAddressStatusRequest(address_status_id=created.id), metadata=auth
    )
    assert (status.address, status.consent_status, status.version_number) == (
        "+447911123456",
        "OPTOUT",
        1,
    )
    assert status.created_date.ToDatetime(UTC) > TEST_CLOCK.now() - timedelta(minutes=1)
    call = stub.ListContactAddressStatuses(pb.ListContactAddressStatusesRequest(), metadata=auth)
    listed = await call
    assert [s.id for s in listed.contact_address_statuses] == [created.id]
    assert ("x-switchboard-bare-list", "contact_address_statuses") in list(
        await call.initial_metadata()
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateContactAddressStatus(
            pb.UpdateContactAddressStatusRequest(
                address_status_id=created.id,
                body=consent_pb2.ContactAddressStatusInput(consent_status="NONE", version_number=5),
            ),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert error_details(caught.value)[0] == "1001"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateContactAddressStatus(
            pb.CreateContactAddressStatusRequest(
                body=consent_pb2.ContactAddressStatusInput(
                    address_type="MDN", address="+44 7911 123456", consent_status="OPTIN"
                )
            ),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    reason, metadata, _ = error_details(caught.value)
    assert (reason, metadata["id"]) == ("1011", created.id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateContactAddressStatus(
            pb.CreateContactAddressStatusRequest(
                body=consent_pb2.ContactAddressStatusInput(address="x" * 400)
            ),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, _, fields = error_details(caught.value)
    assert reason == "400"  # a length and missing fields: not only lengths
    assert {f for f, _ in fields} == {"address", "address_type", "consent_status"}

    history = await stub.ListContactAddressHistory(
        pb.ListContactAddressHistoryRequest(msisdn="+447911123456"), metadata=auth
    )
    assert [h.status for h in history.contact_address_history] == ["OPTOUT"]
    await stub.DeleteContactAddressStatus(
        pb.DeleteContactAddressStatusRequest(address_status_id=created.id), metadata=auth
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetContactAddressStatus(
            pb.GetContactAddressStatusRequest(address_status_id=created.id), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_grpc_blacklist_removal(
    stub: contacts_service_pb2_grpc.ContactsServiceStub, auth: Metadata, org: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RemoveBlacklistEntry(
            pb.RemoveBlacklistEntryRequest(org=org, address="+447911123456"), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.CreateContactAddressStatus(
        pb.CreateContactAddressStatusRequest(
            body=consent_pb2.ContactAddressStatusInput(
                address_type="MDN", address="+447911123456", consent_status="BLACKLIST"
            )
        ),
        metadata=auth,
    )
    removed = await stub.RemoveBlacklistEntry(
        pb.RemoveBlacklistEntryRequest(org=org, address="+447911123456"), metadata=auth
    )
    assert (removed.id, removed.data.removed_count, removed.commit) == (
        "+447911123456",
        1,
        server_version(),
    )
