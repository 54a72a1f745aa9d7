"""The OpenAPI document (gen/openapi.json): valid OpenAPI 3.1, complete, faithful to each REST
family's edge behaviour, in step with what the servicers decide at run time, and served by Envoy
with its documentation page."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from switchboard.devtools.openapi import BARE_LISTS, SUCCESS_STATUSES

REPO = Path(__file__).resolve().parents[2]
DOCUMENT_PATH = REPO / "gen" / "openapi.json"
SERVER = REPO / "src" / "switchboard" / "server"
SWAGGER_UI = REPO / "tools" / "node_modules" / "swagger-ui-dist"
Json = dict[str, Any]


@pytest.fixture(scope="module")
def document() -> Json:
    loaded: Json = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return loaded


def operations(document: Json) -> Iterator[tuple[str, str, Json]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def by_id(document: Json, operation_id: str) -> tuple[str, str, Json]:
    return next(o for o in operations(document) if o[2]["operationId"] == operation_id)


def resolve(document: Json, node: Json) -> Json:
    while "$ref" in node:
        parts = node["$ref"].removeprefix("#/").split("/")
        target: Any = document
        for part in parts:
            target = target[part]
        node = target
    return node


def json_schema(document: Json, operation_id: str, status: str = "200") -> Json:
    _, _, operation = by_id(document, operation_id)
    response = resolve(document, operation["responses"][status])
    schema: Json = response["content"]["application/json"]["schema"]
    return schema


def validator(document: Json, schema: Json) -> jsonschema_rs.Validator:
    """A validator for `schema`, whose references point into the document's components."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def http_bindings() -> list[tuple[str, str, str]]:
    """(method, path template, RPC) of every google.api.http binding in the contracts."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(
        (REPO / "gen" / "switchboard.binpb").read_bytes()
    )
    found = []
    for file in descriptor_set.file:
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    rule = method.options.Extensions[annotations_pb2.http]
                    kind = str(rule.WhichOneof("pattern"))
                    rpc = f"{file.package}.{service.name}.{method.name}"
                    found.append((kind, getattr(rule, kind), rpc))
    return found


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_document_is_valid_openapi_3_1(document: Json) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)


@pytest.mark.unit
def test_every_http_binding_is_an_operation_and_nothing_else(document: Json) -> None:
    bindings = http_bindings()
    assert len(bindings) > 150
    documented = {
        (method, re.sub(r"\{[^}]+\}", "{}", path)): operation["description"]
        for path, method, operation in operations(document)
    }
    expected = {(kind, re.sub(r"\{[^}]+\}", "{}", path)) for kind, path, _ in bindings}
    assert set(documented) == expected
    for kind, path, rpc in bindings:
        assert f"gRPC: `{rpc}`." in documented[(kind, re.sub(r"\{[^}]+\}", "{}", path))]


@pytest.mark.unit
def test_each_family_prints_its_own_names(document: Json) -> None:
    # Family A: camelCase, bracket filters by json_name, path variables too.
    path, _, search = by_id(document, "SearchCommunications")
    query = {p["name"] for p in search["parameters"] if p["in"] == "query"}
    assert {"terminatingNumber", "requestTime[gt]", "requestTime[lt]"} <= query
    assert "request_time_gt" not in query
    path, _, _ = by_id(document, "GetCommunication")
    assert path == "/v2/orgs/{org}/communications/{communicationId}"
    updated = by_id(document, "SearchShortUrls")[2]
    assert "updatedTime[gte]" in {p["name"] for p in updated["parameters"]}
    # ContactsService's one /v2 path is family A, by its Envoy route.
    path, _, blacklist = by_id(document, "RemoveBlacklistEntry")
    assert blacklist["x-switchboard-family"] == "A"
    # Family B: snake_case bodies, queries and paths.
    path, _, create = by_id(document, "CreateContact")
    body = resolve(document, create["requestBody"]["content"]["application/json"]["schema"])
    assert {"external_id", "first_name", "primary_mdn"} <= set(body["properties"])
    assert "externalId" not in body["properties"]
    path, _, _ = by_id(document, "GetContactAccessToken")
    assert path == "/contacts/{contact_id}/access_tokens/{access_token_id}"
    # Family C: the documented keys (json_name), ServiceStack errors.
    _, _, send = by_id(document, "SendSms")
    body = resolve(document, send["requestBody"]["content"]["application/json"]["schema"])
    assert "Messages" in body["properties"]
    reply = resolve(document, json_schema(document, "SendSms"))
    assert {"SMPPMsgResponse", "ResponseStatus"} <= set(reply["properties"])


@pytest.mark.unit
def test_family_b_lists_are_bare_arrays_with_the_next_page_header(document: Json) -> None:
    for rpc in BARE_LISTS:
        schema = json_schema(document, rpc.rsplit(".", 1)[1])
        assert schema["type"] == "array", rpc
        _, _, operation = by_id(document, rpc.rsplit(".", 1)[1])
        assert "X-Next-Page-Token" in operation["responses"]["200"]["headers"]
    # A list outside family B keeps its envelope.
    assert resolve(document, json_schema(document, "ListOutbox"))["type"] == "object"
    assert "data" in resolve(document, json_schema(document, "SearchCommunications"))["properties"]


@pytest.mark.unit
def test_documented_success_codes(document: Json) -> None:
    def statuses(operation_id: str) -> list[str]:
        responses = by_id(document, operation_id)[2]["responses"]
        return sorted(s for s in responses if s < "400")

    assert statuses("SendCommunication") == ["202", "206"]
    assert statuses("PreviewCommunication") == ["200", "206"]
    assert statuses("CreateShortUrl") == ["201"]
    assert statuses("FollowShortUrl") == ["302"]
    assert by_id(document, "FollowShortUrl")[2]["responses"]["302"]["headers"]["Location"]
    assert statuses("GetExample") == ["202"]
    assert statuses("ListContacts") == ["200"]


@pytest.mark.unit
def test_every_operation_documents_its_family_errors_and_429(document: Json) -> None:
    shapes = {
        "A": {"errors"},
        "B": {"error_code", "error_description"},
        "C": {"ResponseStatus"},
    }
    for path, method, operation in operations(document):
        family = operation["x-switchboard-family"]
        for status in ("400", "404", "429", "500", "503"):
            response = resolve(document, operation["responses"][status])
            schema = resolve(document, response["content"]["application/json"]["schema"])
            assert set(schema["required"]) == shapes[family], (method, path, status)
        limited = resolve(document, operation["responses"]["429"])
        assert resolve(document, limited["headers"]["Retry-After"])["required"] is True


@pytest.mark.unit
def test_error_shapes_accept_what_the_edge_prints(document: Json) -> None:
    samples: dict[str, Json] = {
        "A": {
            "errors": [
                {
                    "code": "404",
                    "title": "Not Found",
                    "details": "no such communication",
                    "ref": "req-1",
                    "httpStatusCode": 404,
                }
            ]
        },
        "B": {"error_code": "1017", "error_description": "criteria: unknown op"},
        "C": {
            "ResponseStatus": {
                "ErrorCode": "ValidationException",
                "Message": "bad",
                "Errors": [{"ErrorCode": "Length", "FieldName": "Messages[0].to", "Message": "x"}],
            }
        },
    }
    for family, body in samples.items():
        check = validator(document, {"$ref": f"#/components/schemas/Error{family}"})
        assert check.is_valid(body), family
        assert not check.is_valid({**body, "extra": 1}), family


@pytest.mark.unit
def test_security_public_routes_need_no_bearer(document: Json) -> None:
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    public = {
        operation["operationId"]
        for _, _, operation in operations(document)
        if operation.get("security") == []
    }
    assert public == {
        "GetQrCodeImage",
        "FollowShortUrl",
        "UploadAttachmentContent",
        "DownloadAttachmentContent",
        "ReceiveWebhook",
        "VerifyWebhook",
    }
    assert "403" not in by_id(document, "GetQrCodeImage")[2]["responses"]
    assert "403" in by_id(document, "ListContacts")[2]["responses"]


@pytest.mark.unit
def test_streams_bodies_and_uploads(document: Json) -> None:
    for operation_id in (
        "StreamSmsEvents",
        "StreamCommunicationEvents",
        "StreamContactsEvents",
        "StreamCallEvents",
    ):
        content = by_id(document, operation_id)[2]["responses"]["200"]["content"]
        event = content["text/event-stream"]["schema"]
        assert event["properties"]["data"]["contentMediaType"] == "application/json"
    content = by_id(document, "GetQrCodeImage")[2]["responses"]["200"]["content"]
    assert list(content) == ["image/png"]
    for operation_id in ("DownloadContactExport", "DownloadContactImportFailures"):
        content = by_id(document, operation_id)[2]["responses"]["200"]["content"]
        assert list(content) == ["text/csv"]
    upload = by_id(document, "UploadAttachmentContent")[2]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    imported = by_id(document, "ImportTemplatePackage")[2]["requestBody"]["content"]
    assert "multipart/form-data" in imported
    # Family B writes take forms too; the other families JSON only.
    assert (
        "application/x-www-form-urlencoded"
        in (by_id(document, "CreateContact")[2]["requestBody"]["content"])
    )
    assert list(by_id(document, "SendSms")[2]["requestBody"]["content"]) == ["application/json"]


@pytest.mark.unit
def test_creates_link_to_the_operations_on_what_they_created(document: Json) -> None:
    links = by_id(document, "CreateContact")[2]["responses"]["200"]["links"]
    assert links["GetContact"] == {
        "operationId": "GetContact",
        "parameters": {"contact_id": "$response.body#/id"},
        "description": "GET /contacts/{contact_id} on what was created.",
    }
    assert {"DeleteContact", "CreateContactAccessToken", "ListContactApplicationTokens"} <= set(
        links
    )
    assert "GetContactAccessToken" not in links  # it needs an id this create does not give
    nested = by_id(document, "CreateConferenceMember")[2]["responses"]["200"]["links"]
    assert nested["GetConferenceMember"]["parameters"] == {
        "conference_id": "$request.path.conference_id",
        "member_id": "$response.body#/id",
    }
    sent = by_id(document, "SendCommunication")[2]["responses"]["202"]["links"]
    assert sent["GetCommunication"]["parameters"] == {
        "org": "$request.path.org",
        "communicationId": "$response.body#/id",
    }


@pytest.mark.unit
def test_response_schemas_know_which_keys_are_always_printed(document: Json) -> None:
    contact = validator(document, {"$ref": "#/components/schemas/contacts.v1.Contact"})
    assert not contact.is_valid({"id": "ct_1"})  # always_print_primitive_fields: all present
    assert not contact.is_valid({"id": 1})
    message = resolve(document, {"$ref": "#/components/schemas/sms.v1.SmsMessage-input"})
    assert set(message.get("required", [])) >= {"channel", "to", "content"}


# ---------------------------------------------------------------------------------------------
# The tables the generator keeps for what servicers decide at run time, against their source
# ---------------------------------------------------------------------------------------------


def _constants(module: ast.Module) -> dict[str, int]:
    found = {}
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, int):
                    found[target.id] = node.value.value
    return found


def _values(node: ast.expr, constants: dict[str, int]) -> set[int | str]:
    if isinstance(node, ast.IfExp):
        return _values(node.body, constants) | _values(node.orelse, constants)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | str):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    raise AssertionError(f"cannot read {ast.dump(node)}: make it a constant")


# The calls that mark an RPC's response as a bare list, and which argument names the field.
BARE_LIST_CALLS = {"bare_list": 0, "page_response": 1, "list_response": 2}


def servicer_calls(functions: Mapping[str, int]) -> dict[str, set[int | str]]:
    """RPC method name -> the values its servicer passes to each of `functions` (name -> the
    argument's position), by AST."""
    found: dict[str, set[int | str]] = {}
    for source in sorted(SERVER.rglob("*.py")):
        module = ast.parse(source.read_text(encoding="utf-8"))
        constants = _constants(module)
        for node in ast.walk(module):
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            for call in ast.walk(node):
                if not isinstance(call, ast.Call):
                    continue
                name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
                if isinstance(name, str) and name in functions and node.name[:1].isupper():
                    argument = call.args[functions[name]]
                    found.setdefault(node.name, set()).update(_values(argument, constants))
    return found


def rpc_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for _, _, rpc in http_bindings():
        method = rpc.rsplit(".", 1)[1]
        assert method not in names, f"{method} names two RPCs: read the service too"
        names[method] = rpc
    return names


@pytest.mark.unit
def test_success_statuses_match_the_servicers() -> None:
    names = rpc_names()
    in_code = {names[m]: values for m, values in servicer_calls({"set_http_status": 0}).items()}
    assert in_code == {rpc: set(statuses) for rpc, statuses in SUCCESS_STATUSES.items()}


@pytest.mark.unit
def test_bare_lists_match_the_servicers() -> None:
    names = rpc_names()
    in_code = {names[m]: values for m, values in servicer_calls(BARE_LIST_CALLS).items()}
    assert in_code == {rpc: {field} for rpc, field in BARE_LISTS.items()}


# ---------------------------------------------------------------------------------------------
# Served by Envoy
# ---------------------------------------------------------------------------------------------


@pytest.mark.envoy
async def test_envoy_serves_the_document(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == DOCUMENT_PATH.read_bytes()


@pytest.mark.envoy
async def test_envoy_serves_the_docs_page_from_local_assets(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    # Everything the page loads comes from this origin (no CDN).
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
    assert 'url: "openapi.json"' in page.text
    assets = (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css"))
    for asset, media in assets:
        assert f'"docs/{asset}"' in page.text
        response = await http.get(f"/docs/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"] == media
        assert response.content == (SWAGGER_UI / asset).read_bytes()
    missing = await http.get("/docs/nope.js")
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "404"


@pytest.mark.envoy
async def test_a_streamed_event_and_a_bare_list_match_the_document(
    document: Json, http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    created = await http.post("/contacts", json={"first_name": "Ana"}, headers=bearer)
    assert created.status_code == 200
    listed = await http.get("/contacts", headers=bearer)
    assert validator(document, json_schema(document, "ListContacts")).is_valid(listed.json())
    event = resolve(
        document,
        by_id(document, "StreamContactsEvents")[2]["responses"]["200"]["content"][
            "text/event-stream"
        ]["schema"]["properties"]["data"]["contentSchema"],
    )
    check = validator(document, event)
    async with http.stream(
        "GET", "/contacts/events", params={"after": "0"}, headers=bearer
    ) as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        line = await anext(line async for line in stream.aiter_lines() if line.startswith("data:"))
    data = json.loads(line.removeprefix("data:"))
    assert data["envelope"]["type"] == "contact.created"
    errors = [str(e) for e in check.iter_errors(data)]
    assert not errors
