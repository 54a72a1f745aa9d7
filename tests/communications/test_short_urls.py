"""Short URLs through the REST edge: create (201, custom suffix, length, 409), search with the
documented filters, the public redirect GET /s/{code} (302 + Location, a click event each), and
the short links an SMS gets for its non-sensitive Link arguments."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from switchboard.server.app.server import Application
from switchboard.server.core.models import EventRecord
from switchboard.server.core.protomap import iso
from tests.support.auth import TokenFactory
from tests.support.communications import (
    admin,
    envelope,
    errors,
    put_template,
    put_type,
    titles,
    unique_type,
)

pytestmark = pytest.mark.envoy

LONG = "https://longurl.com/with/its/long/path"


async def create(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, **body: Any
) -> dict[str, Any]:
    response = await http.post(f"/v2/orgs/{org}/short-urls", json=body, headers=bearer)
    return envelope(response, 201)


async def clicks(app: Application, org: str, short_id: str) -> list[dict[str, Any]]:
    async with app.db.read() as session:
        rows = (
            await session.execute(
                select(EventRecord)
                .where(EventRecord.org_id == org, EventRecord.resource_id == short_id)  # type: ignore[arg-type]
                .order_by(EventRecord.seq)  # type: ignore[arg-type]
            )
        ).scalars()
        return [r.payload for r in rows if r.type == "short_url.clicked"]


async def test_create_with_custom_suffix_and_redirect(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, app: Application
) -> None:
    suffix = f"helpPage-{org[-6:]}"
    # The documented example: length as a string.
    data = await create(http, bearer, org, longUrl=LONG, customSuffix=suffix, length="5")
    assert data["code"] == suffix and data["customSuffix"] is True
    assert data["shortUrl"] == f"http://localhost:8080/s/{suffix}"
    assert data["longUrl"] == LONG and data["clickCount"] == 0
    assert data["updatedAgent"] == "test-app" and data["communicationId"] == ""
    # The redirect is public, a 302 with Location, through Envoy.
    response = await http.get(f"/s/{suffix}")
    assert response.status_code == 302, response.text
    assert response.headers["location"] == LONG
    assert response.content == b""
    await http.get(f"/s/{suffix}")
    [first, second] = await clicks(app, org, data["id"])
    assert (first["code"], first["click_count"], second["click_count"]) == (suffix, 1, 2)
    found = envelope(
        await http.get(
            f"/v2/orgs/{org}/short-urls", params={"customSuffix": "true"}, headers=bearer
        ),
        200,
    )["items"]
    assert [(s["id"], s["clickCount"]) for s in found] == [(data["id"], 2)]
    # Codes are unique across the deployment: another org cannot take it either.
    response = await http.post(
        f"/v2/orgs/{org}/short-urls", json={"longUrl": LONG, "customSuffix": suffix}, headers=bearer
    )
    assert errors(response, 409)[0]["code"] == "1011"
    # Unknown codes: family A 404.
    errors(await http.get("/s/nope-nothing-here"), 404)


async def test_generated_codes_length_and_validation(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str
) -> None:
    data = await create(http, bearer, org, longUrl=LONG, length=12)
    assert len(data["code"]) == 12 and data["customSuffix"] is False
    data = await create(http, bearer, org, longUrl=LONG)
    assert len(data["code"]) == 7
    url = f"/v2/orgs/{org}/short-urls"
    for body, fields in (
        ({"longUrl": "not a url"}, {"longUrl"}),
        ({}, {"longUrl"}),
        ({"longUrl": LONG, "length": 2}, {"length"}),
        ({"longUrl": LONG, "customSuffix": "bad suffix!"}, {"customSuffix"}),
    ):
        response = await http.post(url, json=body, headers=bearer)
        assert titles(response, 400) == fields, response.text


async def test_search_filters(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    first = await create(http, bearer, org, longUrl=LONG)
    other_agent = {"Authorization": f"Bearer {make_token(org, subject='loli@cuco.com')}"}
    second = await create(http, other_agent, org, longUrl="https://example.com/b")
    url = f"/v2/orgs/{org}/short-urls"

    async def ids(**params: Any) -> list[str]:
        response = await http.get(url, params=params, headers=bearer)
        return [s["id"] for s in envelope(response, 200)["items"]]

    assert await ids() == [first["id"], second["id"]]
    assert await ids(longUrl=LONG) == [first["id"]]
    assert await ids(updatedAgent="loli@cuco.com") == [second["id"]]
    assert await ids(customSuffix="false") == [first["id"], second["id"]]
    assert await ids(customSuffix="true") == []
    assert await ids(limit=1, offset=1) == [second["id"]]
    at = first["updatedTime"]
    assert await ids(**{"updatedTime[eq]": at}) == [first["id"]]
    assert await ids(**{"updatedTime[gt]": at}) == [second["id"]]
    assert await ids(**{"updatedTime[gte]": at}) == [first["id"], second["id"]]
    assert await ids(**{"updatedTime[lt]": second["updatedTime"]}) == [first["id"]]
    assert await ids(**{"updatedTime[lte]": second["updatedTime"]}) == [first["id"], second["id"]]
    assert await ids(**{"updatedTime[eq]": at[:10]}) == [first["id"], second["id"]]
    response = await http.get(url, params={"updatedTime[gt]": "yesterday"}, headers=bearer)
    assert titles(response, 400) == {"updatedTime[gt]"}
    # Another org sees none of them, and may not use this org's path.
    other_org = org + "-other"
    other = {"Authorization": f"Bearer {make_token(other_org)}"}
    response = await http.get(f"/v2/orgs/{other_org}/short-urls", headers=other)
    assert envelope(response, 200)["items"] == []
    errors(await http.get(url, headers=other), 403)


async def test_sms_links_are_shortened_and_clicks_tied_to_the_communication(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    code = unique_type()
    arguments = [
        {"name": "promoLink", "type": "Link", "sensitive": False},
        {"name": "resetLink", "type": "Link", "sensitive": True},
    ]
    await put_type(http, admin(make_token, org), code, arguments=arguments)
    await put_template(
        http, bearer, org, code, "sms", "Offer [(${promoLink})] reset [(${resetLink})]"
    )
    await put_template(http, bearer, org, code, "email", "<p>[(${promoLink})]</p>", subject="Offer")
    promo = "https://shop.example.com/offers/summer?utm=sms"
    body = {
        "type": code,
        "language": "en",
        "smsInput": {"phoneNumber": "+34666123123"},
        "emailInput": {"to": "a@example.com"},
        "arguments": {"promoLink": promo, "resetLink": "https://password.com/reset/9"},
    }
    response = await http.post(f"/v2/orgs/{org}/communications", json=body, headers=bearer)
    data = envelope(response, 202)
    sms, mail = data["channels"]
    prefix = "Offer http://localhost:8080/s/"
    assert sms["content"].startswith(prefix) and sms["content"].endswith(" reset ****")
    short_code = sms["content"][len(prefix) :].split(" ")[0]
    assert len(short_code) == 8
    assert mail["content"] == f"<p>{promo}</p>"  # only SMS shortens
    [link] = envelope(
        await http.get(f"/v2/orgs/{org}/short-urls", params={"longUrl": promo}, headers=bearer), 200
    )["items"]
    assert link["communicationId"] == data["id"] and link["code"] == short_code
    # The sensitive link was not shortened: no short URL holds it.
    everything = envelope(await http.get(f"/v2/orgs/{org}/short-urls", headers=bearer), 200)
    assert [s["longUrl"] for s in everything["items"]] == [promo]
    response = await http.get(f"/s/{short_code}")
    assert response.status_code == 302 and response.headers["location"] == promo
    [click] = await clicks(app, org, link["id"])
    assert click["communication_id"] == data["id"]
    assert click["clicked_time"] <= iso(app.clock.now() + timedelta(seconds=1))
