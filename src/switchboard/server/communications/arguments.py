"""A communication's arguments: checked against its type, masked, and split by role.

Types come from the templates domain (`CommunicationType.arguments`: name, type, sensitive), and
values are checked by its `value_problem` (the same check examples and template previews get),
plus this domain's limits: Links at most 2048 characters, QR texts 1 to 1000. An argument the
type does not declare is refused; one a rendered template references but the request lacks is
refused too (a template may leave other declared arguments unused).

Roles by type: Attachment arguments are email attachments (the argument's name is the file
name, e.g. `attached.txt`); Image arguments are embedded in email (`cid:<name>@switchboard`); the
QrCode argument (or, failing one, the argument named `qrArgument`) becomes a QR image.

Masking: a sensitive argument's value becomes `****` (each element of an array, each value of an
object) wherever the communication is stored, returned, listed, previewed or logged, and the
rendering stored for audit is made from the masked values. Image and Attachment contents never
appear in stored arguments (`[attachment, N bytes]`).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchboard.server.core.validation import Checks
from switchboard.server.templates.catalog import Argument, decode_base64, value_problem
from switchboard.server.templates.models import ArgumentType

MASK = "****"
QR_TEXT_MAX = 1000
LINK_MAX = 2048
FILE_TYPES = frozenset({ArgumentType.IMAGE.value, ArgumentType.ATTACHMENT.value})
# The documented name of the QR argument, for types that declare it with another type.
QR_ARGUMENT_NAME = "qrArgument"


@dataclass(frozen=True)
class FileArgument:
    """An Image or Attachment argument's decoded content."""

    name: str
    kind: str  # ArgumentType.IMAGE or ArgumentType.ATTACHMENT
    content_type: str
    content: bytes
    sensitive: bool


@dataclass(frozen=True)
class CheckedArguments:
    """A request's arguments once checked: the values (integral numbers as ints), the specs
    by name, and the special ones."""

    values: dict[str, Any]
    specs: dict[str, Argument]
    files: list[FileArgument]
    qr_name: str | None
    qr_text: str | None

    def sensitive(self, name: str) -> bool:
        spec = self.specs.get(name)
        return bool(spec and spec.sensitive)

    def kind(self, name: str) -> str:
        return self.specs[name].type

    def masked(self) -> dict[str, Any]:
        """The values as they may be stored and shown."""
        shown: dict[str, Any] = {}
        for name, value in self.values.items():
            spec = self.specs[name]
            if value is None:
                shown[name] = None
            elif spec.type in FILE_TYPES:
                size = next((len(f.content) for f in self.files if f.name == name), 0)
                label = "image" if spec.type == ArgumentType.IMAGE else "attachment"
                shown[name] = f"[{label}, {size} bytes]"
            elif spec.sensitive:
                shown[name] = mask(value)
            else:
                shown[name] = value
        return shown


def mask(value: Any) -> Any:
    """`****` in place of a value, keeping arrays and objects in shape."""
    if isinstance(value, list):
        return [MASK for _ in value] or [MASK]
    if isinstance(value, dict):
        return dict.fromkeys(value, MASK)
    return MASK


def normalise(value: Any) -> Any:
    """Struct numbers are doubles: integral ones become ints (`3`, not `3.0`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


def _extra_problem(kind: str, value: Any) -> str | None:
    """Limits this domain adds to the catalog's value types."""
    if kind == ArgumentType.LINK and len(value) > LINK_MAX:
        return f"must be at most {LINK_MAX} characters (Link)"
    if kind == ArgumentType.QR_CODE and not 0 < len(value) <= QR_TEXT_MAX:
        return f"must be text of 1 to {QR_TEXT_MAX} characters (QrCode)"
    return None


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


def file_type(name: str, content: bytes) -> str:
    """The MIME type of a file argument: from its name's extension (`attached.txt`), else from
    its first bytes (`embedded_image_png` holding a PNG), else application/octet-stream."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed:
        return guessed
    if content[8:12] == b"WEBP" and content.startswith(b"RIFF"):
        return "image/webp"
    return next((kind for magic, kind in _MAGIC if content.startswith(magic)), None) or (
        "application/octet-stream"
    )


def check(
    checks: Checks,
    type_code: str,
    specs: Sequence[Argument],
    raw: Mapping[str, Any],
    *,
    field: str = "arguments",
) -> CheckedArguments:
    """Check `raw` against the type's declared arguments; problems become violations. An
    explicit null is an absent value."""
    by_name = {spec.name: spec for spec in specs}
    values: dict[str, Any] = {}
    files: list[FileArgument] = []
    for name, given in raw.items():
        spec = by_name.get(name)
        path = f"{field}.{name}"
        if spec is None:
            checks.fail(path, f"is not an argument of type {type_code!r}")
            continue
        if given is None:
            values[name] = None  # present but null: templates test it as absent
            continue
        value = normalise(given)
        problem = value_problem(spec.type, value) or _extra_problem(spec.type, value)
        if problem is not None:
            checks.fail(path, problem, "Type")
            continue
        values[name] = value
        if spec.type in FILE_TYPES:
            content = decode_base64(value) or b""
            files.append(
                FileArgument(name, spec.type, file_type(name, content), content, spec.sensitive)
            )
    qr_name = next(
        (
            s.name
            for s in specs
            if s.type == ArgumentType.QR_CODE and values.get(s.name) is not None
        ),
        None,
    )
    if qr_name is None and isinstance(values.get(QR_ARGUMENT_NAME), str):
        qr_name = QR_ARGUMENT_NAME
    qr_text = None if qr_name is None else str(values[qr_name])
    if qr_name is not None and qr_text is not None and not 0 < len(qr_text) <= QR_TEXT_MAX:
        checks.fail(f"{field}.{qr_name}", f"must be text of 1 to {QR_TEXT_MAX} characters")
    return CheckedArguments(values, by_name, files, qr_name, qr_text)


def missing(uses: Iterable[str], given: CheckedArguments) -> list[str]:
    """Arguments a template uses that the request did not give (sorted)."""
    return sorted(name for name in uses if name not in given.values)
