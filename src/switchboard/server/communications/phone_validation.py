"""Phone number validation (libphonenumber): is a number a valid fixed line, or a valid mobile?

`FIXED_LINE_OR_MOBILE` (numbering plans such as the US, where the two cannot be told apart)
counts as both. A number that does not parse, or is not valid in its plan, is answered with
`valid: false` and the reason; only a request that cannot be judged is a 400: a missing number,
a country that is not ISO 3166-1 alpha-2, or a national number without a country.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

from switchboard.server.core.validation import Checks

PHONE_MAX = 64
_REGION = re.compile(r"^[A-Za-z]{2}$")
_TYPE_NAMES = {
    value: name for name, value in vars(PhoneNumberType).items() if isinstance(value, int)
}


class LineKind(StrEnum):
    FIXED = "fixed"
    MOBILE = "mobile"


_ACCEPTED = {
    LineKind.FIXED: frozenset({"FIXED_LINE", "FIXED_LINE_OR_MOBILE"}),
    LineKind.MOBILE: frozenset({"MOBILE", "FIXED_LINE_OR_MOBILE"}),
}
_KIND_WORDS = {LineKind.FIXED: "a fixed line", LineKind.MOBILE: "a mobile number"}


@dataclass(frozen=True)
class Verdict:
    phone_number: str
    valid: bool
    line_type: str = "UNKNOWN"
    e164: str = ""
    region: str = ""
    country_calling_code: int = 0
    national_number: str = ""
    international_format: str = ""
    reason: str = ""

    def snapshot(self) -> dict[str, Any]:
        return {
            "phone_number": self.phone_number,
            "valid": self.valid,
            "line_type": self.line_type,
            "e164": self.e164,
            "region": self.region,
            "country_calling_code": self.country_calling_code,
            "national_number": self.national_number,
            "international_format": self.international_format,
            "reason": self.reason,
        }


def validate(kind: LineKind, phone_number: str, country_code: str) -> Verdict:
    checks = Checks()
    text = phone_number.strip()
    if checks.required("phoneNumber", text):
        checks.length("phoneNumber", text, PHONE_MAX)
    region = country_code.strip().upper()
    if region and not _REGION.match(region):
        checks.fail("countryCode", "must be an ISO 3166-1 alpha-2 country such as ES", "Format")
    elif region and region not in phonenumbers.SUPPORTED_REGIONS:
        checks.fail("countryCode", f"{region!r} is not a country with a numbering plan")
    international = text.startswith(("+", "00"))
    if text and not international and not region:
        checks.fail(
            "countryCode",
            "is required when phoneNumber is not international (+<country code>…)",
            "Required",
        )
    checks.raise_if_failed()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if international else region)
    except NumberParseException as exc:
        return Verdict(phone_number, False, reason=f"not a phone number: {exc._msg}")
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    line_type = _TYPE_NAMES.get(phonenumbers.number_type(number), "UNKNOWN")
    found_region = phonenumbers.region_code_for_number(number) or ""
    facts: dict[str, Any] = {
        "line_type": line_type,
        "e164": e164,
        "region": found_region if found_region != "001" else "",
        "country_calling_code": number.country_code or 0,
        "national_number": phonenumbers.national_significant_number(number),
        "international_format": phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
    }
    if not phonenumbers.is_valid_number(number):
        return Verdict(
            phone_number, False, reason="not a valid number in its numbering plan", **facts
        )
    if region and found_region != region:
        reason = f"the number belongs to {found_region}, not {region}"
        return Verdict(phone_number, False, reason=reason, **facts)
    if line_type not in _ACCEPTED[kind]:
        reason = f"a {line_type} number is not {_KIND_WORDS[kind]}"
        return Verdict(phone_number, False, reason=reason, **facts)
    return Verdict(phone_number, True, **facts)
