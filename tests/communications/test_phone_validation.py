"""Phone number validation through the REST edge: fixed and mobile, country as ISO 3166-1
alpha-2, verdicts with line type, E.164 and region; 400 only when a number cannot be judged."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.communications import envelope, errors, titles

pytestmark = pytest.mark.envoy

FIXED = "/v2/phone-numbers/fixed/validate"
MOBILE = "/v2/phone-numbers/mobile/validate"


async def verdict(
    http: httpx.AsyncClient, bearer: dict[str, str], url: str, **body: Any
) -> tuple[str, dict[str, Any]]:
    response = await http.post(url, json=body, headers=bearer)
    data = envelope(response, 200)
    return response.json()["id"], data


async def test_fixed_line(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    number_id, data = await verdict(
        http, bearer, FIXED, phoneNumber="912 34 56 78", countryCode="es"
    )
    assert number_id == "+34912345678"
    assert data == {
        "phoneNumber": "912 34 56 78",
        "valid": True,
        "lineType": "FIXED_LINE",
        "e164": "+34912345678",
        "region": "ES",
        "countryCallingCode": 34,
        "nationalNumber": "912345678",
        "internationalFormat": "+34 912 34 56 78",
        "reason": "",
    }
    _, data = await verdict(http, bearer, FIXED, phoneNumber="+34666123123")
    assert (data["valid"], data["lineType"]) == (False, "MOBILE")
    assert data["reason"] == "a MOBILE number is not a fixed line"
    # Where fixed and mobile share a plan (US), a number is both.
    _, data = await verdict(http, bearer, FIXED, phoneNumber="+1 650 253 0000")
    assert (data["valid"], data["lineType"], data["region"]) == (True, "FIXED_LINE_OR_MOBILE", "US")


async def test_mobile(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    _, data = await verdict(http, bearer, MOBILE, phoneNumber="666123123", countryCode="ES")
    assert (data["valid"], data["lineType"], data["e164"]) == (True, "MOBILE", "+34666123123")
    _, data = await verdict(http, bearer, MOBILE, phoneNumber="0034912345678")
    assert data["valid"] is False and data["lineType"] == "FIXED_LINE"
    _, data = await verdict(http, bearer, MOBILE, phoneNumber="+34 12")
    assert data["valid"] is False and data["reason"] == "not a valid number in its numbering plan"
    number_id, data = await verdict(http, bearer, MOBILE, phoneNumber="hello", countryCode="ES")
    assert number_id == "hello" and data["valid"] is False and data["e164"] == ""
    _, data = await verdict(http, bearer, MOBILE, phoneNumber="+34666123123", countryCode="FR")
    assert data["valid"] is False and "belongs to ES, not FR" in data["reason"]


async def test_requests_that_cannot_be_judged_are_400(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    for body, fields in (
        ({}, {"phoneNumber"}),
        ({"phoneNumber": "666123123"}, {"countryCode"}),
        ({"phoneNumber": "666123123", "countryCode": "ESP"}, {"countryCode"}),
        ({"phoneNumber": "666123123", "countryCode": "ZZ"}, {"countryCode"}),
        ({"phoneNumber": "+34666123123", "country": "ES"}, {"country"}),
    ):
        response = await http.post(MOBILE, json=body, headers=bearer)
        assert titles(response, 400) == fields, response.text
    errors(await http.post(FIXED, json={"phoneNumber": "+34912345678"}), 401)
