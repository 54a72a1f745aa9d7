"""The criteria language of dynamic groups (docs/rest-families.md), compiled to SQL over the
contacts table.

    {"all": [{"field": "primary_addr_country", "op": "eq", "value": "ES"},
             {"any": [{"field": "extended_attributes.tier", "op": "in", "value": ["gold"]},
                      {"not": {"field": "primary_email_addr", "op": "exists"}}]}]}

A condition names a contact attribute (its documented name, a short alias such as `country`,
`fast_access.<name>`, or `extended_attributes.<key>[.<key>…]`), an operator and a value.
Membership is evaluated by the database, so a group of any size is counted and listed without
loading its contacts. Any problem is a 400 / 1017 naming where in the expression it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, false, func, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement as Column

from switchboard.server.core.errors import FieldViolation, InvalidCriteria
from switchboard.server.core.listing import parse_instant

MAX_TEXT = 8192
MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_IN_VALUES = 1000
MAX_VALUE_LENGTH = 256

OPERATORS = ("eq", "ne", "in", "contains", "starts_with", "gt", "gte", "lt", "lte", "exists")

# Attributes criteria may test: documented names, plus short aliases people reach for.
TEXT_FIELDS = (
    "id",
    "external_id",
    "first_name",
    "last_name",
    "birth_date",
    "first_acquisition_date",
    "last_acquisition_date",
    "primary_mdn",
    "primary_addr_line1",
    "primary_addr_line2",
    "primary_addr_city",
    "primary_addr_zip",
    "primary_addr_state",
    "primary_addr_country",
    "primary_email_addr",
    "primary_social_handle",
    "preferred_language",
    "voice_preference",
    "time_zone",
    "application_id",
)
ALIASES = {
    "country": "primary_addr_country",
    "city": "primary_addr_city",
    "zip": "primary_addr_zip",
    "state": "primary_addr_state",
    "email": "primary_email_addr",
    "mdn": "primary_mdn",
    "phone": "primary_mdn",
    "language": "preferred_language",
}
TIME_FIELDS = {"created_date": "created_at", "last_updated_date": "updated_at"}
JSON_ROOTS = ("extended_attributes", "fast_access")
_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass(frozen=True)
class Criteria:
    """A validated expression; `text` is its canonical JSON."""

    tree: dict[str, Any]
    text: str

    def where(self, table: Table) -> ColumnElement[bool]:
        return _compile(self.tree, table)


def _invalid(where: str, description: str) -> InvalidCriteria:
    return InvalidCriteria(
        f"invalid criteria at {where}: {description}",
        violations=[FieldViolation("criteria" + where.removeprefix("$"), description, "Criteria")],
    )


def parse(text: str) -> Criteria:
    """Validate a criteria expression (400 / 1017 on any problem)."""
    if len(text) > MAX_TEXT:
        raise _invalid("$", f"is longer than {MAX_TEXT} characters")
    try:
        tree = json.loads(text)
    except ValueError as exc:
        raise _invalid("$", f"is not valid JSON: {exc.args[0]}") from exc
    counter = [0]
    _check(tree, "$", 0, counter)
    return Criteria(tree=tree, text=json.dumps(tree, separators=(",", ":"), ensure_ascii=False))


def _check(node: Any, where: str, depth: int, counter: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise _invalid(where, f"nests deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict):
        raise _invalid(where, "must be an object")
    groups = [k for k in ("all", "any", "not") if k in node]
    if groups:
        if len(node) != 1:
            raise _invalid(where, f"'{groups[0]}' must be the object's only key")
        key = groups[0]
        if key == "not":
            _check(node["not"], f"{where}.not", depth + 1, counter)
            return
        items = node[key]
        if not isinstance(items, list) or not items:
            raise _invalid(f"{where}.{key}", "must be a non-empty array")
        for i, item in enumerate(items):
            _check(item, f"{where}.{key}[{i}]", depth + 1, counter)
        return
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise _invalid(where, f"has more than {MAX_CONDITIONS} conditions")
    unknown = set(node) - {"field", "op", "value"}
    if unknown:
        raise _invalid(where, f"unknown key(s) {', '.join(sorted(unknown))}")
    field, op = node.get("field"), node.get("op")
    if not isinstance(field, str) or not field:
        raise _invalid(where, "needs a 'field'")
    kind, _ = _field_kind(field, where)
    if op not in OPERATORS:
        raise _invalid(where, f"'op' must be one of {', '.join(OPERATORS)}")
    value = node.get("value")
    if kind == "time" and op in ("contains", "starts_with"):
        raise _invalid(where, f"'{op}' does not apply to a time")
    if kind == "time" and op != "exists":
        for item in value if isinstance(value, list) else [value]:
            if parse_instant(str(item)) is None:
                raise _invalid(where, f"{item!r} is not an RFC 3339 time or YYYY-MM-DD date")
    if op == "exists":
        if "value" in node and not isinstance(value, bool):
            raise _invalid(where, "'exists' takes true, false or no value")
        return
    if "value" not in node:
        raise _invalid(where, f"'{op}' needs a 'value'")
    if op == "in":
        if not isinstance(value, list) or not value or len(value) > MAX_IN_VALUES:
            raise _invalid(where, f"'in' needs an array of 1 to {MAX_IN_VALUES} values")
        for item in value:
            _check_scalar(item, where)
        return
    _check_scalar(value, where)
    if op in ("contains", "starts_with") and not isinstance(value, str):
        raise _invalid(where, f"'{op}' needs a string value")


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _invalid(where, "values must be strings or numbers")
    if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
        raise _invalid(where, f"values are at most {MAX_VALUE_LENGTH} characters")


def _field_kind(field: str, where: str) -> tuple[str, tuple[str, ...]]:
    """("text"|"time"|"json", path): what a field name refers to."""
    name = ALIASES.get(field, field)
    if name in TEXT_FIELDS:
        return "text", (name,)
    if name in TIME_FIELDS:
        return "time", (TIME_FIELDS[name],)
    root, _, rest = name.partition(".")
    if root in JSON_ROOTS and rest:
        keys = tuple(rest.split("."))
        if all(_KEY.match(k) for k in keys) and len(keys) <= MAX_DEPTH:
            return "json", (root, *keys)
    raise _invalid(where, f"unknown field {field!r}")


def _compile(node: dict[str, Any], table: Table) -> ColumnElement[bool]:
    if "all" in node:
        return and_(true(), *(_compile(n, table) for n in node["all"]))
    if "any" in node:
        return or_(false(), *(_compile(n, table) for n in node["any"]))
    if "not" in node:
        return not_(_compile(node["not"], table))
    return _condition(node, table)


def _condition(node: dict[str, Any], table: Table) -> ColumnElement[bool]:
    kind, path = _field_kind(node["field"], "$")
    op = node["op"]
    value: Any = node.get("value")
    numeric = isinstance(value, int | float) or (
        op == "in" and all(isinstance(v, int | float) for v in value)
    )
    column: Column[Any]
    if kind == "json":
        element = table.c[path[0]][path[1:]]  # JSON path: json_extract / #>
        column = element.as_float() if numeric and op != "exists" else element.as_string()
    else:
        column = table.c[path[0]]
    if op == "exists":
        present = column.is_not(None) if kind != "text" else and_(column.is_not(None), column != "")
        return present if value is not False else not_(present)
    if kind == "time":
        value = [_time_value(v) for v in value] if op == "in" else _time_value(value)
    if kind == "text" and numeric:
        value = [str(v) for v in value] if op == "in" else str(value)
    if op == "eq":
        return _bool(column == value)
    if op == "ne":
        return or_(column.is_(None), column != value)
    if op == "in":
        return column.in_(value)
    if op == "contains":
        return func.lower(column).contains(str(value).lower(), autoescape=True)
    if op == "starts_with":
        return func.lower(column).startswith(str(value).lower(), autoescape=True)
    if op == "gt":
        return _bool(column > value)
    if op == "gte":
        return _bool(column >= value)
    if op == "lt":
        return _bool(column < value)
    return _bool(column <= value)


def _bool(expression: Any) -> ColumnElement[bool]:
    """Comparisons with an untyped (JSON-sourced) value type as Any; they are boolean clauses."""
    return cast(ColumnElement[bool], expression)


def _time_value(value: Any) -> Any:
    instant = parse_instant(str(value))
    assert instant is not None  # checked by parse()
    return instant
