"""Unknown JSON fields in REST bodies.

Envoy's transcoder drops JSON body keys the request message does not define (envoyproxy/envoy
#46623), so a client's typo (`"chanel"`) would be silently ignored. The edge's Lua filter lists the
key paths a body contained in the `x-switchboard-json-fields` header (keys joined by `.`, array
elements as `[]`, `%XX`-escaped, comma-separated); this module checks them against the request
message so such requests fail with 400 naming the field, for every REST family alike.

A body whose top level is not a JSON object (`null`, an array, a scalar) is named in
`x-switchboard-json-kind`: the transcoder takes `null` as an empty message, so `POST /contacts`
with `null` would create an empty contact; it is refused here instead, for methods whose body
is a message.
"""

from __future__ import annotations

from urllib.parse import unquote

from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from switchboard.server.core.errors import FieldViolation

JSON_FIELDS_HEADER = "x-switchboard-json-fields"
JSON_KIND_HEADER = "x-switchboard-json-kind"

# Messages whose JSON form has free-form keys: nothing below them can be unknown.
_OPEN_MESSAGES = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
        "google.api.HttpBody",
    }
)


class BodyShape:
    """What a method's REST body may contain, from its `google.api.http` binding."""

    def __init__(self, method: MethodDescriptor) -> None:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        self._root: Descriptor | None = None
        self._open = False
        if rule.body == "*":
            self._root = method.input_type
        elif rule.body:
            field = method.input_type.fields_by_name[rule.body]
            self._root, self._open = _descend(field)
        else:
            self._open = True  # no body binding: the transcoder ignores any body

        self._open = self._open or (self._root is not None and _is_open(self._root))

    def not_an_object(self, kind: str) -> FieldViolation | None:
        """The violation of a body whose top level is `kind` (null, array, string, …) where the
        method's body is a message; None where any JSON value may be the body."""
        if self._root is None or self._open or kind == "object":
            return None
        return FieldViolation("body", f"must be a JSON object, not {kind}", "Type")

    def unknown_fields(self, header: str) -> list[FieldViolation]:
        """One violation per unknown key (its deeper paths are not repeated)."""
        if self._open or self._root is None:
            return []
        unknown: list[str] = []
        for path in filter(None, header.split(",")):
            found = self._first_unknown(path)
            if found is not None and found not in unknown:
                unknown.append(found)
        return [
            FieldViolation(path, "is not a field of this request", "Unknown") for path in unknown
        ]

    def _first_unknown(self, path: str) -> str | None:
        message: Descriptor | None = self._root
        shown: list[str] = []
        for segment in path.split("."):
            key = segment.removesuffix("[]")
            while key.endswith("[]"):
                key = key.removesuffix("[]")
            name = unquote(key)
            shown.append(name + segment[len(key) :])
            if not name:
                continue  # a top-level array: its elements are the root message
            if message is None:
                return None  # below a scalar or a free-form value: the transcoder judges types
            field = _field(message, name)
            if field is None:
                return ".".join(shown)
            message, is_open = _descend(field)
            if is_open:
                return None
        return None


def _field(message: Descriptor, name: str) -> FieldDescriptor | None:
    field = message.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in message.fields if f.json_name == name), None)


def _descend(field: FieldDescriptor) -> tuple[Descriptor | None, bool]:
    """The message below `field` (None for scalars) and whether its keys are free-form."""
    if field.message_type is None:
        return None, False
    if field.message_type.GetOptions().map_entry:
        return None, True
    return field.message_type, _is_open(field.message_type)


def _is_open(message: Descriptor) -> bool:
    return message.full_name in _OPEN_MESSAGES
