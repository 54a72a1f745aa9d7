"""Messaging keywords through the REST edge (family B): COMPANY CRUD, RESERVED STOP/START/HELP
seeded and protected, form PUT, locking, unique names, lengths, cross-org isolation, events; the
POSIX ERE translation and match_inbound called directly."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from switchboard.server.core.db import table_of
from switchboard.server.core.models import EventRecord
from switchboard.server.messaging.content.keywords import (
    Action,
    KeywordMatch,
    NotPosixEre,
    ere_to_python,
    parse_actions,
)
from tests.support.auth import TokenFactory
from tests.support.errors import assert_error
from tests.support.messaging import create_sender
from tests.support.rest import FORM

_events = table_of(EventRecord)
PATH = "/messaging/keywords"
RESERVED = {"kw_reserved_stop", "kw_reserved_start", "kw_reserved_help"}


async def create(http: httpx.AsyncClient, bearer: dict[str, str], **fields: Any) -> str:
    response = await http.post(PATH, json=fields, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    keyword_id: str = response.json()["id"]
    return keyword_id


async def get(http: httpx.AsyncClient, bearer: dict[str, str], keyword_id: str) -> dict[str, Any]:
    response = await http.get(f"{PATH}/{keyword_id}", headers=bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.unit
def test_ere_translation() -> None:
    assert re.fullmatch(ere_to_python("[[:alpha:]]+[[:digit:]]"), "abc1")
    assert not re.fullmatch(ere_to_python("[[:alpha:]]+[[:digit:]]"), "abc")
    assert re.fullmatch(ere_to_python(r"[\]+"), "\\\\")  # backslash is literal in brackets
    assert re.fullmatch(ere_to_python("[]a]+"), "]a]")
    assert re.fullmatch(ere_to_python(r"a\.b"), "a.b")
    assert re.fullmatch(ere_to_python("(STOP|END)( ALL)?"), "END ALL")
    for bad in (r"\d+", "(?i)stop", "a*?", "a++", "[[:nope:]]", "[abc", "x\\", "[[=a=]]"):
        with pytest.raises(NotPosixEre):
            ere_to_python(bad)


@pytest.mark.unit
def test_actions() -> None:
    assert parse_actions("optout, store  STORE") == [Action.OPTOUT, Action.STORE]
    with pytest.raises(ValueError, match="DANCE"):
        parse_actions("OPTIN DANCE")


@pytest.mark.envoy
async def test_reserved_keywords_are_listed_and_protected(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    response = await http.get(PATH, params={"type": "RESERVED"}, headers=bearer)
    assert response.status_code == 200, response.text
    reserved = {k["id"]: k for k in response.json()}
    assert set(reserved) == RESERVED
    assert reserved["kw_reserved_stop"]["actions"] == "OPTOUT"
    assert reserved["kw_reserved_start"]["actions"] == "OPTIN"
    assert reserved["kw_reserved_help"]["name"] == "HELP"
    response = await http.post(PATH, json={"value": "STOP", "type": "RESERVED"}, headers=bearer)
    assert_error(response, 400, "400")
    response = await http.post(f"{PATH}/kw_reserved_stop", json={"value": "X"}, headers=bearer)
    assert "RESERVED" in assert_error(response, 403, "403")
    response = await http.put(
        f"{PATH}/kw_reserved_help", content="value=X", headers={**bearer, "content-type": FORM}
    )
    assert_error(response, 403, "403")
    assert_error(await http.delete(f"{PATH}/kw_reserved_start", headers=bearer), 403, "403")
    assert (await get(http, bearer, "kw_reserved_stop"))["value"].startswith("STOP")


@pytest.mark.envoy
async def test_company_crud_form_put_locking_and_events(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any, org: str
) -> None:
    response = await http.post(
        "/messaging/message_templates",
        json={"designation": "TEMPLATE", "name": "welcome", "pattern": "Welcome!"},
        headers=bearer,
    )
    assert response.status_code == 200, response.text
    keyword_id = await create(
        http,
        bearer,
        name="sports",
        description="Sports news",
        value="SPORTS?",
        case="SENSITIVE",
        valid_from="2026-01-01",
        valid_to="2027-01-01T00:00:00Z",
        associated_info="campaign 7",
        campaign_id="c7",
        type="COMPANY",
        actions="OPTIN STORE",
        reply_template="welcome",
    )
    body = await get(http, bearer, keyword_id)
    assert body["type"] == "COMPANY" and body["case"] == "SENSITIVE"
    assert body["actions"] == "OPTIN,STORE"
    assert body["valid_from"] == "2026-01-01T00:00:00Z"
    assert body["valid_to"] == "2027-01-01T00:00:00Z"
    assert body["reply_template"] == "welcome"
    assert body["version_number"] == 1
    response = await http.post(f"{PATH}/{keyword_id}", json={"campaign_id": "c8"}, headers=bearer)
    assert response.json() == {"id": keyword_id}
    response = await http.post(
        f"{PATH}/{keyword_id}", json={"campaign_id": "c9", "version_number": 1}, headers=bearer
    )
    assert_error(response, 409, "1001")
    response = await http.put(
        f"{PATH}/{keyword_id}",
        content="value=NEWS&name=news&actions=STORE&version_number=2",
        headers={**bearer, "content-type": FORM},
    )
    assert response.status_code == 200, response.text
    body = await get(http, bearer, keyword_id)
    assert (body["value"], body["name"], body["case"], body["campaign_id"]) == (
        "NEWS",
        "news",
        "INSENSITIVE",
        "",
    )
    assert "valid_from" not in body or body["valid_from"] is None
    listed = (await http.get(PATH, params={"type": "COMPANY"}, headers=bearer)).json()
    assert [k["id"] for k in listed] == [keyword_id]
    response = await http.delete(f"{PATH}/{keyword_id}", headers=bearer)
    assert response.status_code == 200
    assert_error(await http.get(f"{PATH}/{keyword_id}", headers=bearer), 404, "404")
    async with app.db.read() as session:
        types = (
            await session.execute(
                select(_events.c.type)
                .where(_events.c.org_id == org, _events.c.resource_id == keyword_id)
                .order_by(_events.c.seq)
            )
        ).scalars()
        assert list(types) == [
            "keyword.created",
            "keyword.updated",
            "keyword.updated",
            "keyword.deleted",
        ]


@pytest.mark.envoy
async def test_validation_unique_and_isolation(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    keyword_id = await create(http, bearer, value="JOIN", actions="OPTIN")
    assert (await get(http, bearer, keyword_id))["name"] == "JOIN"
    assert_error(
        await http.post(PATH, json={"value": "X", "name": "JOIN"}, headers=bearer), 409, "1011"
    )
    assert_error(await http.post(PATH, json={"value": "v" * 257}, headers=bearer), 400, "1023")
    assert_error(await http.post(PATH, json={"name": "no value"}, headers=bearer), 400, "400")
    for bad in (
        {"value": r"\d+"},
        {"value": "OK", "actions": "DANCE"},
        {"value": "OK", "actions": "OPTIN,OPTOUT"},
        {"value": "OK", "case": "MAYBE"},
        {"value": "OK", "valid_from": "2027-01-01", "valid_to": "2026-01-01"},
        {"value": "OK", "valid_from": "soon"},
        {"value": "OK", "reply_template": "missing"},
    ):
        assert_error(await http.post(PATH, json=bad, headers=bearer), 400, "400")
    other = {"Authorization": f"Bearer {make_token('org-other-keywords')}"}
    # A keyword listens on one of the org's own sender IDs: not another org's, nor a made-up one.
    foreign = await create_sender(http, other)
    for sender_id in ("snd-made-up", foreign):
        response = await http.post(
            PATH, json={"value": "OK", "sender_id": sender_id}, headers=bearer
        )
        assert "sender_id" in assert_error(response, 400, "400")
        response = await http.post(
            f"{PATH}/{keyword_id}", json={"sender_id": sender_id}, headers=bearer
        )
        assert "sender_id" in assert_error(response, 400, "400")
    own = await create_sender(http, bearer)
    listening = await create(http, bearer, value="NEWS", sender_id=own)
    assert (await get(http, bearer, listening))["sender_id"] == own
    assert_error(await http.get(f"{PATH}/{keyword_id}", headers=other), 404, "404")
    assert_error(await http.delete(f"{PATH}/{keyword_id}", headers=other), 404, "404")
    listed = (await http.get(PATH, headers=other)).json()
    assert {k["id"] for k in listed} == RESERVED  # only the platform's


async def _match(app: Any, org: str, sender: str, body: str, **kwargs: Any) -> KeywordMatch | None:
    service = app.messaging.keywords
    await service.ensure_reserved()
    at = kwargs.pop("at", datetime(2026, 6, 1, tzinfo=UTC))
    result: KeywordMatch | None = await app.db.run_write(
        lambda session: service.match_inbound(session, org, sender, body, at, **kwargs)
    )
    return result


@pytest.mark.envoy
async def test_match_inbound(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any, org: str
) -> None:
    snd_1 = await create_sender(http, bearer)
    await http.post(
        "/messaging/message_templates",
        json={"designation": "TEMPLATE", "name": "help-reply", "pattern": "Call 555"},
        headers=bearer,
    )
    sports = await create(
        http,
        bearer,
        value="SPORTS",
        case="SENSITIVE",
        actions="STORE",
        sender_id=snd_1,
        valid_from="2026-01-01",
        valid_to="2027-01-01",
        reply_template="help-reply",
        associated_info="info",
    )
    # Company keywords before reserved ones: an org keyword overriding STOP wins.
    own_stop = await create(http, bearer, name="my-stop", value="stop", actions="STORE")
    assert (await _match(app, org, snd_1, "  SPORTS ")).keyword_id == sports  # type: ignore[union-attr]
    match = await _match(app, org, snd_1, "SPORTS")
    assert match is not None
    assert match.reply_body == "Call 555" and match.associated_info == "info"
    assert match.actions == (Action.STORE,)
    assert await _match(app, org, snd_1, "sports") is None  # case sensitive
    assert await _match(app, org, "snd-2", "SPORTS") is None  # other sender
    assert await _match(app, org, snd_1, "SPORTS NEWS") is None  # whole body only
    assert await _match(app, org, snd_1, "SPORTS", at=datetime(2027, 1, 1, tzinfo=UTC)) is None
    assert (await _match(app, org, "snd-9", "Stop")).keyword_id == own_stop  # type: ignore[union-attr]
    response = await http.delete(f"{PATH}/{own_stop}", headers=bearer)
    assert response.status_code == 200
    # Reserved STOP / START applied through consent.
    match = await _match(app, org, snd_1, "unsubscribe", from_address="+34600111222")
    assert match is not None and match.keyword_id == "kw_reserved_stop"
    assert match.consent is not None and match.consent["consent_status"] == "OPTOUT"
    match = await _match(app, org, snd_1, "start", from_address="+34600111222")
    assert match is not None and match.consent is not None
    assert match.consent["consent_status"] == "OPTIN"
    assert await _match(app, org, snd_1, "hello") is None
    async with app.db.read() as session:
        types = (
            await session.execute(
                select(_events.c.type).where(
                    _events.c.org_id == org, _events.c.type == "keyword.matched"
                )
            )
        ).scalars()
        assert len(list(types)) == 2
    response = await http.get(
        "/consent/contact_address_statuses", params={"address": "+34600111222"}, headers=bearer
    )
    assert response.status_code == 200, response.text
    assert [s["consent_status"] for s in response.json()] == ["OPTIN"]
