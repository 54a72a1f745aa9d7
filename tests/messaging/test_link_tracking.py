"""Link tracking through Envoy: a `track_links` message request gives each message its own short
links; the first click (GET /s/{code}, public) marks that message CONVERTED with source URL and
moves the request's converted_count; untrackable URLs are 400 / 1020."""

from __future__ import annotations

import re

import httpx

from tests.support.errors import assert_error
from tests.support.messaging import MR, create_sender, messages_of, submit, us_number, wait_request

SHORT = re.compile(r"http://localhost:8080/s/([A-Za-z0-9]+)")


async def test_a_click_converts_its_own_message(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    sender = await create_sender(http, bearer)
    body = "Sale! https://shop.example/sale?id=7 and (https://shop.example/terms)."
    request_id = await submit(
        http,
        bearer,
        **{"from": sender, "to": [us_number(), us_number()], "body": body},
        track_links=True,
    )
    request = await wait_request(http, bearer, request_id, lambda r: r["delivered_count"] == 2)
    assert request["track_links"] is True and request["body"] == body  # the request keeps it
    first, second = await messages_of(http, bearer, request_id)
    codes = [SHORT.findall(m["body"]) for m in (first, second)]
    assert all(len(c) == 2 for c in codes)  # both URLs replaced, in each message
    assert not set(codes[0]) & set(codes[1])  # links are per message
    assert SHORT.sub("X", first["body"]) == "Sale! X and (X)."  # punctuation kept

    # The end user of the first message clicks its second link (no token: it is public).
    click = await http.get(f"/s/{codes[0][1]}")
    assert click.status_code == 302
    assert click.headers["location"] == "https://shop.example/terms"
    await http.get(f"/s/{codes[0][0]}")  # a second click converts nothing more
    request = await wait_request(http, bearer, request_id, lambda r: r["converted_count"] >= 1)
    assert request["converted_count"] == 1
    converted = {m["id"]: m for m in await messages_of(http, bearer, request_id)}
    clicked = converted[first["id"]]
    assert clicked["state"] == "CONVERTED"
    assert clicked["conversion_info_source"] == "URL" and clicked["converted_date"]
    assert converted[second["id"]]["state"] == "DELIVERED"


async def test_untrackable_urls_are_1020(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    sender = await create_sender(http, bearer)
    base = {"from": sender, "to": [us_number()], "track_links": True}
    for body, reason in (
        ("see http:// now", "host"),
        ("see https://shop..example/x", "host"),
        ("see https://shop.example:99999/x", "Port"),
        ("no link at all", "no http(s) URL"),
    ):
        response = await http.post(MR, json={**base, "body": body}, headers=bearer)
        assert reason in assert_error(response, 400, "1020"), body
    # Without track_links the same body is plain text.
    ok = await http.post(
        MR, json={**base, "track_links": False, "body": "see http:// now"}, headers=bearer
    )
    assert ok.status_code == 200, ok.text
