"""Communication types: the global catalog of communication purposes and their arguments.

A type declares the arguments its templates may use, each with a value type. The same
declarations check the arguments of examples and previews (`check_values`) and, through the
template engine, the arguments templates reference.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from switchboard.server.core.validation import Checks
from switchboard.server.templates.models import ArgumentType, SendingType

CODE = re.compile(r"^[a-z0-9][a-z0-9_]{0,38}[a-z0-9]$")
ARGUMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_WINDOW = re.compile(r"^ANYDAY_(?:ANYTIME|(\d{1,2})(AM|PM)(\d{1,2})(AM|PM))$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_REGION = re.compile(r"^[A-Za-z]{2}$")
ANYTIME = "ANYDAY_ANYTIME"
DESCRIPTION_MAX = 1000
ARGUMENTS_MAX = 200


@dataclass(frozen=True)
class Argument:
    name: str
    type: str  # an ArgumentType value
    sensitive: bool = False


@dataclass(frozen=True)
class CommunicationType:
    code: str
    description: str
    real_time_required: bool
    delivery_window: str
    sending_type: str
    arguments: list[Argument] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 1

    @property
    def declared(self) -> dict[str, str]:
        """Argument name → ArgumentType value, as the engine's check_arguments takes it."""
        return {a.name: a.type for a in self.arguments}

    @property
    def sensitive_arguments(self) -> frozenset[str]:
        return frozenset(a.name for a in self.arguments if a.sensitive)

    @property
    def delivery_hours(self) -> tuple[int, int] | None:
        """The window as local hours [start, end) (end 24 = midnight); None for any time."""
        return delivery_hours(self.delivery_window)


def delivery_hours(window: str) -> tuple[int, int] | None:
    """`ANYDAY_8AM8PM` → (8, 20); `ANYDAY_ANYTIME` → None. ValueError when not a window within
    one day: hours 1-12, the start before the end (12AM starts the day, and ends it as 24)."""
    match = _WINDOW.match(window)
    if match is None:
        raise ValueError(f"{window!r} is not ANYDAY_ANYTIME or ANYDAY_<h>AM|PM<h>AM|PM")
    if window == ANYTIME:
        return None
    start = _hour(int(match[1]), match[2], end=False)
    end = _hour(int(match[3]), match[4], end=True)
    if start >= end:
        raise ValueError(f"{window!r}: the window must start before it ends, within one day")
    return start, end


def _hour(hour: int, half: str, *, end: bool) -> int:
    if not 1 <= hour <= 12:
        raise ValueError(f"{hour}{half} is not an hour (1-12 AM or PM)")
    if hour == 12:
        hour = 0
    value = hour + (12 if half == "PM" else 0)
    return 24 if end and value == 0 else value


def from_row(row: Mapping[str, Any]) -> CommunicationType:
    return CommunicationType(
        code=row["code"],
        description=row["description"],
        real_time_required=bool(row["real_time_required"]),
        delivery_window=row["delivery_window"],
        sending_type=row["sending_type"],
        arguments=[
            Argument(a["name"], a["type"], bool(a.get("sensitive", False)))
            for a in row["arguments"] or []
        ],
        created_at=row.get("created_at"),
        updated_at=row.get("updated_at"),
        version=row.get("version", 1),
    )


def validate_type(
    checks: Checks,
    path_code: str,
    values: Mapping[str, Any],
) -> CommunicationType:
    """A CommunicationTypeRequestDto body (`values`: proto field names) checked and normalised."""
    code = (values.get("code") or "").strip() or path_code
    if not CODE.match(path_code):
        checks.fail("typeCode", f"must match {CODE.pattern}", "Format")
    elif code != path_code:
        checks.fail("code", f"must equal the path's type code {path_code!r}")
    description = (values.get("description") or "").strip()
    if checks.required("description", description):
        checks.length("description", description, DESCRIPTION_MAX)
    window = (values.get("delivery_window") or "").strip().upper() or ANYTIME
    try:
        delivery_hours(window)
    except ValueError as exc:
        checks.fail("deliveryWindow", str(exc), "Format")
    sending = (values.get("sending_type") or "").strip() or SendingType.INTERNAL.value
    sending_type = checks.choice("sendingType", sending, SendingType)
    arguments: list[Argument] = []
    seen: set[str] = set()
    given: Sequence[Mapping[str, Any]] = values.get("arguments") or []
    if len(given) > ARGUMENTS_MAX:
        checks.fail("arguments", f"at most {ARGUMENTS_MAX} arguments", "Range")
    for index, argument in enumerate(given):
        where = f"arguments[{index}]"
        name = (argument.get("name") or "").strip()
        if not checks.required(f"{where}.name", name):
            continue
        if not ARGUMENT_NAME.match(name):
            checks.fail(
                f"{where}.name",
                "must start with a letter or _ and hold letters, digits, _, - or . "
                "(at most 64 characters)",
                "Format",
            )
        if name in seen:
            checks.fail(f"{where}.name", f"{name!r} is declared twice")
        seen.add(name)
        kind = checks.choice(f"{where}.type", argument.get("type") or "", ArgumentType)
        if kind is not None:
            arguments.append(Argument(name, kind.value, bool(argument.get("sensitive", False))))
    return CommunicationType(
        code=code,
        description=description,
        real_time_required=bool(values.get("real_time_required", False)),
        delivery_window=window,
        sending_type=sending_type.value if sending_type else SendingType.INTERNAL.value,
        arguments=arguments,
    )


def check_values(kind: CommunicationType, values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(argument name, problem) for each value that the type does not declare or whose value is
    not of the declared type. Missing arguments are fine here: rendering judges those."""
    declared = {a.name: a.type for a in kind.arguments}
    problems: list[tuple[str, str]] = []
    for name, value in values.items():
        wanted = declared.get(name)
        if wanted is None:
            problems.append((name, f"is not an argument of type {kind.code!r}"))
            continue
        problem = value_problem(wanted, value)
        if problem is not None:
            problems.append((name, problem))
    return problems


def value_problem(kind: str, value: Any) -> str | None:
    """Why `value` (JSON) is not a value of ArgumentType `kind`, or None when it is."""
    if value is None:
        return None  # an explicit null is an absent value
    if kind in (ArgumentType.STRING, ArgumentType.QR_CODE):
        return None if isinstance(value, str) else f"must be a string ({kind})"
    if kind == ArgumentType.STRING_LIST:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "must be an array of strings (StringList)"
    if kind == ArgumentType.STRING_MAP:
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return None if ok else "must be an object of strings (StringMap)"
    if kind == ArgumentType.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "must be a number (Number)"
    if kind == ArgumentType.BOOLEAN:
        return None if isinstance(value, bool) else "must be true or false (Boolean)"
    if not isinstance(value, str):
        return f"must be a string ({kind})"
    if kind == ArgumentType.DATE:
        return (
            None
            if _is_date(value)
            else ("must be a date: YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or RFC 3339 (Date)")
        )
    if kind == ArgumentType.LINK:
        return None if _URL.match(value) else "must be an http(s) URL (Link)"
    if kind == ArgumentType.LOCALE_REGION:
        return (
            None
            if _REGION.match(value)
            else ("must be an ISO 3166-1 alpha-2 region such as ES (LocaleRegion)")
        )
    if kind in (ArgumentType.IMAGE, ArgumentType.ATTACHMENT):
        return None if decode_base64(value) is not None else f"must be base64 ({kind})"
    return None


def _is_date(value: str) -> bool:
    try:
        if len(value) == 10:
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def decode_base64(value: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional, whitespace ignored; None if not base64."""
    compact = "".join(value.split())
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact.encode("ascii"))
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def snapshot(kind: CommunicationType) -> dict[str, Any]:
    """A type as clients see it (proto field names, JSON-safe)."""
    from switchboard.server.core.protomap import iso

    return {
        "code": kind.code,
        "description": kind.description,
        "real_time_required": kind.real_time_required,
        "delivery_window": kind.delivery_window,
        "sending_type": kind.sending_type,
        "arguments": [
            {"name": a.name, "type": a.type, "sensitive": a.sensitive} for a in kind.arguments
        ],
        "created_time": iso(kind.created_at),
        "updated_time": iso(kind.updated_at),
        "version": kind.version,
    }
