"""Templates checked and rendered through the engine, with every problem as a `Problem`.

Writes turn problems into a 400 naming each one; preview/validate and validate report them in
their result instead. Either way a problem names the field, and for template errors the
construct and its line and column in the decoded source.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from switchboard.server.core.errors import FieldViolation, validation_error
from switchboard.server.templates import catalog
from switchboard.server.templates.engine import (
    CompiledTemplate,
    TemplateError,
    check_arguments,
    compile_template,
)
from switchboard.server.templates.models import Channel

Mode = Literal["text", "html"]


@dataclass(frozen=True)
class Problem:
    field: str  # the client's JSON path: data.content, data.subject, arguments.<name>, …
    message: str
    construct: str = ""
    line: int = 0
    column: int = 0

    def describe(self) -> str:
        if self.line:
            where = f"line {self.line}, column {self.column}"
            if self.construct:
                return f"{self.message} ({self.construct!r} at {where})"
            return f"{self.message} (at {where})"
        return self.message

    def snapshot(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "construct": self.construct,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


def raise_problems(problems: Sequence[Problem]) -> None:
    """A 400 naming every problem (each a field violation), if there are any."""
    if problems:
        violations = [FieldViolation(p.field, p.describe(), "Template") for p in problems]
        raise validation_error(violations)


def content_mode(channel: str) -> Mode:
    """Email bodies are HTML; SMS and WhatsApp content and email subjects are text."""
    return "html" if channel == Channel.EMAIL else "text"


def _from_error(field: str, error: TemplateError) -> Problem:
    return Problem(
        field=field,
        message=str(error.message),
        construct=str(error.construct or ""),
        line=int(error.line or 0),
        column=int(error.column or 0),
    )


def compile_source(
    field: str, source: str, mode: Mode
) -> tuple[CompiledTemplate | None, list[Problem]]:
    try:
        return compile_template(source, mode), []
    except TemplateError as exc:
        return None, [_from_error(field, exc)]


_POSITION = re.compile(r"^line (\d+), column (\d+): (.*)$", re.DOTALL)


def argument_problems(
    field: str, compiled: CompiledTemplate, declared: Mapping[str, str]
) -> list[Problem]:
    """The engine's findings about the arguments `compiled` references, against `declared`
    (each "line L, column C: ${path}: what")."""
    problems: list[Problem] = []
    for text in check_arguments(compiled, declared):
        match = _POSITION.match(text)
        if match is None:
            problems.append(Problem(field, text))
            continue
        message, construct = match[3], ""
        if message.startswith("${") and ": " in message:
            construct, message = message.split(": ", 1)
        problems.append(Problem(field, message, construct, int(match[1]), int(match[2])))
    return problems


def value_problems(kind: catalog.CommunicationType, values: Mapping[str, Any]) -> list[Problem]:
    return [Problem(f"arguments.{name}", text) for name, text in catalog.check_values(kind, values)]


def render(
    field: str, compiled: CompiledTemplate, arguments: Mapping[str, Any]
) -> tuple[str | None, list[Problem]]:
    try:
        return compiled.render(arguments), []
    except TemplateError as exc:
        return None, [_from_error(field, exc)]


def plain(value: Any) -> Any:
    """JSON from a protobuf Struct as templates should see it: integral numbers as ints (Struct
    keeps every number as a double, and `3` must not render as `3.0`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def unified_diff(expected: Mapping[str, str | None], actual: Mapping[str, str | None]) -> str:
    """One unified diff (expected → rendered) per field that differs, concatenated."""
    parts: list[str] = []
    for name, want in expected.items():
        got = actual.get(name)
        if want == got:
            continue
        lines = difflib.unified_diff(
            (want or "").splitlines(keepends=True),
            (got or "").splitlines(keepends=True),
            fromfile=f"expected/{name}",
            tofile=f"rendered/{name}",
        )
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        parts.append(text)
    return "".join(parts)
