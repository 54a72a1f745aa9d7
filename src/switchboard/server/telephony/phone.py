"""Phone numbers: normalisation to E.164, and what kind of line a number is."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType
from phonenumbers import timezone as phone_timezones

# Number types a handset behind them can receive SMS on. FIXED_LINE_OR_MOBILE is ambiguous
# (e.g. the US) and is given the benefit of the doubt, as carriers do.
_SMS_CAPABLE = frozenset({"MOBILE", "FIXED_LINE_OR_MOBILE", "PAGER"})
_KIND = {
    "FIXED_LINE": "a fixed line",
    "TOLL_FREE": "a toll-free number",
    "PREMIUM_RATE": "a premium-rate number",
    "SHARED_COST": "a shared-cost number",
    "VOIP": "a VoIP number",
    "UAN": "a universal access number",
    "VOICEMAIL": "a voicemail access number",
    "PERSONAL_NUMBER": "a personal forwarding number",
}
_TYPE_NAMES = {
    value: name for name, value in vars(PhoneNumberType).items() if isinstance(value, int)
}
_DIALLABLE = re.compile(r"^\+?[(]?[0-9][0-9 ().\-]{2,30}$")


class InvalidNumber(ValueError):
    """`to` is not a phone number; the message says why in a client's words."""


@dataclass(frozen=True)
class PhoneNumber:
    e164: str
    type: str  # libphonenumber's type name: MOBILE, FIXED_LINE, TOLL_FREE, …


def classify(raw: str, default_region: str | None = None) -> PhoneNumber:
    """Parse, validate and type a number in one pass (typing is most of validation's cost)."""
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
    number_type = phonenumbers.number_type(number)  # UNKNOWN exactly when it is not valid
    if number_type == PhoneNumberType.UNKNOWN:
        raise InvalidNumber(f"{raw!r} is not a valid phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(e164, _TYPE_NAMES.get(number_type, "UNKNOWN"))


def sms_incapable_reason(number: PhoneNumber) -> str | None:
    """Why a number cannot receive SMS (e.g. it is a fixed line), or None if it can."""
    if number.type in _SMS_CAPABLE:
        return None
    kind = _KIND.get(number.type, "not a mobile number")
    return f"{number.e164} is {kind} and cannot receive SMS"


@functools.cache
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zones_for_number(e164: str) -> tuple[ZoneInfo, ...]:
    """The number's time zones (libphonenumber's prefix data); () when unknown."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    names = phone_timezones.time_zones_for_number(number)
    zones = tuple(z for z in (_zone(n) for n in names if n != "Etc/Unknown") if z is not None)
    return zones
