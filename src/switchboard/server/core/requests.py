"""Request bytes → request message, done by the gateway after authentication.

gRPC would parse a request before any interceptor runs, so bytes that are not the method's
message (garbage, a string field with invalid UTF-8 — what Envoy's transcoder sends for a path
or query parameter such as `%FF`) failed as UNKNOWN naming internal classes, even without a
token. The gateway therefore registers every method with an identity deserializer and parses
here, once the caller is admitted: a request that does not parse is INVALID_ARGUMENT naming the
field when one can be named.

Strings must not contain U+0000 either: PostgreSQL text (and jsonb) cannot store it, and no
field of the contract means it. The check costs one `memchr` per request; only a request whose
bytes contain a zero byte anywhere has its string fields looked at, by walking the wire format
(`_Scan`), which is also how a parse failure finds the field to name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError

from switchboard.server.core.errors import FieldViolation, InvalidArgument, validation_error

Deserializer = Callable[[bytes], Any]

NOT_PROTOBUF = "the request body is not a valid protobuf message of this method's request type"
BAD_UTF8 = "is not valid UTF-8"
HAS_NUL = "must not contain the NUL character (U+0000)"

# Messages whose JSON form has free-form keys: a violation below them names the field holding
# them (their inner fields mean nothing to a client).
_OPEN_MESSAGES = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
    }
)
_MAX_DEPTH = 100  # the protobuf runtime's own recursion limit


class RequestShape:
    """How a method's request fields are named to its clients: `snake_case` (proto names) or the
    JSON names, without the prefix of the field a REST body binds to (clients never see it).
    Also which of its top-level message fields the contract marks REQUIRED: those have presence,
    so their absence is checked here, once for every method. That is what refuses a REST body
    of `null`, which the transcoder turns into an absent body field (`{}` and an empty body
    become an empty one)."""

    def __init__(self, method: MethodDescriptor, *, snake_case: bool) -> None:
        self.descriptor: Descriptor = method.input_type
        self.snake_case = snake_case
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        self.body_field = rule.body if rule.body not in ("", "*") else ""
        # Not for client streams, whose later messages carry only the next piece, nor for raw
        # bodies (HttpBody), where an empty upload is the service's to judge.
        self.required: tuple[FieldDescriptor, ...] = ()
        if not method.client_streaming:
            self.required = tuple(
                f
                for f in method.input_type.fields
                if f.type == FieldDescriptor.TYPE_MESSAGE
                and not f.is_repeated
                and getattr(f.message_type, "full_name", "") != "google.api.HttpBody"
                and field_behavior_pb2.REQUIRED
                in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
            )

    def name(self, field: FieldDescriptor) -> str:
        return field.name if self.snake_case else field.json_name

    def shown(self, path: str) -> str:
        if self.body_field and path.startswith(self.body_field + "."):
            return path[len(self.body_field) + 1 :]
        return path


class RequestReader:
    """Parses one method's request bytes (see the module docstring)."""

    __slots__ = ("_deserialize", "_shape")

    def __init__(self, deserialize: Deserializer, shape: RequestShape | None) -> None:
        self._deserialize = deserialize
        self._shape = shape

    def read(self, data: bytes) -> Any:
        try:
            message = self._deserialize(data)
        except DecodeError:
            raise self._refusal(data) from None
        shape = self._shape
        if shape is None:
            return message
        if shape.required:
            missing = [f for f in shape.required if not message.HasField(f.name)]
            if missing:
                raise validation_error([_absent(shape, f) for f in missing])
        if b"\x00" in data:
            violations = _Scan(shape, data).run(nul=True)
            if violations:
                raise validation_error(violations)
        return message

    def _refusal(self, data: bytes) -> InvalidArgument:
        violations = _Scan(self._shape, data).run(nul=False) if self._shape is not None else []
        if violations:
            error = validation_error(violations)
            assert isinstance(error, InvalidArgument)
            return error
        return InvalidArgument(NOT_PROTOBUF)


def _absent(shape: RequestShape, field: FieldDescriptor) -> FieldViolation:
    if field.name == shape.body_field:
        description = "is required: the request body must be a JSON object (not null)"
    else:
        description = "is required"
    return FieldViolation(shape.name(field), description, "Required")


class _Corrupt(Exception):
    """The bytes are not well-formed wire format: nothing more can be named."""


class _Scan:
    """A walk over wire-format bytes that checks every string field the descriptors know of:
    valid UTF-8 and, when asked, no NUL. Unknown fields are skipped, like the parser does."""

    def __init__(self, shape: RequestShape, data: bytes) -> None:
        self._shape = shape
        self._data = data
        self._found: dict[str, FieldViolation] = {}

    def run(self, *, nul: bool) -> list[FieldViolation]:
        self._nul = nul
        with contextlib.suppress(_Corrupt):
            self._message(0, len(self._data), self._shape.descriptor, "", 0, False)
        return list(self._found.values())

    def _fail(self, path: str, description: str) -> None:
        shown = self._shape.shown(path)
        self._found.setdefault(shown, FieldViolation(shown, description, "Format"))

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        data = self._data
        while True:
            if pos >= end or shift > 63:
                raise _Corrupt
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7

    def _message(
        self, pos: int, end: int, descriptor: Descriptor, prefix: str, depth: int, opaque: bool
    ) -> None:
        """Check the fields of one message in data[pos:end]; `opaque`: below a free-form or map
        value, where violations name `prefix` itself."""
        if depth > _MAX_DEPTH:
            raise _Corrupt
        seen: dict[int, int] = {}
        while pos < end:
            key, pos = self._varint(pos, end)
            number, wire = key >> 3, key & 7
            if wire in _SCALAR_WIRES:
                pos = self._skip_scalar(wire, pos, end)
            elif wire == 2:
                length, pos = self._varint(pos, end)
                start, pos = pos, pos + length
                if pos > end:
                    raise _Corrupt
                field = descriptor.fields_by_number.get(number)
                if field is not None:
                    self._field(field, start, pos, prefix, depth, opaque, seen)
            elif wire == 3:
                pos = self._skip_group(pos, end, number, depth + 1)
            else:
                raise _Corrupt
            if pos > end:
                raise _Corrupt

    def _field(
        self,
        field: FieldDescriptor,
        start: int,
        end: int,
        prefix: str,
        depth: int,
        opaque: bool,
        seen: dict[int, int],
    ) -> None:
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            return  # bytes, or a packed repeated number
        if opaque:
            path = prefix
        else:
            path = f"{prefix}.{self._shape.name(field)}" if prefix else self._shape.name(field)
            if field.is_repeated and not _is_map(field):
                index = seen.get(field.number, 0)
                seen[field.number] = index + 1
                path = f"{path}[{index}]"
        if field.type == FieldDescriptor.TYPE_STRING:
            data = self._data
            if self._nul:
                if data.find(b"\x00", start, end) >= 0:
                    self._fail(path, HAS_NUL)
            else:
                try:
                    data[start:end].decode("utf-8")
                except UnicodeDecodeError:
                    self._fail(path, BAD_UTF8)
            return
        if self._nul and self._data.find(b"\x00", start, end) < 0:
            return  # nothing to find in there: only the parts holding a zero byte are walked
        child = field.message_type
        assert child is not None
        inner_opaque = opaque or _is_map(field) or child.full_name in _OPEN_MESSAGES
        self._message(start, end, child, path, depth + 1, inner_opaque)

    def _skip_scalar(self, wire: int, pos: int, end: int) -> int:
        """Past a varint (wire type 0), 64-bit (1) or 32-bit (5) value starting at `pos`."""
        if wire == 0:
            return self._varint(pos, end)[1]
        return pos + (8 if wire == 1 else 4)

    def _skip_group(self, pos: int, end: int, number: int, depth: int) -> int:
        if depth > _MAX_DEPTH:
            raise _Corrupt
        while pos < end:
            key, pos = self._varint(pos, end)
            inner, wire = key >> 3, key & 7
            if wire in _SCALAR_WIRES:
                pos = self._skip_scalar(wire, pos, end)
            elif wire == 2:
                length, pos = self._varint(pos, end)
                pos += length
            elif wire == 3:
                pos = self._skip_group(pos, end, inner, depth + 1)
            elif wire == 4 and inner == number:
                return pos
            else:
                raise _Corrupt
        raise _Corrupt


# Wire types of values with no length prefix: varint, 64-bit, 32-bit.
_SCALAR_WIRES = frozenset({0, 1, 5})


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


__all__ = ["RequestReader", "RequestShape"]
