"""Phone numbers: normalisation to E.164 and whether a number can receive SMS."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# Number types a handset behind them can receive SMS on. FIXED_LINE_OR_MOBILE is ambiguous
# (e.g. the US) and is given the benefit of the doubt, as carriers do.
_SMS_CAPABLE = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.PAGER}
)


class InvalidNumber(ValueError):
    """`to` is not a phone number; the message says why in a client's words."""


_DIALLABLE = re.compile(r"^\+?[(]?[0-9][0-9 ().\-]{2,30}$")


def normalize(raw: str, default_region: str | None = None) -> str:
    text = raw.strip()
    if not _DIALLABLE.match(text):
        raise InvalidNumber(f"{raw!r} is not a phone number")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+") and default_region is None:
        raise InvalidNumber(f"{raw!r} has no country code; use E.164 such as +27821234567")
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except NumberParseException as exc:
        raise InvalidNumber(f"{raw!r} is not a phone number: {exc._msg}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber(f"{raw!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def sms_incapable_reason(e164: str) -> str | None:
    """Why an E.164 number cannot receive SMS (e.g. it is a fixed line), or None if it can."""
    number_type = phonenumbers.number_type(phonenumbers.parse(e164, None))
    if number_type in _SMS_CAPABLE:
        return None
    kind = {
        PhoneNumberType.FIXED_LINE: "a fixed line",
        PhoneNumberType.TOLL_FREE: "a toll-free number",
        PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
        PhoneNumberType.SHARED_COST: "a shared-cost number",
        PhoneNumberType.VOIP: "a VoIP number",
        PhoneNumberType.UAN: "a universal access number",
        PhoneNumberType.VOICEMAIL: "a voicemail access number",
        PhoneNumberType.PERSONAL_NUMBER: "a personal forwarding number",
    }.get(number_type, "not a mobile number")
    return f"{e164} is {kind} and cannot receive SMS"
