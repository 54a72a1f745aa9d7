"""Where a recipient is: the destination country and time zones a queue row carries."""

from __future__ import annotations

import phonenumbers
from phonenumbers import timezone as phone_timezones


def country_and_zones(e164: str, *, time_zone: str = "") -> tuple[str, str]:
    """(ISO country, comma-separated IANA zones) of a number; a contact's own `time_zone` wins
    over the number's zones. ("", "") for what is not a parseable number (email addresses)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return "", time_zone
    country = phonenumbers.region_code_for_number(number) or ""
    if time_zone:
        return country, time_zone
    names = [n for n in phone_timezones.time_zones_for_number(number) if n != "Etc/Unknown"]
    return country, ",".join(names)


__all__ = ["country_and_zones"]
