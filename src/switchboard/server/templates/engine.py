"""The template engine of the Communications API: a documented, strict subset of Thymeleaf 3.

Templates are compiled once (`compile_template`, cached) into a tree of closures; rendering walks
that tree and never re-parses. Anything outside the subset below is a `TemplateSyntaxError`
naming the construct and its line:column: nothing unsupported is ever passed through silently.

Modes
    "text"  SMS, WhatsApp, email subjects. Literal text passes through unchanged; only inline
            expressions are processed. Thymeleaf's text-mode element blocks (`[# …]`, `[/]`)
            are refused.
    "html"  Email bodies. Markup is parsed with `html.parser.HTMLParser` (convert_charrefs=False)
            and every byte the engine does not process is copied from the source as written
            (doctype, comments, conditional comments, entity and character references, attribute
            quoting, whitespace, unclosed or stray tags). Inline expressions are processed in
            text, comments, CDATA sections and (an extension: Thymeleaf leaves them literal)
            quoted attribute values; plus the attributes below.

Inline expressions
    `[(${path})]`  unescaped: the value's text as is.
    `[[${path}]]`  escaped: in html mode `html.escape(text, quote=True)`; in text mode the text as
                   is (Thymeleaf's TEXT mode has no escaping, so both forms are the same there).
    Whitespace is allowed inside the brackets and braces. Any `[[` or `[(` starts an inline
    expression: one that is unclosed, empty or not a single `${path}` is an error. A literal `[[`
    can be written `&#91;[` in html mode; text mode has no escape for it.

Paths: `${name}`, `${name.member}`, `${name[0]}`, `${name['key']}`, `${name["key"]}` and any chain
    of those. Names are identifiers that may also contain `-` after their first character (as
    argument names do; Thymeleaf would read `a-b` as a subtraction, which is not supported here).
    Quoted keys have no escapes. Method calls, operators inside `${…}`, safe navigation, `#…`
    utility objects, `@…` beans, `*{…}`, `#{…}`, `@{…}` and `~{…}` are errors.

Dotted argument names: argument maps may hold keys with dots (`attached.txt`). The leading names
    of a path, up to its first `[…]`, are matched longest first against the arguments: `${a.b.c}`
    is the argument "a.b.c" if there is one, else "a.b" then member "c", else "a" then "b", "c".
    th:each variables shadow arguments and take no part in this rule.

HTML attributes (also as `data-th-*`; `xmlns:th` is dropped, as Thymeleaf does)
    th:text="${path}" / th:utext="${path}"   replace the element's content (escaped / unescaped);
                                             not on void or self-closed elements.
    th:if="cond" / th:unless="cond"          keep or drop the element (both may be present).
    th:each="item : ${path}"                 repeat the element once per item; the variable
    th:each="item, stat : ${path}"           shadows arguments. The status variable (implicitly
                                             `itemStat`) has index, count, size, current, even,
                                             odd, first, last. Lists iterate their items, maps
                                             their entries (`.key`, `.value`; shown `k=v`), null
                                             iterates zero times; anything else is a RenderError.
    Precedence as in Thymeleaf: th:each repeats the element, th:if/th:unless are then evaluated
    for each repetition, then th:text/th:utext. `<th:block>` takes these attributes and renders
    only its content. An element carrying th:* attributes must be void, self-closed or closed by
    an explicit end tag. Every other th:* attribute or th:* element is an error.

Conditions (th:if / th:unless)
    `${path}` by Thymeleaf truthiness: null, false, 0, and strings that trimmed and lowercased are
    "false", "off" or "no" are false; everything else (including "" and empty lists) is true.
    `${path} OP literal` with OP one of == != < > <= >= (or eq ne neq lt gt le ge) and a literal
    'string', number, true, false or null; `!`/`not` before a `${path}` or a parenthesised
    condition; `and`, `or`; parentheses. Equality: numerically when both sides read as numbers
    (a numeric string counts, as in Thymeleaf: '007' == 7), else a string value equals a string
    literal with the same text, a boolean equals true/false, null equals null; anything else is
    unequal. Ordering needs a number literal and a value that reads as a number. `!${a} == 'x'`
    is refused as ambiguous: write `${a} != 'x'` or `!(${a} == 'x')`.

Values are shown as Java's toString would: strings as is; null as nothing (as "null" inside a
    list or map); booleans true/false; integers as such; floats as Java's Double.toString
    (shortest digits, as JDK 19+: 45.7, 1.0E20, 5.0E-4), except that an integral float below
    2**53 prints as an integer (3.0 → "3": protobuf Struct carries every JSON number as a
    double); lists `[a, b]`; maps `{k=v, k2=v2}`.

Render errors (`RenderError`, with the line:column of the expression): a missing argument
    (`MissingArgument`, also in conditions: pass null explicitly for "absent"), a missing map key,
    an index out of range, member access or indexing on a value that has none, iterating a
    non-list, ordering a non-number. `check_arguments` finds most of these statically from the
    communication type's declared argument types; `missing_arguments` from actual values.

HTML limits: the parser applies none of HTML's implied-end-tag rules, so which element an end
    tag closes is decided by name only (the nearest open element of that name); that is why an
    element carrying th:* attributes needs its own explicit end tag. Inline expressions are
    processed inside <script> and <style> too (escaped as HTML). th:* values are read after
    unescaping character references (`&gt;`, `&quot;`). Markup HTMLParser cannot read is an
    error when it holds th:*, and is otherwise copied as text.

Limits: sources up to MAX_SOURCE_CHARS characters; th:* elements nested up to MAX_NESTING deep;
    line:column count characters from 1, lines end at "\\n"; positions inside an attribute value
    that contains character references point at the value's start. The compile cache holds
    CACHE_SIZE templates, keyed by mode and source.
"""

from __future__ import annotations

import html
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any, Literal, NoReturn, cast

__all__ = [
    "ARGUMENT_TYPES",
    "CACHE_SIZE",
    "MAX_SOURCE_CHARS",
    "CompiledTemplate",
    "MissingArgument",
    "Reference",
    "RenderError",
    "TemplateError",
    "TemplateSyntaxError",
    "check_arguments",
    "compile_template",
    "missing_arguments",
    "resolve_argument",
    "to_text",
    "truthy",
]

Mode = Literal["text", "html"]
Usage = Literal["text", "iterable", "condition", "member"]
Segment = str | int

MAX_SOURCE_CHARS = 1024 * 1024
MAX_NESTING = 64  # th:* elements within th:* elements (rendering recurses through them)
CACHE_SIZE = 4096
ARGUMENT_TYPES = frozenset(
    {
        "String",
        "StringList",
        "StringMap",
        "Number",
        "Boolean",
        "Date",
        "Link",
        "LocaleRegion",
        "Image",
        "Attachment",
        "QrCode",
    }
)
SUPPORTED_ATTRIBUTES = ("text", "utext", "if", "unless", "each")
STAT_MEMBERS = frozenset({"index", "count", "size", "current", "even", "odd", "first", "last"})
VOID_ELEMENTS = frozenset(
    {
        "area",
        "base",
        "basefont",
        "bgsound",
        "br",
        "col",
        "embed",
        "frame",
        "hr",
        "img",
        "input",
        "keygen",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)


# -- errors ------------------------------------------------------------------------------------


class TemplateError(Exception):
    """A problem in a template; `construct` is the offending text as written."""

    def __init__(self, construct: str, line: int, column: int, message: str) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.construct = construct
        self.line = line
        self.column = column
        self.message = message

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class TemplateSyntaxError(TemplateError):
    """Unsupported, unclosed or malformed construct (found when compiling)."""


class RenderError(TemplateError):
    """The arguments do not fit the template (found when rendering)."""


class MissingArgument(RenderError):
    """An argument the template needs is not in the arguments; `name` is what was looked up."""

    def __init__(
        self, construct: str, line: int, column: int, name: str, message: str | None = None
    ) -> None:
        super().__init__(
            construct, line, column, message or f"missing argument {name!r} in {construct}"
        )
        self.name = name


@dataclass(frozen=True)
class Reference:
    """Where a template uses an argument.

    `path` is the path as written, from the argument: `${attached.txt}` gives ("attached", "txt")
    and `resolve_argument` applies the dotted-name rule against known names. `usage`: "text" the
    value is shown, "condition" tested by th:if/th:unless, "iterable" repeated by th:each,
    "member" an item of the iterable at `path` is used with `.member`/`[index]` (or iterated)
    through a th:each variable.
    """

    path: tuple[Segment, ...]
    usage: Usage
    line: int
    column: int


# -- values ------------------------------------------------------------------------------------


class _Entry:
    """A map entry as th:each yields it (Java's Map.Entry)."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key = key
        self.value = value


def _double(x: float) -> str:
    """Java's Double.toString, except integral values below 2**53 print as integers."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    if 1e-3 <= abs(x) < 1e7:
        return repr(x)  # shortest round-trip digits, positional in this range: as Java
    sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    exponent = cast(int, exponent) + len(digits) - len(stripped)
    point = len(stripped) + exponent  # x = 0.<stripped> * 10**point
    minus = "-" if sign else ""
    if 1e-3 <= abs(x) < 1e7:
        if point <= 0:
            return f"{minus}0.{'0' * -point}{stripped}"
        if point >= len(stripped):
            return f"{minus}{stripped}{'0' * (point - len(stripped))}.0"
        return f"{minus}{stripped[:point]}.{stripped[point:]}"
    return f"{minus}{stripped[0]}.{stripped[1:] or '0'}E{point - 1}"


def _nested(value: Any) -> str:
    return "null" if value is None else to_text(value)


def to_text(value: Any) -> str:
    """A value as Thymeleaf shows it (Java toString); null is the empty string."""
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _double(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join([_nested(v) for v in value]) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join([f"{_nested(k)}={_nested(v)}" for k, v in value.items()]) + "}"
    if isinstance(value, _Entry):
        return f"{_nested(value.key)}={_nested(value.value)}"
    return str(value)


def truthy(value: Any) -> bool:
    """Thymeleaf's evaluateAsBoolean."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "off", "no")
    return True


_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _as_number(value: Any) -> float | None:
    """The value as a number the way Thymeleaf compares (numbers and numeric strings)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER_TEXT.fullmatch(text):
            return float(text)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, _Entry):
        return "map entry"
    return type(value).__name__


# -- source positions --------------------------------------------------------------------------


class _Source:
    def __init__(self, text: str) -> None:
        self.text = text
        self.line_starts = [0]
        start = text.find("\n")
        while start >= 0:
            self.line_starts.append(start + 1)
            start = text.find("\n", start + 1)

    def where(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def offset(self, line: int, column0: int) -> int:
        return self.line_starts[line - 1] + column0

    def fail(self, offset: int, construct: str, message: str) -> NoReturn:
        line, column = self.where(offset)
        raise TemplateSyntaxError(construct, line, column, message)


@dataclass(frozen=True, slots=True)
class _Span:
    """A piece of text to parse: `text[start:end]`; positions map to the source at `base`
    (+ the index within the text when `exact`; attribute values with references are not)."""

    src: _Source
    text: str
    start: int
    end: int
    base: int
    exact: bool = True

    @classmethod
    def of(cls, src: _Source, start: int, end: int) -> _Span:
        return cls(src, src.text, start, end, 0)

    def pos(self, i: int) -> int:
        return self.base + i if self.exact else self.base

    def fail(self, i: int, construct: str, message: str) -> NoReturn:
        self.src.fail(self.pos(i), construct, message)

    def skip_ws(self, i: int) -> int:
        text, end = self.text, self.end
        while i < end and text[i].isspace():
            i += 1
        return i

    def until(self, i: int, stop: str, limit: int = 60) -> str:
        """The construct starting at i, up to and including `stop` (or a line's end)."""
        j = self.text.find(stop, i, self.end)
        k = self.text.find("\n", i, self.end)
        end = j + len(stop) if j >= 0 and (k < 0 or j < k) else (k if k >= 0 else self.end)
        piece = self.text[i:end].rstrip()
        return piece if len(piece) <= limit else piece[: limit - 1] + "…"


# -- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Path:
    segments: tuple[Segment, ...]
    run: int  # leading name segments: the candidates of the dotted-name rule
    text: str  # "${…}" as written
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class _Loop:
    var: str
    stat: str
    source: _Use  # the iterable


@dataclass(frozen=True, slots=True)
class _Use:
    path: _Path
    usage: Usage
    loop: _Loop | None  # set when the path starts at a th:each variable
    op: str | None = None  # comparison operator in a condition
    literal: Any = None


_Scope = Mapping[str, tuple[_Loop, bool]]  # name → (loop, is the status variable)

_NAME_START = re.compile(r"[^\W\d]")
_NAME = re.compile(r"[^\W\d][\w-]*")
_NAME_AFTER_DOT = re.compile(r"[\w-]+")
_INDEX = re.compile(r"""\[\s*(?:(\d+)|'([^']*)'|"([^"]*)")\s*\]""")
_OPERATOR_CHARS = "=!<>+-*/%&|^~"
_EXPRESSION_KINDS = {
    "#": "message expressions #{…}",
    "*": "selection expressions *{…}",
    "@": "link expressions @{…}",
    "~": "fragment expressions ~{…}",
}


def _parse_path(span: _Span, i: int) -> tuple[_Path, int]:
    """`${path}` starting at i (text[i] == '$'); returns the path and the index after '}'."""
    text, end = span.text, span.end
    if not text.startswith("${", i) or i + 1 >= end:
        _not_a_path(span, i)
    j = span.skip_ws(i + 2)
    if j >= end:
        span.fail(i, span.until(i, "}"), "unclosed ${")
    c = text[j]
    if c == "}":
        span.fail(i, text[i : j + 1], "empty expression ${}")
    if c == "#":
        m = _NAME.match(text, j + 1, end)
        what = "#" + (m.group() if m else "")
        span.fail(j, what, f"utility objects and expression variables ({what}) are not supported")
    if c == "@":
        span.fail(j, span.until(j, "}"), "bean references (@…) are not supported")
    name = _NAME.match(text, j, end)
    if name is None:
        span.fail(j, span.until(i, "}"), "expected an argument name in ${…}")
    segments: list[Segment] = [name.group()]
    run = 1
    last_name_at = j
    j = name.end()
    while j < end:
        c = text[j]
        if c == ".":
            m = _NAME_AFTER_DOT.match(text, j + 1, end)
            if m is None:
                span.fail(j, span.until(i, "}"), "expected a name after '.'")
            segments.append(m.group())
            if run == len(segments) - 1:
                run += 1
            last_name_at = j + 1
            j = m.end()
        elif c == "[":
            m = _INDEX.match(text, j, end)
            if m is None:
                span.fail(j, span.until(j, "]"), "an index must be [number], ['key'] or [\"key\"]")
            number, single, double = m.groups()
            segments.append(int(number) if number is not None else (single or double or ""))
            j = m.end()
        else:
            break
    j = span.skip_ws(j)
    if j >= end:
        span.fail(i, span.until(i, "}"), "unclosed ${")
    c = text[j]
    if c == "}":
        line, column = span.src.where(span.pos(i))
        return _Path(tuple(segments), run, text[i : j + 1], line, column), j + 1
    if c in "])":
        span.fail(i, span.until(i, c), "unclosed ${: expected }")
    if c == "(":
        call = text[last_name_at:j].strip() + "()"
        span.fail(last_name_at, call, f"method calls are not supported: {call}")
    if text.startswith("?.", j):
        span.fail(j, "?.", "safe navigation ?. is not supported")
    if c == "?":
        span.fail(j, "?", "conditional and Elvis operators are not supported")
    if c in _OPERATOR_CHARS or _NAME_START.match(c):
        op = re.match(r"[=!<>]=?|[^\s\w]|\w+", text[j:end])
        token = op.group() if op else c
        span.fail(
            j,
            token,
            f"operators inside ${{…}} are not supported ({token!r}); "
            "in th:if write the comparison outside the braces: ${a} == 'x'",
        )
    span.fail(j, c, f"unexpected {c!r} in ${{…}}")


def _not_a_path(span: _Span, i: int) -> NoReturn:
    text = span.text
    c = text[i] if i < span.end else ""
    if c in _EXPRESSION_KINDS and text.startswith("{", i + 1):
        construct = span.until(i, "}")
        span.fail(i, construct, f"{_EXPRESSION_KINDS[c]} are not supported: {construct}")
    if c in ("'", '"'):
        close = text.find(c, i + 1, span.end)
        literal = text[i : close + 1] if close > 0 else span.until(i, " ", 40)
        span.fail(i, literal, "text literals are not supported here; use ${…}")
    if c == "|":
        span.fail(i, span.until(i, "|"), "literal substitutions |…| are not supported")
    span.fail(i, span.until(i, " "), "expected ${…}")


# Conditions -------------------------------------------------------------------------------------

_Cond = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]
_Get = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
_Render = Callable[[Mapping[str, Any], Mapping[str, Any]], str]
_Part = str | _Render

_WORD_OPS = {"eq": "==", "ne": "!=", "neq": "!=", "lt": "<", "gt": ">", "le": "<=", "ge": ">="}
_LITERAL_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z_]\w*")


class _ConditionParser:
    """th:if / th:unless: or / and / not / comparison of a ${path} with a literal."""

    def __init__(self, compiler: _Compiler, span: _Span, scope: _Scope, uses: list[_Use]) -> None:
        self.c = compiler
        self.span = span
        self.scope = scope
        self.uses = uses
        self.i = span.start

    def parse(self) -> _Cond:
        span = self.span
        self.i = span.skip_ws(self.i)
        if self.i >= span.end:
            span.fail(span.start, "", "empty condition")
        cond = self._or()
        if self.i < span.end:
            self._unexpected()
        return cond

    # tokens
    def _peek_word(self) -> str | None:
        m = _WORD.match(self.span.text, self.i, self.span.end)
        return m.group() if m else None

    def _peek_op(self) -> str | None:
        text, i = self.span.text, self.i
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if text.startswith(op, i) and i + len(op) <= self.span.end:
                return op
        word = self._peek_word()
        if word in _WORD_OPS:
            return word
        return None

    def _advance(self, n: int) -> None:
        self.i = self.span.skip_ws(self.i + n)

    def _unexpected(self) -> NoReturn:
        span, i = self.span, self.i
        text = span.text
        c = text[i]
        if c in "+-*/%":
            span.fail(i, c, f"arithmetic operators are not supported ({c!r})")
        if text.startswith("&&", i) or text.startswith("||", i):
            span.fail(i, text[i : i + 2], f"{text[i : i + 2]!r} is not an operator: use and / or")
        if c == "?":
            span.fail(i, c, "conditional and Elvis operators are not supported")
        if c in _EXPRESSION_KINDS or c in "'\"|":
            _not_a_path(span, i)
        token = span.until(i, " ", 30)
        span.fail(i, token, f"unexpected {token!r} in condition")

    # grammar
    def _or(self) -> _Cond:
        parts = [self._and()]
        while self._peek_word() == "or":
            self._advance(2)
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        alternatives = tuple(parts)
        return lambda a, s: any(p(a, s) for p in alternatives)

    def _and(self) -> _Cond:
        parts = [self._unary()]
        while self._peek_word() == "and":
            self._advance(3)
            parts.append(self._unary())
        if len(parts) == 1:
            return parts[0]
        all_of = tuple(parts)
        return lambda a, s: all(p(a, s) for p in all_of)

    def _negation(self) -> bool:
        text, i = self.span.text, self.i
        if text.startswith("!", i) and not text.startswith("!=", i):
            self._advance(1)
            return True
        if self._peek_word() == "not":
            self._advance(3)
            return True
        return False

    def _unary(self) -> _Cond:
        if not self._negation():
            return self._comparison()
        start = self.i
        inner = self._unary() if self._negation_ahead() else self._operand()
        if self._peek_op() is not None:
            self.span.fail(
                start,
                self.span.text[start : self.i].strip(),
                "negating a comparison is ambiguous: write ${a} != 'x' or !(${a} == 'x')",
            )
        return lambda a, s: not inner(a, s)

    def _negation_ahead(self) -> bool:
        text, i = self.span.text, self.i
        return (text.startswith("!", i) and not text.startswith("!=", i)) or (
            self._peek_word() == "not"
        )

    def _operand(self) -> _Cond:
        """A ${path} or a parenthesised condition."""
        span, text = self.span, self.span.text
        if self.i >= span.end:
            span.fail(span.start, text[span.start : span.end], "incomplete condition")
        if text[self.i] == "(":
            open_at = self.i
            self._advance(1)
            inner = self._or()
            if self.i >= span.end or text[self.i] != ")":
                span.fail(open_at, "(", "unclosed (")
            self._advance(1)
            return inner
        if text.startswith("${", self.i):
            path, j = _parse_path(span, self.i)
            self.i = span.skip_ws(j)
            get = self.c.getter(path, "condition", self.scope, self.uses)
            return lambda a, s: truthy(get(a, s))
        if self._peek_word() in _LITERAL_WORDS or _NUMBER.match(text, self.i, span.end):
            span.fail(self.i, span.until(self.i, " ", 30), "a condition must test a ${…}")
        self._unexpected()

    def _comparison(self) -> _Cond:
        span, text = self.span, self.span.text
        if self.i >= span.end:
            span.fail(span.start, text[span.start : span.end], "incomplete condition")
        if not text.startswith("${", self.i):
            if (
                text[self.i] in "'\""
                or self._peek_word() in _LITERAL_WORDS
                or _NUMBER.match(text, self.i, span.end)
            ):
                span.fail(
                    self.i,
                    span.until(self.i, " ", 30),
                    "the left side of a comparison must be a ${…}",
                )
            cond = self._operand()
            if self._peek_op() is not None:
                span.fail(self.i, self._peek_op() or "", "only a ${…} can be compared")
            return cond
        path, j = _parse_path(span, self.i)
        self.i = span.skip_ws(j)
        op = self._peek_op()
        if op is None:
            get = self.c.getter(path, "condition", self.scope, self.uses)
            return lambda a, s: truthy(get(a, s))
        op_at = self.i
        self._advance(len(op))
        op = _WORD_OPS.get(op, op)
        literal = self._literal()
        if op in ("<", ">", "<=", ">=") and (
            isinstance(literal, bool) or not isinstance(literal, int | float)
        ):
            span.fail(op_at, op, f"{op} compares numbers: the right side must be a number")
        get = self.c.getter(path, "condition", self.scope, self.uses, op, literal)
        return _comparison(get, op, literal, path)

    def _literal(self) -> Any:
        span, text, i = self.span, self.span.text, self.i
        if i >= span.end:
            span.fail(span.start, text[span.start : span.end], "a comparison needs a literal")
        c = text[i]
        if c in "'\"":
            j = text.find(c, i + 1, span.end)
            if j < 0:
                span.fail(i, span.until(i, " ", 30), "unclosed text literal")
            self.i = span.skip_ws(j + 1)
            return text[i + 1 : j]
        m = _NUMBER.match(text, i, span.end)
        if m:
            self.i = span.skip_ws(m.end())
            return float(m.group()) if "." in m.group() else int(m.group())
        word = self._peek_word()
        if word in _LITERAL_WORDS:
            self._advance(len(word or ""))
            return _LITERAL_WORDS[word or ""]
        if text.startswith("${", i):
            span.fail(i, span.until(i, "}"), "the right side of a comparison must be a literal")
        self._unexpected()


def _comparison(get: _Get, op: str, literal: Any, path: _Path) -> _Cond:
    if op in ("==", "!="):
        want = op == "=="
        if literal is None:
            return lambda a, s: (get(a, s) is None) is want
        if isinstance(literal, bool):
            return lambda a, s: (get(a, s) is literal) is want
        literal_number = _as_number(literal)

        def equals(a: Mapping[str, Any], s: Mapping[str, Any]) -> bool:
            value = get(a, s)
            if literal_number is not None:
                number = _as_number(value)
                if number is not None:
                    return (number == literal_number) is want
            if isinstance(value, str) and isinstance(literal, str):
                return (value == literal) is want
            return not want

        return equals

    limit = float(literal)
    test: Callable[[float], bool] = {
        "<": lambda n: n < limit,
        ">": lambda n: n > limit,
        "<=": lambda n: n <= limit,
        ">=": lambda n: n >= limit,
    }[op]

    def order(a: Mapping[str, Any], s: Mapping[str, Any]) -> bool:
        value = get(a, s)
        number = _as_number(value)
        if number is None:
            raise RenderError(
                path.text,
                path.line,
                path.column,
                f"{path.text} {op} {to_text(literal)}: a {_kind(value)} is not a number",
            )
        return test(number)

    return order


# -- rendering closures ------------------------------------------------------------------------

_EMPTY: Mapping[str, Any] = {}
_html_escape = html.escape
_special = re.compile("[&<>\"']").search


def _escape(text: str) -> str:
    """html.escape(text, quote=True), skipping the work when there is nothing to escape."""
    return text if _special(text) is None else _html_escape(text)


def _fail_step(path: _Path, value: Any, segment: Segment) -> NoReturn:
    what = f"[{segment}]" if isinstance(segment, int) else f"{segment!r}"
    raise RenderError(
        path.text, path.line, path.column, f"{path.text}: cannot read {what} of a {_kind(value)}"
    )


def _step(value: Any, segment: Segment, path: _Path) -> Any:
    if segment.__class__ is str:
        if isinstance(value, Mapping):
            try:
                return value[segment]
            except KeyError:
                raise RenderError(
                    path.text, path.line, path.column, f"{path.text}: no key {segment!r}"
                ) from None
        if isinstance(value, _Entry) and segment in ("key", "value"):
            return value.key if segment == "key" else value.value
        _fail_step(path, value, segment)
    if isinstance(value, list | tuple):
        try:
            return value[cast(int, segment)]
        except IndexError:
            raise RenderError(
                path.text,
                path.line,
                path.column,
                f"{path.text}: index {segment} is out of range (size {len(value)})",
            ) from None
    _fail_step(path, value, segment)


def _candidates(path: _Path) -> tuple[tuple[str, tuple[Segment, ...]], ...]:
    """The dotted-name rule: (argument name, remaining path), longest name first."""
    names = cast(tuple[str, ...], path.segments[: path.run])
    return tuple((".".join(names[:k]), path.segments[k:]) for k in range(len(names), 0, -1))


def resolve_argument(
    path: tuple[Segment, ...], names: Container[str]
) -> tuple[str, tuple[Segment, ...]] | None:
    """Apply the dotted-name rule to a Reference path: (argument name, rest) or None."""
    run = 0
    while run < len(path) and isinstance(path[run], str):
        run += 1
    for k in range(run, 0, -1):
        name = ".".join(cast(tuple[str, ...], path[:k]))
        if name in names:
            return name, path[k:]
    return None


def _missing(path: _Path) -> MissingArgument:
    names = [name for name, _ in _candidates(path)]
    name = names[-1]
    message = None
    if len(names) > 1:
        tried = ", ".join(repr(n) for n in names)
        message = f"missing argument {name!r} in {path.text} (tried {tried})"
    return MissingArgument(path.text, path.line, path.column, name, message)


def _items(value: Any, path: _Path) -> list[Any] | tuple[Any, ...]:
    if isinstance(value, list | tuple):
        return value
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return [_Entry(k, v) for k, v in value.items()]
    raise RenderError(
        path.text, path.line, path.column, f"{path.text}: cannot iterate over a {_kind(value)}"
    )


def _stat_getter(name: str, member: str) -> _Get:
    getters: dict[str, Callable[[tuple[int, int, Any]], Any]] = {
        "index": lambda t: t[0],
        "count": lambda t: t[0] + 1,
        "size": lambda t: t[1],
        "current": lambda t: t[2],
        "even": lambda t: (t[0] + 1) % 2 == 0,
        "odd": lambda t: (t[0] + 1) % 2 == 1,
        "first": lambda t: t[0] == 0,
        "last": lambda t: t[0] == t[1] - 1,
    }
    pick = getters[member]
    return lambda a, s: pick(s[name])


def _text_part(get: _Get, escape: bool) -> _Render:
    if not escape:
        return lambda a, s: to_text(get(a, s))

    def escaped(a: Mapping[str, Any], s: Mapping[str, Any]) -> str:
        value = get(a, s)
        if value.__class__ is str:
            return value if _special(value) is None else _html_escape(value)
        if value.__class__ in (int, float, bool):
            return to_text(value)  # digits, '.', '-', 'E', true/false: nothing to escape
        return _escape(to_text(value))

    return escaped


def _argument_text(path: _Path, escape: bool) -> _Render:
    """The hot path: `${name}` shown as text."""
    key = cast(str, path.segments[0])

    if escape:

        def escaped(a: Mapping[str, Any], s: Mapping[str, Any]) -> str:
            try:
                value = a[key]
            except KeyError:
                raise _missing(path) from None
            if value.__class__ is str:
                return value if _special(value) is None else _html_escape(value)
            return _escape(to_text(value))

        return escaped

    def plain(a: Mapping[str, Any], s: Mapping[str, Any]) -> str:
        try:
            value = a[key]
        except KeyError:
            raise _missing(path) from None
        return value if value.__class__ is str else to_text(value)

    return plain


def _sequence(parts: list[_Part]) -> _Part:
    """Adjacent literals merged; a literal alone stays a string."""
    merged: list[_Part] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + part
                continue
        merged.append(part)
    if not merged:
        return ""
    if len(merged) == 1:
        return merged[0]
    if isinstance(merged[0], str):
        head = merged[0]
        rest = merged[1:]
    else:
        head, rest = "", merged
    pairs: list[tuple[_Render, str]] = []
    for part in rest:
        if isinstance(part, str):
            render, _ = pairs[-1]
            pairs[-1] = (render, part)
        else:
            pairs.append((part, ""))
    if len(pairs) == 1:
        [(f0, l0)] = pairs
        return lambda a, s: head + f0(a, s) + l0
    if len(pairs) == 2:
        (f0, l0), (f1, l1) = pairs
        return lambda a, s: head + f0(a, s) + l0 + f1(a, s) + l1
    frozen = tuple(pairs)

    def many(a: Mapping[str, Any], s: Mapping[str, Any]) -> str:
        return head + "".join([render(a, s) + literal for render, literal in frozen])

    return many


def _as_render(part: _Part) -> _Render:
    if isinstance(part, str):
        return lambda a, s: part
    return part


# -- compiler ----------------------------------------------------------------------------------

_TEXT_OPENERS = re.compile(r"\[(?:\[|\(|#|/[\w:.-]*\])")
_HTML_OPENERS = re.compile(r"\[[\[(]")


class _Compiler:
    def __init__(self, src: _Source, mode: Mode) -> None:
        self.src = src
        self.mode = mode
        self.escape = mode == "html"

    # paths → getters, recording uses
    def getter(
        self,
        path: _Path,
        usage: Usage,
        scope: _Scope,
        uses: list[_Use],
        op: str | None = None,
        literal: Any = None,
    ) -> _Get:
        root = cast(str, path.segments[0])
        bound = scope.get(root)
        if bound is not None:
            loop, is_stat = bound
            if is_stat:
                return self._stat(path, loop)
            uses.append(_Use(path, usage, loop, op, literal))
            rest = path.segments[1:]
            if not rest:
                return lambda a, s: s[root]
            if len(rest) == 1:
                (segment,) = rest

                def loop_member(a: Mapping[str, Any], s: Mapping[str, Any]) -> Any:
                    value = s[root]
                    if value.__class__ is dict:
                        try:
                            return value[segment]
                        except KeyError:
                            pass
                    return _step(value, segment, path)

                return loop_member

            def loop_path(a: Mapping[str, Any], s: Mapping[str, Any]) -> Any:
                value = s[root]
                for segment in rest:
                    value = _step(value, segment, path)
                return value

            return loop_path
        uses.append(_Use(path, usage, None, op, literal))
        candidates = _candidates(path)
        if len(candidates) == 1 and len(path.segments) == 1:
            key = candidates[0][0]

            def argument(a: Mapping[str, Any], s: Mapping[str, Any]) -> Any:
                try:
                    return a[key]
                except KeyError:
                    raise _missing(path) from None

            return argument

        def argument_path(a: Mapping[str, Any], s: Mapping[str, Any]) -> Any:
            for name, rest in candidates:
                if name in a:
                    value = a[name]
                    for segment in rest:
                        value = _step(value, segment, path)
                    return value
            raise _missing(path)

        return argument_path

    def _stat(self, path: _Path, loop: _Loop) -> _Get:
        name = loop.stat
        if len(path.segments) != 2 or path.segments[1] not in STAT_MEMBERS:
            members = ", ".join(sorted(STAT_MEMBERS))
            self.src.fail(
                self.src.offset(path.line, path.column - 1),
                path.text,
                f"{path.text}: an iteration status has only {members}",
            )
        return _stat_getter(name, str(path.segments[1]))

    def text_expression(
        self, path: _Path, escape: bool, scope: _Scope, uses: list[_Use]
    ) -> _Render:
        root = path.segments[0]
        if len(path.segments) == 1 and root not in scope:
            uses.append(_Use(path, "text", None))
            return _argument_text(path, escape)
        return _text_part(self.getter(path, "text", scope, uses), escape)

    # inline expressions in a stretch of text
    def inline(
        self, span: _Span, escape: bool, scope: _Scope, uses: list[_Use], text_mode: bool = False
    ) -> list[_Part]:
        text, end = span.text, span.end
        openers = _TEXT_OPENERS if text_mode else _HTML_OPENERS
        parts: list[_Part] = []
        i = span.start
        while True:
            m = openers.search(text, i, end)
            if m is None:
                parts.append(text[i:end])
                return parts
            at = m.start()
            opener = m.group()
            if opener[1] in "#/":
                span.fail(
                    at,
                    span.until(at, "]", 40),
                    f"text-mode element blocks ({opener[:2]}…]) are not supported",
                )
            parts.append(text[i:at])
            closer = ")]" if opener == "[(" else "]]"
            if text.find(closer, at + 2, end) < 0:
                span.fail(at, span.until(at, "\n", 40), f"unclosed inline expression {opener}")
            j = span.skip_ws(at + 2)
            if text.startswith(closer, j):
                span.fail(at, text[at : j + 2], "empty inline expression")
            if not text.startswith("${", j):
                _not_a_path(span, j)
            path, j = _parse_path(span, j)
            j = span.skip_ws(j)
            if not text.startswith(closer, j):
                if j < end and (text[j] in _OPERATOR_CHARS or text[j] in "?"):
                    span.fail(j, text[j], f"operators are not supported in {opener}…{closer}")
                span.fail(j, span.until(j, closer, 40), f"expected {closer} to close {opener}")
            parts.append(self.text_expression(path, escape and opener == "[[", scope, uses))
            i = j + 2


def _compile_text(src: _Source) -> tuple[_Part, list[_Use]]:
    compiler = _Compiler(src, "text")
    uses: list[_Use] = []
    parts = compiler.inline(_Span.of(src, 0, len(src.text)), False, {}, uses, text_mode=True)
    return _sequence(parts), uses


# -- html --------------------------------------------------------------------------------------


class _Events(HTMLParser):
    """Records where each markup event starts; the raw text of an event runs to the next one."""

    def __init__(self, src: _Source) -> None:
        super().__init__(convert_charrefs=False)
        self.src = src
        # (kind, offset, tag, tag text, self-closed, in cdata)
        self.events: list[tuple[str, int, str, str, bool, bool]] = []

    def _at(self) -> int:
        line, column = self.getpos()
        return self.src.offset(line, column)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        text = self.get_starttag_text() or ""
        self.events.append(("start", self._at(), tag, text, False, False))

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        text = self.get_starttag_text() or ""
        self.events.append(("start", self._at(), tag, text, True, False))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", self._at(), tag, "", False, False))

    def handle_data(self, data: str) -> None:
        self.events.append(("text", self._at(), "", "", False, self.cdata_elem is not None))

    def handle_entityref(self, name: str) -> None:
        self.events.append(("text", self._at(), "", "", False, False))

    def handle_charref(self, name: str) -> None:
        self.events.append(("text", self._at(), "", "", False, False))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", self._at(), "", "", False, False))

    def handle_decl(self, decl: str) -> None:
        self.events.append(("other", self._at(), "", "", False, False))

    def handle_pi(self, data: str) -> None:
        self.events.append(("other", self._at(), "", "", False, False))

    def unknown_decl(self, data: str) -> None:
        self.events.append(("other", self._at(), "", "", False, False))

    def run(self) -> None:
        try:
            self.feed(self.src.text)
            # HTMLParser stops early at some malformed references (`&#;`); feeding nothing
            # resumes it.
            while self.rawdata:
                left = len(self.rawdata)
                self.feed("")
                if len(self.rawdata) >= left:
                    break
            self.close()
        except AssertionError as exc:  # _markupbase refuses some declarations (`<![[`)
            # and has moved its position past the declaration's start by then.
            at = self._at()
            at = max(0, self.src.text.rfind("<!", 0, at + 1))
            span = _Span.of(self.src, at, len(self.src.text))
            self.src.fail(at, span.until(at, ">"), f"markup that cannot be parsed: {exc}")


_ATTRIBUTE = re.compile(
    r"""(?P<ws>(?:\s|/(?!>))*)(?P<name>[^\s/>][^\s/=>]*)"""
    r"""(?:(?P<eq>\s*=+\s*)(?P<value>'[^']*'|"[^"]*"|(?!['"])[^>\s]*))?"""
)
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*")
_TAG_END = re.compile(r"(?:\s|/(?!>))*/?>\Z")
_STRUCTURAL = frozenset(
    {
        "attr",
        "attrappend",
        "attrprepend",
        "assert",
        "block",
        "case",
        "classappend",
        "fragment",
        "include",
        "inline",
        "insert",
        "object",
        "ref",
        "remove",
        "replace",
        "styleappend",
        "switch",
        "with",
    }
)
_NEEDS_WORK = re.compile(r"th:|data-th-|xmlns:th|\[\[|\[\(", re.IGNORECASE)
_END_TAG = re.compile(r"</[^>]*>?")
_LOOP = re.compile(r"\s*([^\W\d][\w-]*)\s*(?:,\s*([^\W\d][\w-]*)\s*)?:\s*")


@dataclass(slots=True)
class _Attribute:
    ws: str
    name: str  # as written
    eq: str
    value: str  # as written, with its quotes
    offset: int  # of the name in the source

    @property
    def key(self) -> str:
        return self.name.lower()

    def th(self) -> str | None:
        """'text' for th:text / data-th-text, None for other attributes."""
        key = self.key
        if key.startswith("th:"):
            return key[3:]
        if key.startswith("data-th-"):
            return key[8:]
        return None


@dataclass(slots=True)
class _Element:
    """An element carrying th:* attributes, or a plain one being collected."""

    tag: str
    offset: int
    scope: _Scope
    uses: list[_Use]
    start: list[_Part] = field(default_factory=list)
    children: list[_Part] = field(default_factory=list)
    active: bool = False  # carries th:* attributes
    block: bool = False  # <th:block>: no tags of its own
    each: tuple[_Path, str, str] | None = None
    each_get: _Get | None = None
    conditions: list[tuple[_Cond, bool]] = field(default_factory=list)
    content: _Render | None = None


class _HtmlCompiler(_Compiler):
    def __init__(self, src: _Source) -> None:
        super().__init__(src, "html")
        self.root = _Element("", 0, {}, [])
        self.stack: list[_Element] = [self.root]

    def compile(self) -> tuple[_Part, list[_Use]]:
        src = self.src
        parser = _Events(src)
        parser.run()
        events = parser.events
        text = src.text
        n = len(events)
        if events and events[0][1] > 0:
            self._text(0, events[0][1], False)
        elif not events and text:
            self._text(0, len(text), False)
        k = 0
        while k < n:
            kind, offset, tag, tag_text, closed, cdata = events[k]
            if kind == "text":
                # Adjacent text events (data, entity and character references) form one run.
                j = k + 1
                while j < n and events[j][0] == "text":
                    cdata = cdata or events[j][5]
                    j += 1
                end = events[j][1] if j < n else len(text)
                self._text(offset, end, cdata)
                k = j
                continue
            end = events[k + 1][1] if k + 1 < n else len(text)
            if kind == "start":
                self._start(tag, offset, tag_text, closed)
                if offset + len(tag_text) < end:
                    self._text(offset + len(tag_text), end, False)
            elif kind == "end":
                self._end(tag, offset, end)
            elif kind == "comment":
                self._comment(offset, end)
            else:
                self._other(offset, end)
            k += 1
        while len(self.stack) > 1:
            self._close_implicitly(self.stack.pop())
        return _sequence(self.root.children), self.root.uses

    @property
    def top(self) -> _Element:
        return self.stack[-1]

    def _text(self, start: int, end: int, cdata: bool) -> None:
        text = self.src.text
        if not cdata and "<" in text[start:end]:
            # HTMLParser hands markup it cannot parse over as text: refuse it if it has th:*.
            lump = text[start:end]
            bad = re.search(r"<[a-zA-Z!/?]", lump)
            if bad and "th:" in lump.lower():
                self.src.fail(
                    start + bad.start(),
                    _Span.of(self.src, start + bad.start(), end).until(start + bad.start(), ">"),
                    "markup that cannot be parsed (unclosed tag or quote?)",
                )
        top = self.top
        top.children.extend(self.inline(_Span.of(self.src, start, end), True, top.scope, top.uses))

    def _comment(self, start: int, end: int) -> None:
        text = self.src.text
        raw = text[start:end]
        if raw.startswith("<!--/*"):
            self.src.fail(
                start,
                "<!--/*",
                "Thymeleaf parser-level comment blocks <!--/* … */--> are not supported",
            )
        inner_start = start + 4 if raw.startswith("<!--") else start
        close = raw.rfind("-->")
        inner_end = start + close if close >= 4 else end
        top = self.top
        top.children.append(text[start:inner_start])
        top.children.extend(
            self.inline(_Span.of(self.src, inner_start, inner_end), True, top.scope, top.uses)
        )
        top.children.append(text[inner_end:end])

    def _other(self, start: int, end: int) -> None:
        text = self.src.text
        raw = text[start:end]
        top = self.top
        if raw.startswith("<![CDATA[") and raw.rstrip().endswith("]]>"):
            inner_end = start + raw.rstrip().rfind("]]>")
            top.children.append(text[start : start + 9])
            top.children.extend(
                self.inline(_Span.of(self.src, start + 9, inner_end), True, top.scope, top.uses)
            )
            top.children.append(text[inner_end:end])
        else:
            top.children.append(raw)

    # elements
    def _attributes(self, tag_text: str, offset: int) -> tuple[str, list[_Attribute], str]:
        head = _TAG_NAME.match(tag_text)
        assert head is not None  # HTMLParser only reports tags that start like this
        attributes: list[_Attribute] = []
        i = head.end()
        while True:
            tail = _TAG_END.match(tag_text, i)
            if tail is not None:
                return head.group(), attributes, tag_text[i:]
            m = _ATTRIBUTE.match(tag_text, i)
            if m is None or m.end() == i:
                self.src.fail(offset + i, tag_text, "cannot read this tag's attributes")
            attributes.append(
                _Attribute(
                    m.group("ws"),
                    m.group("name"),
                    m.group("eq") or "",
                    m.group("value") or "",
                    offset + m.start("name"),
                )
            )
            i = m.end()

    def _value_span(self, attribute: _Attribute) -> _Span:
        value = attribute.value
        start = attribute.offset + len(attribute.name) + len(attribute.eq)
        if value[:1] in ("'", '"'):
            value, start = value[1:-1], start + 1
        if "&" in value:
            unescaped = html.unescape(value)
            if unescaped != value:
                return _Span(self.src, unescaped, 0, len(unescaped), start, exact=False)
        return _Span(self.src, self.src.text, start, start + len(value), 0)

    def _start(self, tag: str, offset: int, tag_text: str, closed: bool) -> None:
        void = closed or tag in VOID_ELEMENTS
        outer = self.top
        if not _NEEDS_WORK.search(tag_text):
            if void:
                outer.children.append(tag_text)
            else:
                element = _Element(tag, offset, outer.scope, outer.uses)
                element.start.append(tag_text)
                self.stack.append(element)
            return
        head, attributes, tail = self._attributes(tag_text, offset)
        th: dict[str, _Attribute] = {}
        element = _Element(tag, offset, outer.scope, outer.uses)
        if tag.startswith("th:"):
            if tag != "th:block":
                self.src.fail(offset, head, f"the element <{tag}> is not supported")
            element.block = element.active = True
        for attribute in attributes:
            name = attribute.th()
            if attribute.key == "xmlns:th":
                continue
            if name is None:
                if element.block:
                    self.src.fail(
                        attribute.offset,
                        attribute.name,
                        f"<th:block> takes only th:* attributes, not {attribute.name}",
                    )
                continue
            if name not in SUPPORTED_ATTRIBUTES:
                supported = ", ".join(f"th:{s}" for s in SUPPORTED_ATTRIBUTES)
                message = f"{attribute.name} is not supported (supported: {supported})"
                if name not in _STRUCTURAL and re.fullmatch(r"[a-z][a-z0-9-]*", name):
                    message += f'; write {name}="[[${{…}}]]" instead'
                self.src.fail(attribute.offset, attribute.name, message)
            if name in th:
                self.src.fail(
                    attribute.offset, attribute.name, f"th:{name} is given twice on this element"
                )
            if not attribute.eq:
                self.src.fail(attribute.offset, attribute.name, f"{attribute.name} needs a value")
            th[name] = attribute
            element.active = True
        if "text" in th and "utext" in th:
            self.src.fail(th["utext"].offset, th["utext"].name, "th:text and th:utext together")
        scope = outer.scope
        uses = outer.uses
        if "each" in th:
            scope = self._each(element, th["each"], scope, uses)
        element.scope = scope
        for name, keep in (("if", True), ("unless", False)):
            if name in th:
                span = self._value_span(th[name])
                parser = _ConditionParser(self, span, scope, uses)
                element.conditions.append((parser.parse(), keep))
        for name in ("text", "utext"):
            if name in th:
                attribute = th[name]
                if void:
                    self.src.fail(
                        attribute.offset,
                        attribute.name,
                        f"{attribute.name} on <{tag}>, which has no content",
                    )
                span = self._value_span(attribute)
                i = span.skip_ws(span.start)
                if i >= span.end:
                    span.fail(span.start, attribute.name, f"{attribute.name} needs a ${{…}}")
                if not span.text.startswith("${", i):
                    _not_a_path(span, i)
                path, j = _parse_path(span, i)
                if span.skip_ws(j) < span.end:
                    j = span.skip_ws(j)
                    span.fail(j, span.until(j, " ", 30), f"{attribute.name} takes a single ${{…}}")
                element.content = self.text_expression(path, name == "text", scope, uses)
                # The content is replaced: what is inside is still checked, but not used.
                element.uses = []
        if not element.block:
            element.start = self._rebuild(head, attributes, tail, scope, uses)
        if void:
            self._finish(element, "", offset)
            return
        if element.active and sum(e.active for e in self.stack) >= MAX_NESTING:
            self.src.fail(offset, head, f"th:* elements nest more than {MAX_NESTING} deep here")
        self.stack.append(element)

    def _each(
        self, element: _Element, attribute: _Attribute, scope: _Scope, uses: list[_Use]
    ) -> _Scope:
        span = self._value_span(attribute)
        m = _LOOP.match(span.text, span.start, span.end)
        if m is None:
            span.fail(
                span.start,
                span.text[span.start : span.end],
                "th:each must be 'item : ${…}' or 'item, status : ${…}'",
            )
        var, stat = m.group(1), m.group(2) or m.group(1) + "Stat"
        if var == stat:
            span.fail(m.start(2), stat, "the item and status variables need different names")
        i = m.end()
        if not span.text.startswith("${", i):
            _not_a_path(span, i)
        path, j = _parse_path(span, i)
        if span.skip_ws(j) < span.end:
            j = span.skip_ws(j)
            span.fail(j, span.until(j, " ", 30), "th:each iterates a single ${…}")
        before = len(uses)
        element.each_get = self.getter(path, "iterable", scope, uses)
        source = uses[before] if len(uses) > before else _Use(path, "iterable", None)
        element.each = (path, var, stat)
        loop = _Loop(var, stat, source)
        inner = dict(scope)
        inner[var] = (loop, False)
        inner[stat] = (loop, True)
        return inner

    def _rebuild(
        self,
        head: str,
        attributes: list[_Attribute],
        tail: str,
        scope: _Scope,
        uses: list[_Use],
    ) -> list[_Part]:
        parts: list[_Part] = [head]
        pending_ws = ""
        for attribute in attributes:
            if attribute.th() is not None or attribute.key == "xmlns:th":
                pending_ws = pending_ws or attribute.ws
                continue
            ws = attribute.ws or pending_ws
            pending_ws = ""
            value = attribute.value
            if not _HTML_OPENERS.search(value):
                parts.append(ws + attribute.name + attribute.eq + value)
                continue
            if value[:1] not in ("'", '"'):
                self.src.fail(
                    attribute.offset,
                    f"{attribute.name}{attribute.eq}{value}",
                    "inline expressions need a quoted attribute value",
                )
            quote = value[0]
            start = attribute.offset + len(attribute.name) + len(attribute.eq) + 1
            parts.append(ws + attribute.name + attribute.eq + quote)
            parts.extend(
                self.inline(_Span.of(self.src, start, start + len(value) - 2), True, scope, uses)
            )
            parts.append(quote)
        parts.append(tail)
        return parts

    def _end(self, tag: str, offset: int, end: int) -> None:
        raw = self.src.text[offset:end]
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                break
        else:
            if tag.startswith("th:"):
                self.src.fail(offset, raw.strip(), f"</{tag}> closes nothing")
            self.top.children.append(raw)  # a stray end tag: kept as written
            return
        while len(self.stack) - 1 > depth:
            self._close_implicitly(self.stack.pop())
        element = self.stack.pop()
        m = _END_TAG.match(raw)
        tag_end = m.end() if m else len(raw)
        self._finish(element, raw[:tag_end], offset)
        if tag_end < len(raw):
            self.top.children.append(raw[tag_end:])

    def _close_implicitly(self, element: _Element) -> None:
        if element.active:
            name = "<th:block>" if element.block else f"<{element.tag}>"
            self.src.fail(
                element.offset,
                f"<{element.tag}",
                f"{name} carries th:* attributes but has no end tag </{element.tag}>",
            )
        self._finish(element, "", element.offset)

    def _finish(self, element: _Element, end_tag: str, offset: int) -> None:
        parent = self.top
        if not element.active:
            parent.children.extend(element.start)
            parent.children.extend(element.children)
            parent.children.append(end_tag)
            return
        content: list[_Part] = (
            [element.content] if element.content is not None else element.children
        )
        parts = [*element.start, *content]
        if not element.block:
            parts.append(end_tag)
        node = _sequence(parts)
        for condition, keep in reversed(element.conditions):
            node = _conditional(node, condition, keep)
        if element.each is not None and element.each_get is not None:
            path, var, stat = element.each
            node = _repeat(_as_render(node), element.each_get, path, var, stat)
        parent.children.append(node)


def _conditional(node: _Part, condition: _Cond, keep: bool) -> _Render:
    render = _as_render(node)
    if keep:
        return lambda a, s: render(a, s) if condition(a, s) else ""
    return lambda a, s: "" if condition(a, s) else render(a, s)


def _repeat(body: _Render, get: _Get, path: _Path, var: str, stat: str) -> _Render:
    def repeat(a: Mapping[str, Any], s: Mapping[str, Any]) -> str:
        items = _items(get(a, s), path)
        if not items:
            return ""
        size = len(items)
        scope = dict(s)
        out = []
        for index, item in enumerate(items):
            scope[var] = item
            scope[stat] = (index, size, item)
            out.append(body(a, scope))
        return "".join(out)

    return repeat


# -- the compiled template ---------------------------------------------------------------------


class CompiledTemplate:
    """A template ready to render; `references` lists where it uses which argument."""

    __slots__ = ("_render", "_uses", "mode", "references", "source")

    def __init__(self, source: str, mode: Mode, body: _Part, uses: list[_Use]) -> None:
        self.source = source
        self.mode: Mode = mode
        self._render: _Render = _as_render(body)
        self._uses = tuple(uses)
        self.references = tuple(_references(uses))

    def render(self, arguments: Mapping[str, Any]) -> str:
        """The text for these arguments; RenderError (or MissingArgument) when they don't fit."""
        return self._render(arguments, _EMPTY)

    def __repr__(self) -> str:
        return f"<CompiledTemplate {self.mode} {len(self.source)} chars>"


def _outermost(use: _Use) -> _Use:
    while use.loop is not None:
        use = use.loop.source
    return use


def _references(uses: list[_Use]) -> list[Reference]:
    out: list[Reference] = []
    for use in uses:
        path = use.path
        if use.loop is None:
            out.append(Reference(path.segments, use.usage, path.line, path.column))
        elif len(path.segments) > 1 or use.usage == "iterable":
            source = _outermost(use)
            if source.loop is None:
                out.append(Reference(source.path.segments, "member", path.line, path.column))
    return out


def compile_template(source: str, mode: Literal["text", "html"]) -> CompiledTemplate:
    """Compile (or fetch from the cache) a template; TemplateSyntaxError when it is not valid."""
    if mode not in ("text", "html"):
        raise ValueError(f"mode must be 'text' or 'html', not {mode!r}")
    return _compile_cached(mode, source)


@lru_cache(maxsize=CACHE_SIZE)
def _compile_cached(mode: Mode, source: str) -> CompiledTemplate:
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateSyntaxError(
            "", 1, 1, f"a template is at most {MAX_SOURCE_CHARS} characters, not {len(source)}"
        )
    src = _Source(source)
    if mode == "text":
        body, uses = _compile_text(src)
    else:
        body, uses = _HtmlCompiler(src).compile()
    return CompiledTemplate(source, mode, body, uses)


# -- static checks -----------------------------------------------------------------------------

_SCALAR_TYPES = ARGUMENT_TYPES - {"StringList", "StringMap"}
_ENTRY = "StringMap entry"


def _type_after(
    type_name: str, segments: tuple[Segment, ...], path: _Path
) -> tuple[str | None, str | None]:
    """(type reached, problem) walking `segments` from a value of `type_name`."""
    for segment in segments:
        shown = f"[{segment}]" if isinstance(segment, int) else f".{segment}"
        if type_name == "StringList":
            if isinstance(segment, int):
                type_name = "String"
                continue
            return None, f"{path.text}: a StringList is indexed by number, not {shown}"
        if type_name == "StringMap":
            if isinstance(segment, str):
                type_name = "String"
                continue
            return None, f"{path.text}: a StringMap is read by key (.key or ['key']), not {shown}"
        if type_name == _ENTRY:
            if segment in ("key", "value"):
                type_name = "String"
                continue
            return None, f"{path.text}: a StringMap entry has only .key and .value, not {shown}"
        return None, f"{path.text}: {shown} on a {type_name}, which has no members or indexes"
    return type_name, None


def _static_type(use: _Use, declared: Mapping[str, str], problems: list[str]) -> str | None:
    """The declared type at the end of a use's path (None when unknown or wrong)."""
    path = use.path
    if use.loop is not None:
        source = use.loop.source
        iterable = _static_type(source, declared, [])
        if iterable is None:
            return None
        item = {"StringList": "String", "StringMap": _ENTRY}.get(iterable)
        if item is None:
            return None  # reported at the th:each
        found, problem = _type_after(item, path.segments[1:], path)
    else:
        resolved = resolve_argument(path.segments, declared)
        if resolved is None:
            name = cast(str, path.segments[0])
            tried = [name for name, _ in _candidates(path)]
            also = f" (nor {', '.join(repr(n) for n in tried[:-1])})" if len(tried) > 1 else ""
            problems.append(
                f"line {path.line}, column {path.column}: {path.text}: unknown argument "
                f"{name!r}{also}: the communication type does not declare it"
            )
            return None
        name, rest = resolved
        found, problem = _type_after(declared[name], rest, path)
    if problem is not None:
        problems.append(f"line {path.line}, column {path.column}: {problem}")
    return found


def check_arguments(template: CompiledTemplate, declared: Mapping[str, str]) -> list[str]:
    """Problems using these declared arguments (name → type), each "line L, column C: …":
    unknown arguments and uses their types do not allow. ValueError for an unknown type name."""
    for name, type_name in declared.items():
        if type_name not in ARGUMENT_TYPES:
            raise ValueError(f"argument {name!r} has unknown type {type_name!r}")
    problems: list[str] = []
    for use in template._uses:
        found = _static_type(use, declared, problems)
        if found is None:
            continue
        path = use.path
        where = f"line {path.line}, column {path.column}: "
        if use.usage == "iterable" and found not in ("StringList", "StringMap"):
            problems.append(f"{where}th:each over {path.text}, a {found}: only lists and maps")
        if use.usage == "condition" and use.op is not None:
            problem = _comparison_problem(found, use.op, use.literal)
            if problem:
                problems.append(f"{where}{path.text} {use.op} {use.literal!r}: {problem}")
    return problems


def _comparison_problem(type_name: str, op: str, literal: Any) -> str | None:
    if op in ("<", ">", "<=", ">="):
        if type_name in ("Number", "String"):
            return None
        return f"a {type_name} is not a number"
    if literal is None:
        return None
    if type_name == "Boolean" and not isinstance(literal, bool):
        return "a Boolean only equals true or false"
    if isinstance(literal, bool) and type_name != "Boolean":
        return f"a {type_name} never equals {to_text(literal)}"
    if type_name == "Number" and _as_number(literal) is None:
        return "a Number never equals a non-numeric text"
    if type_name in ("StringList", "StringMap"):
        return f"a {type_name} is never equal to a literal"
    return None


def missing_arguments(template: CompiledTemplate, arguments: Mapping[str, Any]) -> list[str]:
    """References whose argument is not in `arguments`, each "line L, column C: …"."""
    problems: list[str] = []
    for use in template._uses:
        if use.loop is None and resolve_argument(use.path.segments, arguments) is None:
            path = use.path
            problems.append(f"line {path.line}, column {path.column}: {_missing(path).message}")
    return problems
