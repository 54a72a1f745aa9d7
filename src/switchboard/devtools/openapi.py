"""The OpenAPI 3.1 document of Switchboard's REST APIs, generated from the contracts and the edge.

``scripts/genproto.sh`` (``make proto``) writes it to ``gen/openapi.json``;
``scripts/proto-check.sh`` fails when it is stale. Envoy serves it at ``GET /openapi.json`` and
renders it at ``GET /docs``.

What it is generated from, and why each input:

- the descriptor set of ``proto/`` with source info: every ``google.api.http`` binding (path,
  method, body field), the request and response messages, field ``json_name``s,
  ``google.api.field_behavior`` (REQUIRED fields are required in requests, OUTPUT_ONLY ones are
  read-only), the access rule of each RPC (public RPCs need no bearer token) and the comments,
  which become descriptions;
- the Envoy configuration the edge runs (``envoy/envoy.yaml.in`` rendered by
  ``switchboard.server.edge.envoy``): the route each path lands on gives its REST family (A, B, C
  in its Lua metadata), whether it prints Server-Sent Events, and the transcoder's print options
  (``preserve_proto_field_names``: family B prints proto field names, the others ``json_name``s;
  ``always_print_primitive_fields``: which keys every response carries);
- three small tables below for what the servicers decide at run time and no descriptor says:
  documented success codes other than 200 (``x-switchboard-http-status``), family B lists that
  the edge unwraps into a bare array (``x-switchboard-bare-list``), and the media types of
  ``google.api.HttpBody`` bodies. ``tests/api/test_openapi.py`` checks the first two against the
  servicers' source, and the conformance fuzzing (``tests/fuzz``) checks all of them against
  the running edge.

No registry generator does this: the ones for google.api.http (gnostic's protoc-gen-openapi,
grpc-gateway's protoc-gen-openapiv2) are Go plugins not on PyPI, print one naming style for the
whole API, and know nothing of this edge's rewrites (error shapes, bare lists, status codes).

Run: ``python -m switchboard.devtools.openapi DESCRIPTOR_SET_WITH_SOURCE_INFO OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2
from switchboard.common.v1 import access_pb2

from switchboard.server.core.rpc import access_rule
from switchboard.server.edge.envoy import EnvoySettings, render_config

__all__ = [
    "BARE_LISTS",
    "HTTP_BODY_REQUESTS",
    "HTTP_BODY_RESPONSES",
    "SUCCESS_STATUSES",
    "EdgeRoute",
    "build_document",
    "edge_routes",
    "main",
]

Json = dict[str, Any]
FieldProto = descriptor_pb2.FieldDescriptorProto

#: Success codes other than a plain 200, per RPC: what the servicer passes to set_http_status
#: (the RPC comments say the same). The first is the usual one.
SUCCESS_STATUSES: dict[str, tuple[int, ...]] = {
    "switchboard.communications.v1.CommunicationsService.SendCommunication": (202, 206),
    "switchboard.communications.v1.CommunicationsService.PreviewCommunication": (200, 206),
    "switchboard.communications.v1.CommunicationsService.CreateShortUrl": (201,),
    "switchboard.communications.v1.CommunicationsService.FollowShortUrl": (302,),
    "switchboard.templates.v1.TemplatesService.GetCommunicationType": (202,),
    "switchboard.templates.v1.TemplatesService.CreateTemplate": (202,),
    "switchboard.templates.v1.TemplatesService.CreateDraftTemplate": (202,),
    "switchboard.templates.v1.TemplatesService.ValidateTemplatePreview": (202,),
    "switchboard.templates.v1.TemplatesService.ValidateTemplate": (202,),
    "switchboard.templates.v1.TemplatesService.CommitTemplates": (202,),
    "switchboard.templates.v1.TemplatesService.GetExample": (202,),
}

#: Family B list RPCs whose REST body is the named repeated field as a bare array (the servicer
#: calls bare_list with it; a non-empty next_page_token becomes the X-Next-Page-Token header).
BARE_LISTS: dict[str, str] = {
    f"switchboard.{service}.{rpc}": list_field
    for service, rpcs in {
        "calling.v1.CallingService": {
            "ListCalls": "calls",
            "ListBridges": "bridges",
            "ListBridgeCalls": "calls",
            "ListConferences": "conferences",
            "ListConferenceMembers": "members",
        },
        "contacts.v1.ContactsService": {
            "ListContacts": "contacts",
            "ListFastAccessRules": "rules",
            "ListContactAccessTokens": "access_tokens",
            "ListContactApplicationTokens": "application_tokens",
            "ListContactGroups": "contact_groups",
            "ListGroupContacts": "contacts",
            "ListContactAddressStatuses": "contact_address_statuses",
            "ListContactAddressHistory": "contact_address_history",
            "ListAccessTokens": "access_tokens",
            "ListContactImportJobs": "contact_import_jobs",
            "ListContactExportJobs": "contact_export_jobs",
        },
        "messaging.v1.MessagingService": {
            "ListSenderIdClasses": "sender_id_classes",
            "ListSenderIdTypes": "sender_id_types",
            "ListSenderIds": "sender_ids",
            "ListChannels": "channels",
            "ListChannelSenderIds": "sender_ids",
            "ListMessageTemplates": "message_templates",
            "ListKeywords": "keywords",
            "ListAttachments": "attachments",
            "ListMessageRequests": "message_requests",
            "ListMessageRequestMessages": "messages",
            "ListMessages": "messages",
            "ListMessageAttachments": "attachments",
            "ListEventHandlers": "event_handlers",
            "ListEventDeliveries": "deliveries",
            "ListDeliveryAttempts": "attempts",
        },
    }.items()
    for rpc, list_field in rpcs.items()
}

_BINARY: Json = {"type": "string", "contentMediaType": "application/octet-stream"}
_FILE_FORM: Json = {
    "type": "object",
    "properties": {"file": {**_BINARY, "description": "The file."}},
    "required": ["file"],
}

#: Media types of google.api.HttpBody responses (the servicer sets content_type).
HTTP_BODY_RESPONSES: dict[str, dict[str, Json]] = {
    "switchboard.communications.v1.CommunicationsService.GetQrCodeImage": {
        "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}
    },
    "switchboard.communications.v1.CommunicationsService.FollowShortUrl": {
        "text/plain": {"schema": {"type": "string", "maxLength": 0}}
    },
    "switchboard.common.v1.WebhooksService.VerifyWebhook": {
        "text/plain": {"schema": {"type": "string", "description": "hub.challenge, echoed."}}
    },
    "switchboard.contacts.v1.ContactsService.DownloadContactExport": {
        "text/csv": {"schema": {"type": "string"}}
    },
    "switchboard.contacts.v1.ContactsService.DownloadContactImportFailures": {
        "text/csv": {"schema": {"type": "string"}}
    },
    "switchboard.messaging.v1.MessagingService.DownloadAttachmentContent": {
        "*/*": {"schema": {**_BINARY, "description": "The content, typed as the attachment is."}}
    },
}

#: Media types of google.api.HttpBody request bodies (the servicer parses the raw body).
HTTP_BODY_REQUESTS: dict[str, dict[str, Json]] = {
    "switchboard.templates.v1.TemplatesService.ImportTemplatePackage": {
        "multipart/form-data": {"schema": _FILE_FORM},
        "application/json": {
            "schema": {"type": "object", "description": "The deployment package itself."}
        },
    },
    "switchboard.messaging.v1.MessagingService.UploadAttachmentContent": {
        "multipart/form-data": {
            "schema": {**_FILE_FORM, "description": "Exactly one part: the file."}
        },
    },
    "switchboard.common.v1.WebhooksService.ReceiveWebhook": {
        "application/json": {"schema": {"description": "The provider's callback, as posted."}}
    },
}

#: Response headers the servicers set, beyond the edge's own.
RESPONSE_HEADERS: dict[str, dict[str, Json]] = {
    "switchboard.communications.v1.CommunicationsService.FollowShortUrl": {
        "Location": {
            "description": "The long URL.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    "switchboard.templates.v1.TemplatesService.DownloadTemplatePackage": {
        "Content-Disposition": {
            "description": "The package as an attachment.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
}

FAMILIES: dict[str, str] = {
    "A": "Communications API v2: camelCase JSON, bodies `{commit, id, data}`, errors "
    '`{"errors": [{code, title, details, ref, httpStatusCode}]}`.',
    "B": "Messaging, Calling and Contacts API: snake_case JSON, lists as bare arrays (the next "
    'page in `X-Next-Page-Token`), errors `{"error_code", "error_description"}`; POST and PUT '
    "also take application/x-www-form-urlencoded bodies.",
    "C": "SMS API: JSON keys as documented (json_name), ServiceStack `ResponseStatus` errors.",
}

_ERROR_SCHEMAS: dict[str, Json] = {
    "A": {
        "type": "object",
        "description": "Communications API v2 error.",
        "properties": {
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "description": "The documented code."},
                        "title": {
                            "type": "string",
                            "description": "The HTTP reason phrase, or the invalid field.",
                        },
                        "details": {"type": "string"},
                        "ref": {"type": "string", "description": "The request's x-request-id."},
                        "httpStatusCode": {"type": "integer"},
                    },
                    "required": ["code", "title", "details", "ref", "httpStatusCode"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["errors"],
        "additionalProperties": False,
    },
    "B": {
        "type": "object",
        "description": "Messaging, Calling and Contacts API error.",
        "properties": {
            "error_code": {
                "type": "string",
                "description": "The documented code: 400, 1023, 1012, 1017, 1019, 1020, 401, "
                "402, 403, 404, 1001, 1011, 412, 429, 500, 503.",
            },
            "error_description": {"type": "string"},
        },
        "required": ["error_code", "error_description"],
        "additionalProperties": False,
    },
    "C": {
        "type": "object",
        "description": "SMS API error (ServiceStack).",
        "properties": {
            "ResponseStatus": {
                "type": "object",
                "properties": {
                    "ErrorCode": {"type": "string"},
                    "Message": {"type": "string"},
                    "Errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "ErrorCode": {"type": "string"},
                                "FieldName": {"type": "string"},
                                "Message": {"type": "string"},
                            },
                            "required": ["ErrorCode", "FieldName", "Message"],
                            "additionalProperties": False,
                        },
                    },
                },
                "required": ["ErrorCode", "Message", "Errors"],
                "additionalProperties": False,
            }
        },
        "required": ["ResponseStatus"],
        "additionalProperties": False,
    },
}

_ERROR_TEXT: dict[int, str] = {
    400: "Invalid request: a malformed body or parameter, or one the contract refuses.",
    401: "Missing, expired or forged credentials (a bearer token, or the route's own token).",
    403: "The token's roles or org do not allow this.",
    404: "No such resource (also another org's), or no such path.",
    409: "Conflict: a stale version_number (1001) or a duplicate unique key (1011).",
    413: "The request body is larger than 1 MiB.",
    429: "Too many requests: retry after the Retry-After delay.",
    431: "The request's headers (path included) are larger than 60 KiB.",
    500: "Internal error.",
    503: "Unavailable: retry later.",
}

_SUCCESS_TEXT: dict[int, str] = {
    200: "OK.",
    201: "Created.",
    202: "Accepted.",
    206: "Partial: some channels failed; each failure is explained.",
    302: "Found: a redirect to the Location header.",
}

_WKT_SCALARS: dict[str, Json] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.StringValue": {"type": "string"},
    ".google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
    ".google.protobuf.BoolValue": {"type": "boolean"},
    ".google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": "integer", "format": "int32", "minimum": 0},
    ".google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    ".google.protobuf.UInt64Value": {"type": "string", "format": "int64"},
    ".google.protobuf.FloatValue": {"type": "number"},
    ".google.protobuf.DoubleValue": {"type": "number"},
}
_WKT_OTHER: dict[str, Json] = {
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array"},
    ".google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
}
_HTTP_BODY = ".google.api.HttpBody"
_INT32 = {FieldProto.TYPE_INT32, FieldProto.TYPE_SINT32, FieldProto.TYPE_SFIXED32}
_UINT32 = {FieldProto.TYPE_UINT32, FieldProto.TYPE_FIXED32}
_INT64 = {
    FieldProto.TYPE_INT64,
    FieldProto.TYPE_SINT64,
    FieldProto.TYPE_SFIXED64,
    FieldProto.TYPE_UINT64,
    FieldProto.TYPE_FIXED64,
}
_REPEATED = FieldProto.LABEL_REPEATED
_METHODS = ("get", "put", "post", "delete", "patch")


# ------------------------------------------------------------------------------------------------
# The edge: which route a path lands on, and what that route prints.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeRoute:
    """What the Envoy route of a REST path does to it."""

    family: str
    """A, B or C (the route's Lua metadata)."""
    sse: bool
    """A server-streaming RPC printed as Server-Sent Events."""
    proto_names: bool
    """The transcoder prints proto field names (family B) rather than json_names."""
    always_print: bool
    """Fields without presence (scalars, repeated, maps) are always printed."""

    @property
    def style(self) -> str:
        return "snake" if self.proto_names else "camel"


@dataclass(frozen=True)
class _RouteRule:
    match: Json
    route: EdgeRoute


def edge_routes() -> list[_RouteRule]:
    """The REST routes of the edge's configuration, in match order."""
    rendered = render_config(
        EnvoySettings(
            listen_port=8080,
            admin_port=9901,
            upstreams=[("127.0.0.1", 50051)],
            # Only the routes are read: the descriptor and services it names do not matter.
            descriptor_path=Path("switchboard.binpb"),
            services=(),
        )
    )
    config = yaml.safe_load(rendered)
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    hcm = next(
        f["typed_config"]
        for f in chain["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    )
    base = next(
        f["typed_config"]
        for f in hcm["http_filters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    )
    rules: list[_RouteRule] = []
    for host in hcm["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if "headers" in route["match"] or "route" not in route:
                continue  # native gRPC passthrough, or a direct response (the docs)
            lua = route.get("metadata", {}).get("filter_metadata", {})
            lua = lua.get("envoy.filters.http.lua", {})
            per_route = route.get("typed_per_filter_config", {})
            transcoder = per_route.get("envoy.filters.http.grpc_json_transcoder", base)
            if transcoder.get("disabled"):
                continue
            printing = transcoder.get("print_options", {})
            rules.append(
                _RouteRule(
                    match=route["match"],
                    route=EdgeRoute(
                        family=str(lua.get("family", "B")),
                        sse=bool(lua.get("sse", False)),
                        proto_names=bool(printing.get("preserve_proto_field_names", False)),
                        always_print=bool(printing.get("always_print_primitive_fields", False)),
                    ),
                )
            )
    return rules


def _route_for(rules: Sequence[_RouteRule], path: str) -> EdgeRoute:
    for rule in rules:
        match = rule.match
        if "path" in match and match["path"] == path:
            return rule.route
        if "prefix" in match and path.startswith(match["prefix"]):
            return rule.route
        regex = match.get("safe_regex", {}).get("regex")
        if regex is not None and re.fullmatch(regex, path):
            return rule.route
    raise ValueError(f"no Envoy route for {path}")


# ------------------------------------------------------------------------------------------------
# The contracts
# ------------------------------------------------------------------------------------------------


@dataclass
class _Message:
    proto: descriptor_pb2.DescriptorProto
    comments: str
    field_comments: dict[str, str]


@dataclass
class _Enum:
    values: list[str]


@dataclass
class _Contracts:
    messages: dict[str, _Message] = field(default_factory=dict)
    enums: dict[str, _Enum] = field(default_factory=dict)
    files: list[descriptor_pb2.FileDescriptorProto] = field(default_factory=list)
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)

    def comment(self, file: str, *path: int) -> str:
        return self.comments.get((file, path), "")


def _clean(comment: str) -> str:
    lines = [line.strip() for line in comment.strip().splitlines()]
    return " ".join(line for line in lines if line)


def _load(descriptor_set: descriptor_pb2.FileDescriptorSet) -> _Contracts:
    found = _Contracts()
    for file in descriptor_set.file:
        found.files.append(file)
        for location in file.source_code_info.location:
            if location.leading_comments:
                found.comments[(file.name, tuple(location.path))] = _clean(
                    location.leading_comments
                )

    def walk(
        file: descriptor_pb2.FileDescriptorProto,
        scope: str,
        messages: Sequence[descriptor_pb2.DescriptorProto],
        enums: Sequence[descriptor_pb2.EnumDescriptorProto],
        path: tuple[int, ...],
        message_tag: int,
        enum_tag: int,
    ) -> None:
        for enum in enums:
            found.enums[f"{scope}.{enum.name}"] = _Enum([v.name for v in enum.value])
        for i, message in enumerate(messages):
            here = (*path, message_tag, i)
            name = f"{scope}.{message.name}"
            found.messages[name] = _Message(
                proto=message,
                comments=found.comment(file.name, *here),
                field_comments={
                    f.name: found.comment(file.name, *here, 2, j)
                    for j, f in enumerate(message.field)
                },
            )
            walk(file, name, message.nested_type, message.enum_type, here, 3, 4)

    for file in found.files:
        scope = f".{file.package}" if file.package else ""
        walk(file, scope, file.message_type, file.enum_type, (), 4, 5)
    return found


def _nullable(schema: Json) -> Json:
    """`schema` or null: proto3 JSON reads null as "not set" for any field of a request (so a
    required field may not be null)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        nullable = {**schema, "type": [kind, "null"]}
        if "enum" in schema:
            nullable["enum"] = [*schema["enum"], None]
        return nullable
    described = {k: v for k, v in schema.items() if k in ("description", "readOnly")}
    bare = {k: v for k, v in schema.items() if k not in described}
    if not bare:
        return schema  # anything goes already
    return {"anyOf": [bare, {"type": "null"}], **described}


def _behaviors(f: FieldProto) -> set[int]:
    return set(f.options.Extensions[field_behavior_pb2.field_behavior])


def _default_json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# ------------------------------------------------------------------------------------------------
# Schemas
# ------------------------------------------------------------------------------------------------

_REF = "#/components/schemas/"


@dataclass(frozen=True)
class _Variant:
    message: str
    style: str  # camel (json_name) or snake (proto names)
    direction: str  # in (request) or out (response)
    always_print: bool


class _Schemas:
    """Message schemas, one component per (message, naming style, direction) that is used."""

    def __init__(self, contracts: _Contracts) -> None:
        self.contracts = contracts
        self.variants: dict[_Variant, Json] = {}
        self._placeholders: dict[str, _Variant] = {}

    def key(self, f: FieldProto, style: str) -> str:
        return f.name if style == "snake" else f.json_name

    def ref(self, variant: _Variant) -> Json:
        placeholder = f"\0{len(self._placeholders)}"
        self._placeholders[placeholder] = variant
        if variant not in self.variants:
            self.variants[variant] = {}  # reserved: recursion stops here
            self.variants[variant] = self._message(variant)
        return {"$ref": placeholder}

    def field_schema(self, f: FieldProto, style: str, direction: str, always: bool) -> Json:
        if f.label == _REPEATED and f.type == FieldProto.TYPE_MESSAGE:
            entry = self.contracts.messages.get(f.type_name)
            if entry is not None and entry.proto.options.map_entry:
                value = entry.proto.field[1]
                return {
                    "type": "object",
                    "additionalProperties": self.single(value, style, direction, always),
                }
        single = self.single(f, style, direction, always)
        if f.label == _REPEATED:
            return {"type": "array", "items": single}
        return single

    def single(self, f: FieldProto, style: str, direction: str, always: bool) -> Json:
        kind = f.type
        if kind == FieldProto.TYPE_STRING:
            return {"type": "string"}
        if kind == FieldProto.TYPE_BOOL:
            return {"type": "boolean"}
        if kind in _INT32:
            return {
                "type": "integer",
                "format": "int32",
                "minimum": -(2**31),
                "maximum": 2**31 - 1,
            }
        if kind in _UINT32:
            return {"type": "integer", "format": "int32", "minimum": 0, "maximum": 2**32 - 1}
        if kind in _INT64:
            # proto3 JSON prints 64-bit integers as strings and reads either form.
            digits = {"type": "string", "pattern": r"^-?[0-9]+$", "format": "int64"}
            return digits if direction == "out" else {"anyOf": [{"type": "integer"}, digits]}
        if kind in (FieldProto.TYPE_DOUBLE, FieldProto.TYPE_FLOAT):
            if direction == "in":
                return {"type": "number"}
            return {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
        if kind == FieldProto.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if kind == FieldProto.TYPE_ENUM:
            return {"type": "string", "enum": list(self.contracts.enums[f.type_name].values)}
        if f.type_name in _WKT_SCALARS:
            return dict(_WKT_SCALARS[f.type_name])
        if f.type_name in _WKT_OTHER:
            return dict(_WKT_OTHER[f.type_name])
        if f.type_name == _HTTP_BODY:
            raise ValueError(f"google.api.HttpBody inside a JSON body ({f.name})")
        return self.ref(_Variant(f.type_name, style, direction, always))

    def _message(self, variant: _Variant) -> Json:
        entry = self.contracts.messages[variant.message]
        properties: Json = {}
        required: list[str] = []
        for f in entry.proto.field:
            key = self.key(f, variant.style)
            schema = self.field_schema(f, variant.style, variant.direction, variant.always_print)
            description = entry.field_comments.get(f.name, "")
            behaviors = _behaviors(f)
            if variant.style == "snake" and f.json_name != _default_json_name(f.name):
                description += f" Also accepted as `{f.json_name}`."
            if description.strip():
                schema = {**schema, "description": description.strip()}
            if variant.direction == "in":
                if field_behavior_pb2.REQUIRED not in behaviors:
                    schema = _nullable(schema)
                if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                    schema = {**schema, "readOnly": True}
            properties[key] = schema
            in_oneof = f.HasField("oneof_index")
            if variant.direction == "in":
                if field_behavior_pb2.REQUIRED in behaviors:
                    required.append(key)
            elif (
                variant.always_print
                and not in_oneof
                and (
                    # Printed even when unset: scalars without presence, repeated fields, maps.
                    f.label == _REPEATED or f.type != FieldProto.TYPE_MESSAGE
                )
            ):
                required.append(key)
        message: Json = {"type": "object"}
        if entry.comments:
            message["description"] = entry.comments
        message["properties"] = properties
        if required:
            message["required"] = required
        # Unknown keys are refused in requests (decision 4) and never printed in responses.
        message["additionalProperties"] = False
        return message

    def components(self) -> tuple[Json, dict[str, str]]:
        """The schemas by component name, and each placeholder's final reference."""
        styles: dict[str, set[str]] = {}
        directions: dict[str, set[str]] = {}
        for v in self.variants:
            styles.setdefault(v.message, set()).add(v.style)
            directions.setdefault(v.message, set()).add(v.direction)
        names: dict[_Variant, str] = {}
        for v in self.variants:
            name = v.message.lstrip(".").removeprefix("switchboard.")
            if len(styles[v.message]) > 1:
                name += f"-{v.style}"
            if len(directions[v.message]) > 1 and v.direction == "in":
                name += "-input"
            if name in names.values():
                raise ValueError(f"two schemas would be named {name}")
            names[v] = name
        refs = {p: _REF + names[v] for p, v in self._placeholders.items()}
        schemas = {names[v]: self.variants[v] for v in sorted(self.variants, key=names.__getitem__)}
        return schemas, refs


def _resolve_refs(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        # OpenAPI 3.1 schemas may have siblings beside $ref (a field's description).
        return {
            k: refs[v] if k == "$ref" and v in refs else _resolve_refs(v, refs)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_refs(v, refs) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# Operations
# ------------------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\{([a-zA-Z0-9_.]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class _Binding:
    method: str
    path: str  # the google.api.http template
    body: str
    rpc: str  # full name: package.Service.Method
    service: str
    file: str
    service_index: int
    method_index: int
    proto: descriptor_pb2.MethodDescriptorProto
    service_options: descriptor_pb2.ServiceOptions


def _bindings(contracts: _Contracts) -> Iterator[_Binding]:
    for file in contracts.files:
        if not file.package.startswith("switchboard."):
            continue
        for s, service in enumerate(file.service):
            for m, method in enumerate(service.method):
                if not method.options.HasExtension(annotations_pb2.http):
                    continue  # gRPC only
                rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
                if rule.additional_bindings:
                    raise ValueError(f"{method.name}: additional_bindings are not supported")
                kind = rule.WhichOneof("pattern")
                if kind not in _METHODS:
                    raise ValueError(f"{method.name}: unsupported pattern {kind}")
                yield _Binding(
                    method=str(kind),
                    path=getattr(rule, str(kind)),
                    body=rule.body,
                    rpc=f"{file.package}.{service.name}.{method.name}",
                    service=f"{file.package}.{service.name}",
                    file=file.name,
                    service_index=s,
                    method_index=m,
                    proto=method,
                    service_options=service.options,
                )


def _sample_path(template: str) -> str:
    def sample(match: re.Match[str]) -> str:
        return "x/x" if match.group(2) == "**" else "x"

    return _VARIABLE.sub(sample, template)


def _segments(template: str) -> list[str]:
    return template.strip("/").split("/")


class _Generator:
    def __init__(self, contracts: _Contracts, rules: Sequence[_RouteRule]) -> None:
        self.contracts = contracts
        self.rules = rules
        self.schemas = _Schemas(contracts)
        self.bindings = list(_bindings(contracts))
        self.used_families: set[str] = set()

    # -- parameters -------------------------------------------------------------------------

    def _field_path(self, message: str, dotted: str) -> list[FieldProto]:
        fields: list[FieldProto] = []
        current = message
        for part in dotted.split("."):
            entry = self.contracts.messages[current]
            f = next((f for f in entry.proto.field if f.name == part), None)
            if f is None:
                raise ValueError(f"{message} has no field {dotted}")
            fields.append(f)
            current = f.type_name
        return fields

    def _siblings(self, binding: _Binding, index: int) -> list[str]:
        """Literal segments that other paths of the same method have where this one has a
        variable: the transcoder prefers them, so the variable never takes those values."""
        mine = _segments(binding.path)
        literals: set[str] = set()
        for other in self.bindings:
            theirs = _segments(other.path)
            if other.method != binding.method or len(theirs) <= index:
                continue
            same_prefix = all(
                a == b or (_VARIABLE.fullmatch(a) and _VARIABLE.fullmatch(b))
                for a, b in zip(mine[:index], theirs[:index], strict=True)
            )
            if same_prefix and not _VARIABLE.fullmatch(theirs[index]):
                literals.add(theirs[index])
        return sorted(literals)

    def _path_parameters(
        self, binding: _Binding, route: EdgeRoute
    ) -> tuple[str, list[Json], set[str]]:
        request = binding.proto.input_type
        bound: set[str] = set()
        parameters: list[Json] = []
        segments = _segments(binding.path)
        out: list[str] = []
        for i, segment in enumerate(segments):
            match = _VARIABLE.fullmatch(segment)
            if match is None:
                if "{" in segment or "*" in segment:
                    raise ValueError(f"{binding.rpc}: unsupported path segment {segment}")
                out.append(segment)
                continue
            if match.group(2) not in (None, "*"):
                raise ValueError(f"{binding.rpc}: unsupported path variable {segment}")
            dotted = match.group(1)
            fields = self._field_path(request, dotted)
            bound.add(dotted.split(".")[0])
            name = ".".join(self.schemas.key(f, route.style) for f in fields)
            schema = self.schemas.field_schema(fields[-1], route.style, "in", False)
            schema = {**schema, "minLength": 1}
            entry = self.contracts.messages[request]
            description = entry.field_comments.get(fields[0].name, "").removeprefix("Path: ")
            # Said, not enforced with `not: {enum}`: a fuzzer would send exactly those values
            # as invalid input, and they are other operations.
            reserved = self._siblings(binding, i)
            if reserved:
                taken = ", ".join(f"`{r}`" for r in reserved)
                description += f" Never {taken}: those paths are other operations."
            parameters.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    **({"description": description} if description else {}),
                    "schema": schema,
                }
            )
            out.append("{" + name + "}")
        return "/" + "/".join(out), parameters, bound

    def _query_parameters(
        self, message: str, route: EdgeRoute, skip: set[str], prefix: str = ""
    ) -> list[Json]:
        entry = self.contracts.messages[message]
        parameters: list[Json] = []
        for f in entry.proto.field:
            if f.name in skip:
                continue
            name = prefix + self.schemas.key(f, route.style)
            is_message = f.type == FieldProto.TYPE_MESSAGE
            if is_message and f.type_name not in _WKT_SCALARS:
                nested = self.contracts.messages.get(f.type_name)
                if f.label == _REPEATED or nested is None or nested.proto.options.map_entry:
                    continue  # a query string cannot carry it
                if f.type_name.startswith(".google."):
                    continue
                parameters += self._query_parameters(f.type_name, route, set(), name + ".")
                continue
            schema = self.schemas.field_schema(f, route.style, "in", False)
            description = entry.field_comments.get(f.name, "").removeprefix("Query: ")
            if route.style == "snake" and f.json_name != _default_json_name(f.name):
                description += f" Also accepted as `{f.json_name}`."
            parameter: Json = {"name": name, "in": "query"}
            if field_behavior_pb2.REQUIRED in _behaviors(f):
                parameter["required"] = True
            if description.strip():
                parameter["description"] = description.strip()
            parameter["schema"] = schema
            if f.label == _REPEATED:
                parameter["style"] = "form"
                parameter["explode"] = True
            parameters.append(parameter)
        return parameters

    # -- bodies -----------------------------------------------------------------------------

    def _request_body(self, binding: _Binding, route: EdgeRoute, bound: set[str]) -> Json | None:
        if not binding.body:
            return None
        # A missing JSON body is an empty message to the transcoder: the body is required only
        # when the message has required fields (a REQUIRED `body` field alone is not enforced).
        description = ""
        if binding.rpc in HTTP_BODY_REQUESTS:
            content = HTTP_BODY_REQUESTS[binding.rpc]
            required = True
        elif binding.body == "*":
            # The request message, less its path fields: a schema of its own.
            entry = self.contracts.messages[binding.proto.input_type]
            message = self._body_without(entry, route, bound)
            required = bool(message.get("required"))
            content = {"application/json": {"schema": message}}
        else:
            (f,) = self._field_path(binding.proto.input_type, binding.body)
            if f.type_name == _HTTP_BODY:
                raise ValueError(f"{binding.rpc}: add its media types to HTTP_BODY_REQUESTS")
            entry = self.contracts.messages[binding.proto.input_type]
            description = entry.field_comments.get(f.name, "")
            schema = self.schemas.field_schema(f, route.style, "in", False)
            body_message = self.contracts.messages.get(f.type_name)
            required = body_message is not None and any(
                field_behavior_pb2.REQUIRED in _behaviors(g) for g in body_message.proto.field
            )
            content = {"application/json": {"schema": schema}}
        if (
            route.family == "B"
            and "application/json" in content
            and binding.method
            in (
                "post",
                "put",
            )
        ):
            content = {**content, "application/x-www-form-urlencoded": content["application/json"]}
        request_body: Json = {}
        if description:
            request_body["description"] = description
        request_body["required"] = required
        request_body["content"] = content
        return request_body

    def _body_without(self, entry: _Message, route: EdgeRoute, bound: set[str]) -> Json:
        properties: Json = {}
        required: list[str] = []
        for f in entry.proto.field:
            if f.name in bound:
                continue
            key = self.schemas.key(f, route.style)
            schema = self.schemas.field_schema(f, route.style, "in", False)
            description = entry.field_comments.get(f.name, "")
            if description:
                schema = {**schema, "description": description}
            if field_behavior_pb2.REQUIRED not in _behaviors(f):
                schema = _nullable(schema)
            if field_behavior_pb2.OUTPUT_ONLY in _behaviors(f):
                schema = {**schema, "readOnly": True}
            properties[key] = schema
            if field_behavior_pb2.REQUIRED in _behaviors(f):
                required.append(key)
        body: Json = {"type": "object", "properties": properties}
        if required:
            body["required"] = required
        body["additionalProperties"] = False
        return body

    def _success(self, binding: _Binding, route: EdgeRoute) -> dict[str, Json]:
        output = binding.proto.output_type
        headers: Json = dict(RESPONSE_HEADERS.get(binding.rpc, {}))
        if binding.proto.server_streaming and route.sse:
            event = self.schemas.ref(_Variant(output, route.style, "out", route.always_print))
            # Before OpenAPI 3.2's itemSchema, the schema of an event stream describes one event
            # (as Schemathesis reads it); its data is the JSON of one streamed message.
            content: Json = {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "description": "One Server-Sent Event: an `id:` line with its "
                        "envelope's cursor (none on heartbeats), then a `data:` line holding a "
                        "streamed message as JSON, heartbeats included; resume after a cursor "
                        "with Last-Event-ID (as an EventSource does) or `after`.",
                        "properties": {
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": event,
                            },
                            "event": {"type": "string"},
                            "id": {"type": "string"},
                            "retry": {"type": "integer"},
                        },
                        "required": ["data"],
                    }
                }
            }
        elif output == _HTTP_BODY:
            if binding.rpc not in HTTP_BODY_RESPONSES:
                raise ValueError(f"{binding.rpc}: add its media type to HTTP_BODY_RESPONSES")
            content = HTTP_BODY_RESPONSES[binding.rpc]
        elif binding.proto.server_streaming:
            raise ValueError(f"{binding.rpc}: a JSON stream outside an SSE route")
        elif binding.rpc in BARE_LISTS:
            if route.family != "B":
                raise ValueError(f"{binding.rpc}: a bare list outside family B")
            entry = self.contracts.messages[output]
            (f,) = (f for f in entry.proto.field if f.name == BARE_LISTS[binding.rpc])
            schema = self.schemas.field_schema(f, route.style, "out", route.always_print)
            content = {"application/json": {"schema": schema}}
            headers["X-Next-Page-Token"] = {"$ref": "#/components/headers/NextPageToken"}
        else:
            schema = self.schemas.ref(_Variant(output, route.style, "out", route.always_print))
            content = {"application/json": {"schema": schema}}
        responses: dict[str, Json] = {}
        for status in SUCCESS_STATUSES.get(binding.rpc, (200,)):
            response: Json = {"description": _SUCCESS_TEXT[status]}
            if headers:
                response["headers"] = headers
            response["content"] = content
            responses[str(status)] = response
        return responses

    def _errors(self, binding: _Binding, route: EdgeRoute, public: bool) -> dict[str, Json]:
        statuses = [400, 401]
        if not public:
            statuses.append(403)
        statuses.append(404)
        if binding.method != "get":
            statuses.append(409)
        if binding.body:
            statuses.append(413)
        statuses += [429, 431, 500, 503]
        self.used_families.add(route.family)
        return {str(s): {"$ref": f"#/components/responses/{route.family}{s}"} for s in statuses}

    # -- the document -----------------------------------------------------------------------

    def operation(self, binding: _Binding) -> tuple[str, Json]:
        route = _route_for(self.rules, _sample_path(binding.path))
        if (
            binding.proto.server_streaming
            and not route.sse
            and (binding.proto.output_type != _HTTP_BODY)
        ):
            raise ValueError(f"{binding.rpc}: a stream on a route that prints no SSE")
        if route.sse and not binding.proto.server_streaming:
            raise ValueError(f"{binding.rpc}: a unary RPC on an SSE route")
        path, parameters, bound = self._path_parameters(binding, route)
        if not binding.body:
            parameters += self._query_parameters(binding.proto.input_type, route, bound)
        elif binding.body != "*":
            parameters += self._query_parameters(
                binding.proto.input_type, route, bound | {binding.body.split(".")[0]}
            )
        if route.sse:
            parameters.append(
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "Resume after this cursor (as `after`; `after` wins).",
                    "schema": {"type": "string"},
                }
            )
        access = access_rule(binding.service_options, binding.proto.options)
        public = bool(access.public)
        comment = self.contracts.comment(
            binding.file, 6, binding.service_index, 2, binding.method_index
        )
        roles = [access_pb2.Role.Name(r).removeprefix("ROLE_").title() for r in access.roles]
        notes = [f"gRPC: `{binding.rpc}`."]
        if public:
            notes.append("Public: no bearer token.")
        elif roles:
            notes.append("Roles: " + ", ".join(roles) + ".")
        operation: Json = {
            "operationId": binding.proto.name,
            "tags": [binding.service.rsplit(".", 1)[1]],
            "summary": _first_sentence(comment) or binding.proto.name,
            "description": " ".join([comment, *notes]).strip(),
        }
        if public:
            operation["security"] = []
        if parameters:
            operation["parameters"] = parameters
        body = self._request_body(binding, route, bound)
        if body is not None:
            operation["requestBody"] = body
        operation["responses"] = {
            **self._success(binding, route),
            **self._errors(binding, route, public),
        }
        operation["x-switchboard-family"] = route.family
        return path, operation

    def document(self, version: str) -> Json:
        paths: dict[str, Json] = {}
        operation_ids: set[str] = set()
        tags: dict[str, Json] = {}
        for binding in self.bindings:
            path, operation = self.operation(binding)
            if operation["operationId"] in operation_ids:
                raise ValueError(f"two operations named {operation['operationId']}")
            operation_ids.add(operation["operationId"])
            methods = paths.setdefault(path, {})
            if binding.method in methods:
                raise ValueError(f"{binding.method.upper()} {path} is bound twice")
            methods[binding.method] = operation
            tag = binding.service.rsplit(".", 1)[1]
            if tag not in tags:
                file = next(f for f in self.contracts.files if f.name == binding.file)
                tags[tag] = {
                    "name": tag,
                    "description": self.contracts.comment(file.name, 6, binding.service_index)
                    + f" (REST family {operation['x-switchboard-family']}.)",
                }
        for methods in paths.values():
            methods_sorted = {m: methods[m] for m in _METHODS if m in methods}
            methods.clear()
            methods.update(methods_sorted)
        self._add_links(paths)
        schemas, refs = self.schemas.components()
        responses: Json = {}
        for family in sorted(self.used_families):
            for status, text in _ERROR_TEXT.items():
                response: Json = {"description": text}
                if status == 429:
                    retry = {"$ref": "#/components/headers/RetryAfter"}
                    response["headers"] = {"Retry-After": retry}
                response["content"] = {
                    "application/json": {"schema": {"$ref": f"{_REF}Error{family}"}}
                }
                responses[f"{family}{status}"] = response
            schemas[f"Error{family}"] = _ERROR_SCHEMAS[family]
        document: Json = {
            "openapi": "3.1.0",
            "info": {
                "title": "Switchboard",
                "version": version,
                "description": "The REST APIs of Switchboard, transcoded by Envoy from the gRPC "
                "contracts; every operation names its RPC. Three families share the port: "
                + " ".join(f"Family {k}: {v}" for k, v in FAMILIES.items())
                + " Authenticate with a bearer JWT (`switchboard token create`).",
            },
            "servers": [{"url": "/"}],
            "security": [{"bearer": []}],
            "tags": list(tags.values()),
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                },
                "headers": {
                    "RetryAfter": {
                        "description": "Seconds to wait before retrying.",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    "NextPageToken": {
                        "description": "Where the next page starts (send it as page_token); "
                        "absent on the last page.",
                        "schema": {"type": "string"},
                    },
                },
                "responses": responses,
                "schemas": dict(sorted(schemas.items())),
            },
        }
        resolved: Json = _resolve_refs(document, refs)
        return resolved

    def _add_links(self, paths: dict[str, Json]) -> None:
        """Links from each create (POST on a collection, answering an `id`) to the operations
        on what it created (`{collection}/{id}` and below, when that id is their one new path
        variable): a client, or a stateful fuzzer, follows them to real resources."""
        for path, methods in paths.items():
            create = methods.get("post")
            if create is None or path.endswith("}"):
                continue
            successes = [r for s, r in create["responses"].items() if s < "300"]
            schema = successes[0].get("content", {}).get("application/json", {}).get("schema", {})
            variant = self.schemas._placeholders.get(schema.get("$ref", ""))
            if variant is None or "id" not in self.schemas.variants[variant]["properties"]:
                continue
            known = _VARIABLE.findall(path)
            links: Json = {}
            for target_path, target_methods in paths.items():
                if not target_path.startswith(path + "/{"):
                    continue
                new = [v for v, _ in _VARIABLE.findall(target_path)][len(known) :]
                if len(new) != 1:
                    continue
                parameters = {name: f"$request.path.{name}" for name, _ in known}
                parameters[new[0]] = "$response.body#/id"
                for method, target in target_methods.items():
                    links[f"{target['operationId']}"] = {
                        "operationId": target["operationId"],
                        "parameters": parameters,
                        "description": f"{method.upper()} {target_path} on what was created.",
                    }
            if links:
                for response in successes:  # 202 and 206 both carry the id
                    response["links"] = links


def _first_sentence(text: str, limit: int = 120) -> str:
    match = re.match(r"(.+?)\.(\s|$)", text)
    sentence = match.group(1) if match else text
    if len(sentence) <= limit:
        return sentence
    return sentence[: sentence.rfind(" ", 0, limit - 1)] + "…"


def build_document(descriptor_set: descriptor_pb2.FileDescriptorSet, version: str) -> Json:
    """The OpenAPI document for these contracts (with source info) behind today's edge."""
    return _Generator(_load(descriptor_set), edge_routes()).document(version)


def _version() -> str:
    text = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ValueError("no version in pyproject.toml")
    return match.group(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("descriptor_set", type=Path, help="built with --include_source_info")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(args.descriptor_set.read_bytes())
    document = build_document(descriptor_set, _version())
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
