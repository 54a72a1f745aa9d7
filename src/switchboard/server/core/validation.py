"""Boundary validation: collect every invalid field of a request, then fail once.

Services build a `Checks`, run the checks their fields need, and call `raise_if_failed()`: the
client learns about all its mistakes in one response, each naming the field (`1023` when only
lengths were exceeded, else `400`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from switchboard.server.core.errors import FieldViolation, validation_error

E = TypeVar("E", bound=StrEnum)

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_ZONES: frozenset[str] | None = None


class Checks:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str, reason: str = "Invalid") -> None:
        self.violations.append(FieldViolation(field, description, reason))

    def raise_if_failed(self) -> None:
        if self.violations:
            raise validation_error(self.violations)

    def ok(self, field: str) -> bool:
        return not any(v.field == field for v in self.violations)

    def required(self, field: str, value: str | None) -> bool:
        if value is None or not value.strip():
            self.fail(field, "is required", "Required")
            return False
        return True

    def length(self, field: str, value: str | None, maximum: int) -> None:
        if value is not None and len(value) > maximum:
            self.fail(field, f"is longer than {maximum} characters", "Length")

    def lengths(self, values: dict[str, Any], limits: dict[str, int]) -> None:
        for field, maximum in limits.items():
            value = values.get(field)
            if isinstance(value, str):
                self.length(field, value, maximum)

    def choice(self, field: str, value: str, allowed: type[E]) -> E | None:
        """`value` as a member of `allowed` (case-insensitive), or a violation."""
        for member in allowed:
            if member.value.lower() == value.strip().lower():
                return member
        names = ", ".join(m.value for m in allowed)
        self.fail(field, f"must be one of {names}", "Enum")
        return None

    def plain_date(self, field: str, value: str) -> None:
        """`YYYY-MM-DD`, a real calendar date."""
        try:
            if len(value) != 10:
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            self.fail(field, "must be a date as YYYY-MM-DD", "Format")

    def email(self, field: str, value: str) -> None:
        if not _EMAIL.match(value) or len(value) > 320:
            self.fail(field, "must be an email address", "Format")

    def language(self, field: str, value: str) -> None:
        if len(value) > 35 or not _LANGUAGE.match(value):
            self.fail(field, "must be a BCP 47 language tag such as es or pt-BR", "Format")

    def time_zone(self, field: str, value: str) -> None:
        global _ZONES
        if _ZONES is None:
            _ZONES = frozenset(available_timezones())
        try:
            if value not in _ZONES:
                ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.fail(field, "must be an IANA time zone such as Europe/Madrid", "Format")

    def json_value(
        self, field: str, value: str, kind: type[list[Any]] | type[dict[str, Any]]
    ) -> Any:
        """`value` parsed as JSON of `kind` (array or object); None (and a violation) if not."""
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(field, f"is not valid JSON: {exc.args[0]}", "Format")
            return None
        if not isinstance(parsed, kind):
            wanted = "an array" if kind is list else "an object"
            self.fail(field, f"must be a JSON {wanted}", "Format")
            return None
        return parsed

    def unknown(self, fields: Iterable[str], description: str) -> None:
        for field in fields:
            self.fail(field, description)
