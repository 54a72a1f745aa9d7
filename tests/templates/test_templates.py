"""Templates (Communications API v2, family A) through the real Envoy edge: the documented
requests of seed 001, the draft → stable → archived lifecycle, validation on write, previews,
validation against examples, commit and purge, deployment packages, cross-org isolation; plus
the gRPC surface and the reads the communications domain makes.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from sqlalchemy import select
from switchboard.templates.v1 import deployment_pb2, templates_service_pb2_grpc
from switchboard.templates.v1 import templates_service_pb2 as pb

from switchboard.server.app.server import Application
from switchboard.server.core.auth import Role
from switchboard.server.core.db import table_of
from switchboard.server.core.models import EventRecord
from switchboard.server.core.version import server_version
from switchboard.server.templates.models import TemplateVersionRecord
from tests.support.auth import TokenFactory
from tests.support.errors import error_details

pytestmark = pytest.mark.envoy

SEED_CONTENT = "SGkgWygke25hbWV9KV0sIGVudGVyIFsoJHtyZXNldExpbmt9KV0gdG8gcmVzZXQgcGFzc3dvcmQ="
SEED_RENDERED = "Hi Juan, enter https://password.com/reset/123456 to reset password"
# seeds/001: the TemplateRequestDto of every templates-beta example (the single-quoted JSON of
# the curl lines is a documentation artifact; this is it as valid JSON).
SEED_TEMPLATE: dict[str, Any] = {
    "type": "password_reset",
    "language": "en",
    "channel": "sms",
    "data": {"senderInfo": "YOIGO", "content": SEED_CONTENT},
    "arguments": {
        "name": "Juan",
        "subscriptions": ["ftth", "mobile", "health"],
        "resetLink": "https://password.com/reset/123456",
        "birthDate": "2022-04-25 12:00:00",
        "vipClient": False,
        "balance": 45.7,
        "birthCountry": "US",
        "attached.txt": "SG9sYSBQYWJsbyA6KQo=",
        "embedded_image_png": (
            "iVBORw0KGgoAAAANSUhEUgAAAAUAAAAFCAYAAACNbyblAAAAHElEQVQI12P4//8/w38GIAXDIBKE0DHxgljN"
            "BAAO9TXL0Y4OHwAAAABJRU5ErkJggg=="
        ),
        "qrArgument": "Text to convert into QR Code",
    },
    "requestRef": "https://jiranext.masmovil.com/browse/CUCO-817",
}
SEED_LIST_QUERY = {
    "type": "password_reset",
    "channel": "sms",
    "language": "en",
    "subject": "Shippingintransit",
    "content": "shippingisintransit",
    "limit": "20",
    "offset": "0",
    "changeType": "stable",
}
SEED_DELETE_QUERY = {
    "type": "password_reset",
    "channel": "sms",
    "language": "en",
    "changeType": "draft",
}
SEED_DOWNLOAD = {
    "download": [{"objectId": "d5b5c973-3194-49b6-96f4-508167f05506", "objectType": "sms_example"}]
}
SEED_VALIDATE = {
    "type": "password_reset",
    "language": "en",
    "channel": "sms",
    "changeType": "draft",
}

# The public docs' CommunicationTypeRequestDto example (its first arguments), extended with the
# arguments the seed's templates pass, typed as their values are.
PASSWORD_RESET_TYPE: dict[str, Any] = {
    "code": "password_reset",
    "description": "Provides the user a link to reset his password",
    "realTimeRequired": True,
    "deliveryWindow": "ANYDAY_8AM8PM",
    "sendingType": "EXTERNAL",
    "arguments": [
        {"name": "userName", "type": "String", "sensitive": False},
        {"name": "bonusList", "type": "StringList", "sensitive": False},
        {"name": "productNameAndInfo", "type": "StringMap", "sensitive": False},
        {"name": "maxRetries", "type": "Number", "sensitive": False},
        {"name": "resetLink", "type": "Link", "sensitive": True},
        {"name": "birthCountry", "type": "LocaleRegion", "sensitive": False},
        {"name": "name", "type": "String", "sensitive": False},
        {"name": "subscriptions", "type": "StringList", "sensitive": False},
        {"name": "birthDate", "type": "Date", "sensitive": False},
        {"name": "vipClient", "type": "Boolean", "sensitive": False},
        {"name": "balance", "type": "Number", "sensitive": False},
        {"name": "attached.txt", "type": "Attachment", "sensitive": False},
        {"name": "embedded_image_png", "type": "Image", "sensitive": False},
        {"name": "qrArgument", "type": "QrCode", "sensitive": False},
    ],
}
TEMPLATE_KEYS = {
    "id",
    "type",
    "language",
    "channel",
    "data",
    "changeType",
    "version",
    "requestRef",
    "createdTime",
    "updatedTime",
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def admin_headers(make_token: TokenFactory, org: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(org, roles=[Role.ADMIN])}"}


def envelope(response: httpx.Response, status: int) -> Any:
    """The `data` of a family A success, after checking the status and the envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"commit", "id", "data"}, body
    assert body["commit"] == server_version()
    return body["data"]


def errors(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    """The documented ResponseErrorDto of a family A error, after checking it."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}, body
    for error in body["errors"]:
        assert set(error) == {"code", "title", "details", "ref", "httpStatusCode"}
        assert error["httpStatusCode"] == status
    problems: list[dict[str, Any]] = body["errors"]
    return problems


def details(response: httpx.Response, status: int) -> str:
    return " | ".join(f"{e['title']}: {e['details']}" for e in errors(response, status))


async def ensure_type(
    http: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = body or PASSWORD_RESET_TYPE
    response = await http.put(f"/v2/types/{body['code']}", json=body, headers=admin)
    data: dict[str, Any] = envelope(response, 200)
    return data


def new_type_code() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def simple_type(
    http: httpx.AsyncClient, admin: dict[str, str], **extra_arguments: str
) -> str:
    """A fresh type with `name` (String) and `link` (Link, sensitive), plus any given."""
    code = new_type_code()
    arguments = [
        {"name": "name", "type": "String"},
        {"name": "link", "type": "Link", "sensitive": True},
        *({"name": k, "type": v} for k, v in extra_arguments.items()),
    ]
    await ensure_type(http, admin, {"code": code, "description": "test", "arguments": arguments})
    return code


def sms(type_code: str, text: str, sender: str = "BRAND", **fields: Any) -> dict[str, Any]:
    return {
        "type": type_code,
        "language": "en",
        "channel": "sms",
        "data": {"senderInfo": sender, "content": b64(text)},
        **fields,
    }


def email(type_code: str, html: str, subject: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": type_code,
        "language": "en",
        "channel": "email",
        "data": {"senderInfo": "news@brand.example", "subject": subject, "content": b64(html)},
        **fields,
    }


# ---- seed 001: every documented request -----------------------------------------------------


async def test_seed_requests_succeed_with_their_documented_codes(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    admin = admin_headers(make_token, org)
    await ensure_type(http, admin)
    base = f"/v2/beta/orgs/{org}/templates"

    # POST: 202 "Communication template successfully created" (a draft).
    created = envelope(await http.post(base, json=SEED_TEMPLATE, headers=bearer), 202)
    assert set(created) == TEMPLATE_KEYS
    assert created["changeType"] == "draft" and created["version"] == 1
    assert created["data"] == {"senderInfo": "YOIGO", "content": SEED_CONTENT}
    assert created["requestRef"] == SEED_TEMPLATE["requestRef"]

    # PUT: 200 "Communication template successfully updated".
    updated = envelope(await http.put(base, json=SEED_TEMPLATE, headers=bearer), 200)
    assert updated["id"] == created["id"] and updated["changeType"] == "draft"

    # GET with every documented filter: 200 (nothing stable matches that subject and content).
    assert envelope(await http.get(base, params=SEED_LIST_QUERY, headers=bearer), 200) == []

    # preview: 200, the rendered content.
    preview = envelope(await http.post(f"{base}/preview", json=SEED_TEMPLATE, headers=bearer), 200)
    assert preview["content"] == SEED_RENDERED
    assert preview["senderInfo"] == "YOIGO" and preview["channel"] == "sms"

    # preview/validate: 202 TemplateValidationV2Response.
    validation = envelope(
        await http.post(f"{base}/preview/validate", json=SEED_TEMPLATE, headers=bearer), 202
    )
    assert validation["valid"] is True, validation
    assert validation["rendered"]["content"] == SEED_RENDERED

    # validate the stored draft: 202.
    stored = envelope(await http.post(f"{base}/validate", json=SEED_VALIDATE, headers=bearer), 202)
    assert stored["valid"] is True and stored["templateId"] == created["id"]

    # download: 200, a JSON package served as an attachment (the documented example selects an
    # example, so the org has one with that id).
    example_id = SEED_DOWNLOAD["download"][0]["objectId"]
    example = {
        "type": "password_reset",
        "language": "en",
        "channel": "sms",
        "expectedOutput": {"senderInfo": "YOIGO", "content": SEED_RENDERED},
        "arguments": {"name": "Juan", "resetLink": "https://password.com/reset/123456"},
    }
    await http.put(f"/v2/orgs/{org}/examples/{example_id}", json=example, headers=bearer)
    response = await http.post(f"{base}/download", json=SEED_DOWNLOAD, headers=bearer)
    package = envelope(response, 200)
    assert response.headers["content-disposition"].startswith("attachment")
    assert [e["id"] for e in package["examples"]] == [example_id]
    assert [t["code"] for t in package["types"]] == ["password_reset"]

    # import: multipart/form-data with the package JSON in `file`: 200.
    files = {"file": ("package.json", response.content, "application/json")}
    imported = envelope(await http.post(f"{base}/import", files=files, headers=bearer), 200)
    assert {i["outcome"] for i in imported["items"]} == {"unchanged"}

    # DELETE the draft: 200.
    deleted = envelope(await http.delete(base, params=SEED_DELETE_QUERY, headers=bearer), 200)
    assert [(t["id"], t["changeType"]) for t in deleted] == [(created["id"], "deleted")]


async def test_communication_type_documented_requests(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    admin = admin_headers(make_token, org)
    stored = await ensure_type(http, admin)
    # GET /v2/types/password_reset: 202 "Found communication type".
    found = envelope(await http.get("/v2/types/password_reset", headers=bearer), 202)
    assert found == stored
    assert found["arguments"][4] == {"name": "resetLink", "type": "Link", "sensitive": True}
    assert (found["deliveryWindow"], found["sendingType"]) == ("ANYDAY_8AM8PM", "EXTERNAL")
    # Unknown: 404 "Communication type not found".
    problem = errors(await http.get("/v2/types/no_such_type", headers=bearer), 404)[0]
    assert problem["code"] == "404" and "no_such_type" in problem["details"]
    # The list.
    listed = envelope(await http.get("/v2/types", params={"limit": 1000}, headers=bearer), 200)
    assert stored in listed


# ---- communication types ----------------------------------------------------------------------


async def test_type_writes_need_admin(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = new_type_code()
    body = {"code": code, "description": "x"}
    problem = errors(await http.put(f"/v2/types/{code}", json=body, headers=bearer), 403)[0]
    assert problem["code"] == "403" and "Admin" in problem["details"]
    partner = {"Authorization": f"Bearer {make_token(org, roles=[Role.PARTNER])}"}
    errors(await http.put(f"/v2/types/{code}", json=body, headers=partner), 403)
    errors(await http.get(f"/v2/types/{code}", headers=bearer), 404)
    created = await ensure_type(http, admin_headers(make_token, org), body)
    assert created["code"] == code and created["version"] == 1
    # Defaults.
    assert created["deliveryWindow"] == "ANYDAY_ANYTIME"
    assert created["sendingType"] == "INTERNAL"
    assert created["realTimeRequired"] is False and created["arguments"] == []


async def test_type_validation(http: httpx.AsyncClient, org: str, make_token: TokenFactory) -> None:
    admin = admin_headers(make_token, org)
    code = new_type_code()

    async def put(path_code: str, **body: Any) -> httpx.Response:
        return await http.put(f"/v2/types/{path_code}", json=body, headers=admin)

    for bad_code in ("A_upper", "_leading", "trailing_", "x", "a" * 41, "has-dash"):
        text = details(await put(bad_code, description="d"), 400)
        assert "typeCode" in text, text
    assert "code" in details(await put(code, code=code + "x", description="d"), 400)
    assert "description" in details(await put(code), 400)
    for window in ("ANYDAY_9PM8AM", "ANYDAY_13AM2PM", "WEEKDAY_8AM8PM", "ANYDAY_8AM8AM"):
        text = details(await put(code, description="d", deliveryWindow=window), 400)
        assert "deliveryWindow" in text, text
    assert "sendingType" in details(await put(code, description="d", sendingType="LOCAL"), 400)
    bad_arguments = [
        {"name": "a", "type": "Text"},
        {"name": "a", "type": "String"},
        {"name": "9lives", "type": "String"},
        {"type": "String"},
    ]
    text = details(await put(code, description="d", arguments=bad_arguments), 400)
    for where in ("arguments[0].type", "arguments[1].name", "arguments[2].name", "arguments[3]"):
        assert where in text, text
    # Unknown keys are refused, not dropped.
    assert "colour" in details(await put(code, description="d", colour="red"), 400)
    for window in ("ANYDAY_8AM12PM", "ANYDAY_12PM4PM", "ANYDAY_4PM8PM", "ANYDAY_8PM12AM"):
        stored = await ensure_type(
            http, admin, {"code": code, "description": "d", "deliveryWindow": window}
        )
        assert stored["deliveryWindow"] == window
    # Case-insensitive values are normalised.
    stored = await ensure_type(
        http,
        admin,
        {
            "code": code,
            "description": "d",
            "deliveryWindow": "anyday_anytime",
            "sendingType": "external",
            "arguments": [{"name": "n", "type": "stringlist"}],
        },
    )
    assert stored["deliveryWindow"] == "ANYDAY_ANYTIME" and stored["sendingType"] == "EXTERNAL"
    assert stored["arguments"] == [{"name": "n", "type": "StringList", "sensitive": False}]


async def test_type_update_versions_and_refuses_breaking_templates(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    admin = admin_headers(make_token, org)
    code = await simple_type(http, admin)
    before = envelope(await http.get(f"/v2/types/{code}", headers=bearer), 202)
    # The same body again changes nothing.
    same = {"code": code, "description": "test", "arguments": before["arguments"]}
    assert (await ensure_type(http, admin, same))["version"] == 1
    await http.post(f"/v2/orgs/{org}/templates", json=sms(code, "Hi [(${name})]"), headers=bearer)
    # Dropping `link` is fine (no template uses it); dropping `name` is not.
    only_name = {
        "code": code,
        "description": "v2",
        "arguments": [{"name": "name", "type": "String"}],
    }
    assert (await ensure_type(http, admin, only_name))["version"] == 2
    retyped = dict(only_name, arguments=[{"name": "other", "type": "String"}])
    text = details(await http.put(f"/v2/types/{code}", json=retyped, headers=admin), 400)
    assert "unknown argument 'name'" in text and org in text
    kind = await app.templates.types.get_type(code)
    assert kind is not None and kind.declared == {"name": "String"}
    events = await event_types(app, org, code)
    assert events == ["communication_type.created", "communication_type.updated"]


# ---- templates: validation on write --------------------------------------------------------


async def test_bad_templates_are_refused_naming_the_problem(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = await simple_type(http, admin_headers(make_token, org), count="Number")
    base = f"/v2/beta/orgs/{org}/templates"

    async def refused(body: dict[str, Any]) -> str:
        return details(await http.post(base, json=body, headers=bearer), 400)

    # An unclosed expression: the construct and its position.
    text = await refused(sms(code, "Hi\n  [(${name}"))
    assert "data.content" in text and "line 2, column 3" in text and "[(${name}" in text
    # An argument the type does not declare.
    text = await refused(sms(code, "Hi [(${nmae})]"))
    assert "unknown argument 'nmae'" in text and "'${nmae}' at line 1, column 6" in text
    # Unsupported constructs, text and HTML.
    text = await refused(sms(code, '[# th:each="x : ${name}"]x[/]'))
    assert "not supported" in text and "[# th:each" in text
    text = await refused(sms(code, "Hi [(${name.toUpperCase()})]"))
    assert "method calls are not supported" in text
    text = await refused(email(code, '<p th:onclick="${name}">x</p>', "Hi"))
    assert "th:onclick is not supported" in text
    text = await refused(email(code, "<p>ok</p>", "Hi [[${name"))
    assert "data.subject" in text and "line 1, column 4" in text
    # Incompatible usage: th:each over a String.
    text = await refused(email(code, '<li th:each="c : ${name}">x</li>', "Hi"))
    assert "th:each over ${name}, a String" in text
    # Not base64, not UTF-8, empty.
    assert "is not base64" in await refused(
        sms(code, "x") | {"data": {"senderInfo": "B", "content": "%%%"}}
    )
    latin1 = base64.b64encode("café".encode("latin-1")).decode()
    assert "UTF-8" in await refused(
        sms(code, "x") | {"data": {"senderInfo": "B", "content": latin1}}
    )
    # Channel rules: SMS sender required and short, subject only on email.
    assert "senderInfo" in await refused(sms(code, "Hi", sender=""))
    assert "senderInfo" in await refused(sms(code, "Hi", sender="A very long sender name"))
    with_subject = sms(code, "Hi")
    with_subject["data"]["subject"] = "no"
    assert "only email templates have a subject" in await refused(with_subject)
    no_subject = email(code, "<p>x</p>", "")
    assert "data.subject" in await refused(no_subject)
    # The request's shape: the type must exist, the channel and language be valid.
    text = await refused(sms("no_such_type_here", "Hi"))
    assert "type: no communication type 'no_such_type_here'" in text
    assert "channel" in await refused(sms(code, "Hi") | {"channel": "fax"})
    assert "language" in await refused(sms(code, "Hi") | {"language": "not a language"})
    assert "dataa" in await refused(sms(code, "Hi") | {"dataa": {}})
    # Nothing was stored.
    for state in ("draft", "stable"):
        listed = await http.get(base, params={"changeType": state}, headers=bearer)
        assert envelope(listed, 200) == []


async def test_email_templates_render_html_and_subject(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = await simple_type(http, admin_headers(make_token, org), items="StringList")
    html = (
        '<p>Hello <b th:text="${name}">you</b>, [[${name}]]</p>'
        '<ul><li th:each="i : ${items}" th:text="${i}">x</li></ul>'
        '<p th:if="${link}"><a href="[(${link})]">reset</a></p>'
    )
    body = email(code, html, "Welcome [(${name})]") | {
        "arguments": {"name": "Ana & Bo", "items": ["a", "b"], "link": "https://x.example/r"}
    }
    base = f"/v2/beta/orgs/{org}/templates"
    preview = envelope(await http.post(f"{base}/preview", json=body, headers=bearer), 200)
    assert preview["subject"] == "Welcome Ana & Bo"
    assert preview["content"] == (
        "<p>Hello <b>Ana &amp; Bo</b>, Ana &amp; Bo</p><ul><li>a</li><li>b</li></ul>"
        '<p><a href="https://x.example/r">reset</a></p>'
    )
    created = envelope(await http.post(f"/v2/orgs/{org}/templates", json=body, headers=bearer), 202)
    assert created["data"]["subject"] == "Welcome [(${name})]"
    assert unb64(created["data"]["content"]) == html
    assert created["changeType"] == "stable"


# ---- lifecycle ------------------------------------------------------------------------------


async def test_lifecycle_draft_commit_stable_archived_deleted_purged(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    base = f"/v2/beta/orgs/{org}/templates"
    key = {"type": code, "channel": "sms", "language": "en"}

    async def listed(state: str) -> list[tuple[int, str]]:
        response = await http.get(base, params={"changeType": state, "type": code}, headers=bearer)
        return [(t["version"], t["changeType"]) for t in envelope(response, 200)]

    async def commit(*ids: str, deleted: tuple[str, ...] = ()) -> dict[str, Any]:
        body = {
            "commitItems": [{"objectId": i, "objectType": "sms_template"} for i in ids],
            "deletedItems": [{"objectId": i, "objectType": "sms_template"} for i in deleted],
        }
        result: dict[str, Any] = envelope(
            await http.post("/v2/beta/commit", json=body, headers=bearer), 202
        )
        return result

    v1 = envelope(await http.post(base, json=sms(code, "one [(${name})]"), headers=bearer), 202)
    # A second draft of the same key is refused: PUT updates the draft.
    text = details(await http.post(base, json=sms(code, "again"), headers=bearer), 400)
    assert "already has a draft" in text and v1["id"] in text
    v1b = envelope(
        await http.put(base, json=sms(code, "one, edited [(${name})]"), headers=bearer), 200
    )
    assert (v1b["id"], v1b["version"]) == (v1["id"], 1)
    assert unb64(v1b["data"]["content"]) == "one, edited [(${name})]"
    assert await listed("draft") == [(1, "draft")] and await listed("stable") == []
    # Drafts are not what communications use.
    assert await app.templates.templates.stable_template(org, code, "sms", "en") is None

    result = await commit(v1["id"])
    assert result == {
        "committed": [
            {
                "objectId": v1["id"],
                "objectType": "sms_template",
                "outcome": "committed",
                "archivedId": "",
            }
        ],
        "deleted": [],
    }
    assert await listed("stable") == [(1, "stable")] and await listed("draft") == []
    stable = envelope(await http.get(f"/v2/orgs/{org}/templates", params=key, headers=bearer), 200)
    assert [t["id"] for t in stable] == [v1["id"]] and "committedTime" in stable[0]

    v2 = envelope(await http.post(base, json=sms(code, "two [(${name})]"), headers=bearer), 202)
    assert v2["version"] == 2
    result = await commit(v2["id"])
    assert result["committed"][0]["archivedId"] == v1["id"]
    assert await listed("stable") == [(2, "stable")] and await listed("archived") == [
        (1, "archived")
    ]
    # Committing again is harmless; committing an archived version is not.
    assert (await commit(v2["id"]))["committed"][0]["outcome"] == "unchanged"
    body = {
        "commitItems": [{"objectId": v1["id"], "objectType": "sms_template"}],
        "deletedItems": [],
    }
    assert "only drafts" in details(
        await http.post("/v2/beta/commit", json=body, headers=bearer), 400
    )
    # The object type must name the template's channel.
    body = {
        "commitItems": [{"objectId": v2["id"], "objectType": "email_template"}],
        "deletedItems": [],
    }
    errors(await http.post("/v2/beta/commit", json=body, headers=bearer), 404)

    # The stable path writes a stable version directly, archiving the current one.
    v3 = envelope(
        await http.post(
            f"/v2/orgs/{org}/templates", json=sms(code, "three [(${name})]"), headers=bearer
        ),
        202,
    )
    assert (v3["version"], v3["changeType"]) == (3, "stable")
    assert await listed("archived") == [(1, "archived"), (2, "archived")]
    current = await app.templates.templates.stable_template(org, code, "sms", "en")
    assert current is not None and current.id == v3["id"] and current.version == 3
    assert current.compiled_content.render({"name": "Ana"}) == "three Ana"

    # DELETE (no changeType: draft and stable), then purge through commit's deletedItems.
    v4 = envelope(await http.post(base, json=sms(code, "four"), headers=bearer), 202)
    deleted = envelope(await http.delete(base, params=key, headers=bearer), 200)
    assert sorted((t["version"], t["changeType"]) for t in deleted) == [
        (3, "deleted"),
        (4, "deleted"),
    ]
    assert await listed("deleted") == [(3, "deleted"), (4, "deleted")]
    assert await app.templates.templates.stable_template(org, code, "sms", "en") is None
    errors(await http.delete(base, params=key, headers=bearer), 404)
    # Purging needs the deleted state.
    body = {
        "commitItems": [],
        "deletedItems": [{"objectId": v2["id"], "objectType": "sms_template"}],
    }
    assert "only deleted" in details(
        await http.post("/v2/beta/commit", json=body, headers=bearer), 400
    )
    result = await commit(deleted=(v3["id"], v4["id"]))
    assert [d["outcome"] for d in result["deleted"]] == ["purged", "purged"]
    assert await listed("deleted") == []

    # The history keeps every version that was not purged.
    history = envelope(await http.get(f"{base}/history", params=key, headers=bearer), 200)
    assert [(t["version"], t["changeType"]) for t in history] == [(1, "archived"), (2, "archived")]
    # A new version continues the numbering after the highest one kept.
    v5 = envelope(await http.post(base, json=sms(code, "five"), headers=bearer), 202)
    assert v5["version"] == 3

    assert await event_types(app, org, None, prefix="template.") == [
        "template.created",
        "template.updated",
        "template.committed",
        "template.created",
        "template.archived",
        "template.committed",
        "template.archived",
        "template.created",
        "template.created",
        "template.deleted",
        "template.deleted",
        "template.purged",
        "template.purged",
        "template.created",
    ]


async def test_delete_by_change_type_and_validation(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    base = f"/v2/beta/orgs/{org}/templates"
    key = {"type": code, "channel": "sms", "language": "en"}
    await http.post(f"/v2/orgs/{org}/templates", json=sms(code, "stable"), headers=bearer)
    await http.post(base, json=sms(code, "draft"), headers=bearer)
    errors(await http.delete(base, params=key | {"changeType": "archived"}, headers=bearer), 400)
    errors(await http.delete(base, params={"type": code, "channel": "sms"}, headers=bearer), 400)
    deleted = envelope(
        await http.delete(base, params=key | {"changeType": "stable"}, headers=bearer), 200
    )
    assert [t["changeType"] for t in deleted] == ["deleted"]
    assert unb64(deleted[0]["data"]["content"]) == "stable"
    drafts = envelope(await http.get(base, params={"changeType": "draft"}, headers=bearer), 200)
    assert [unb64(t["data"]["content"]) for t in drafts] == ["draft"]
    errors(await http.delete(base, params=key | {"changeType": "stable"}, headers=bearer), 404)


async def test_commit_accepts_types_and_examples_and_purges_examples(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    example_id = str(uuid.uuid4())
    example = {
        "type": code,
        "language": "en",
        "channel": "email",
        "expectedOutput": {"content": "<p>x</p>", "subject": "s"},
    }
    await http.put(f"/v2/orgs/{org}/examples/{example_id}", json=example, headers=bearer)
    draft = envelope(
        await http.post(
            f"/v2/beta/orgs/{org}/templates", json=email(code, "<p>x</p>", "s"), headers=bearer
        ),
        202,
    )
    body = {
        "commitItems": [
            {"objectId": draft["id"], "objectType": "email_template"},
            {"objectId": example_id, "objectType": "email_example"},
            {"objectId": code, "objectType": "communication_type"},
        ],
        "deletedItems": [{"objectId": example_id, "objectType": "email_example"}],
    }
    response = await http.post("/v2/beta/commit", json=body, headers=bearer)
    result = envelope(response, 202)
    assert [i["outcome"] for i in result["committed"]] == ["committed", "unchanged", "unchanged"]
    assert result["deleted"] == [
        {
            "objectId": example_id,
            "objectType": "email_example",
            "outcome": "purged",
            "archivedId": "",
        }
    ]
    errors(await http.get(f"/v2/orgs/{org}/examples/{example_id}", headers=bearer), 404)
    commit_id = response.json()["id"]
    committed = await event_types(app, org, draft["id"])
    assert committed == ["template.created", "template.committed"]
    assert await event_types(app, org, example_id) == ["example.created", "example.deleted"]

    async def refused(body: dict[str, Any], status: int = 400) -> str:
        return details(await http.post("/v2/beta/commit", json=body, headers=bearer), status)

    # All or nothing: one bad item and nothing is committed.
    second = envelope(
        await http.post(
            f"/v2/beta/orgs/{org}/templates", json=email(code, "<p>y</p>", "s"), headers=bearer
        ),
        202,
    )
    text = await refused(
        {
            "commitItems": [
                {"objectId": second["id"], "objectType": "email_template"},
                {"objectId": "missing", "objectType": "sms_template"},
            ],
            "deletedItems": [],
        },
        404,
    )
    assert "missing" in text
    drafts = await http.get(
        f"/v2/beta/orgs/{org}/templates", params={"changeType": "draft"}, headers=bearer
    )
    assert [t["id"] for t in envelope(drafts, 200)] == [second["id"]]
    # Request checks.
    assert "commitItems" in await refused({"commitItems": [], "deletedItems": []})
    assert "objectType" in await refused(
        {"commitItems": [{"objectId": "1", "objectType": "fax_template"}], "deletedItems": []}
    )
    assert "listed twice" in await refused(
        {"commitItems": [{"objectId": "1", "objectType": "sms_template"}] * 2}
    )
    assert "not deleted" in await refused(
        {"deletedItems": [{"objectId": code, "objectType": "communication_type"}]}
    )
    await refused(
        {"commitItems": [{"objectId": "no_type_x", "objectType": "communication_type"}]}, 404
    )
    assert commit_id


# ---- search -----------------------------------------------------------------------------------


async def test_search_filters_and_paging(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    admin = admin_headers(make_token, org)
    shipping = f"shipping_{uuid.uuid4().hex[:8]}"
    await ensure_type(http, admin, {"code": shipping, "description": "d"})
    other = await simple_type(http, admin)
    stable = f"/v2/orgs/{org}/templates"
    for body in (
        sms(shipping, "Your shipping is in transit"),
        sms(shipping, "Tu envío está en camino") | {"language": "es"},
        email(shipping, "<p>Shipping is in transit</p>", "Shipping in transit"),
        email(shipping, "<p>Delivered</p>", "Delivered") | {"language": "es"},
        sms(other, "Other [(${name})]"),
    ):
        envelope(await http.post(stable, json=body, headers=bearer), 202)

    async def search(**params: Any) -> list[tuple[str, str, str]]:
        found = envelope(await http.get(stable, params=params, headers=bearer), 200)
        return [
            ("ship" if t["type"] == shipping else "other", t["channel"], t["language"])
            for t in found
        ]

    assert len(await search()) == 5
    assert await search(type=shipping, channel="sms") == [
        ("ship", "sms", "en"),
        ("ship", "sms", "es"),
    ]
    assert len(await search(**{"type[contains]": "hipping_"})) == 4
    assert await search(**{"type[contains]": "t_"}) == [("other", "sms", "en")]
    assert await search(language="es") == [("ship", "email", "es"), ("ship", "sms", "es")]
    assert await search(subject="in TRANSIT") == [("ship", "email", "en")]
    assert await search(content="shipping is in") == [
        ("ship", "email", "en"),
        ("ship", "sms", "en"),
    ]
    assert await search(content="camino") == [("ship", "sms", "es")]
    page = await search(type=shipping, limit=2, offset=1)
    assert page == [("ship", "email", "es"), ("ship", "sms", "en")]
    # The beta path: same filters, plus changeType (stable by default).
    beta = f"/v2/beta/orgs/{org}/templates"
    found = envelope(
        await http.get(beta, params={"type": shipping, "channel": "email"}, headers=bearer), 200
    )
    assert [t["changeType"] for t in found] == ["stable", "stable"]
    # Bad values: 400, and unknown query parameters are refused.
    errors(await http.get(stable, params={"channel": "fax"}, headers=bearer), 400)
    errors(await http.get(stable, params={"limit": 5000}, headers=bearer), 400)
    errors(await http.get(beta, params={"changeType": "final"}, headers=bearer), 400)
    errors(await http.get(stable, params={"changeType": "stable"}, headers=bearer), 400)
    errors(await http.get(stable, params={"colour": "red"}, headers=bearer), 400)


# ---- previews and validation --------------------------------------------------------------


async def test_preview_and_preview_validate_report_problems(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = await simple_type(http, admin_headers(make_token, org), count="Number", vip="Boolean")
    base = f"/v2/beta/orgs/{org}/templates"
    text = "Hi [(${name})], you have [(${count})] [# th:if]"
    body = sms(code, text, arguments={"name": "Ana", "count": 3, "vip": "yes", "extra": 1})
    # preview: 400 naming every problem.
    problem_text = details(await http.post(f"{base}/preview", json=body, headers=bearer), 400)
    for expected in ("[#", "arguments.vip", "arguments.extra"):
        assert expected in problem_text, problem_text
    # preview/validate: 202 with the problems as data.
    result = envelope(await http.post(f"{base}/preview/validate", json=body, headers=bearer), 202)
    assert result["valid"] is False and "rendered" not in result
    fields = {p["field"] for p in result["problems"]}
    assert fields == {"data.content", "arguments.vip", "arguments.extra"}
    syntax = next(p for p in result["problems"] if p["field"] == "data.content")
    assert (syntax["line"], syntax["column"]) == (1, 39) and syntax["construct"].startswith("[#")

    # A valid template with a missing argument: the render fails and says which.
    body = sms(code, "Hi [(${name})], [(${count})] left", arguments={"name": "Ana"})
    text = details(await http.post(f"{base}/preview", json=body, headers=bearer), 400)
    assert "missing argument 'count'" in text
    result = envelope(await http.post(f"{base}/preview/validate", json=body, headers=bearer), 202)
    assert [p["message"] for p in result["problems"]] == ["missing argument 'count' in ${count}"]
    # ...and rendered when the arguments are there; integral numbers print as integers.
    body["arguments"]["count"] = 3
    preview = envelope(await http.post(f"{base}/preview", json=body, headers=bearer), 200)
    assert preview["content"] == "Hi Ana, 3 left"
    result = envelope(await http.post(f"{base}/preview/validate", json=body, headers=bearer), 202)
    assert result == {
        "valid": True,
        "problems": [],
        "rendered": {
            "type": code,
            "language": "en",
            "channel": "sms",
            "senderInfo": "BRAND",
            "content": "Hi Ana, 3 left",
        },
        "examples": [],
        "templateId": "",
    }
    # Nothing is stored by previews.
    assert envelope(await http.get(base, params={"changeType": "draft"}, headers=bearer), 200) == []


async def test_validate_renders_against_examples_with_a_diff(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    base = f"/v2/beta/orgs/{org}/templates"
    validate = {"type": code, "language": "en", "channel": "sms"}
    # No stable template yet: 404 "Template not found".
    errors(await http.post(f"{base}/validate", json=validate, headers=bearer), 404)
    await http.post(
        f"/v2/orgs/{org}/templates",
        json=sms(code, "Hi [(${name})],\nreset: [(${link})]"),
        headers=bearer,
    )
    good, bad, broken = (str(uuid.uuid4()) for _ in range(3))
    arguments = {"name": "Juan", "link": "https://r.example/1"}
    for example_id, expected, args in (
        (good, "Hi Juan,\nreset: https://r.example/1", arguments),
        (bad, "Hola Juan,\nreset: https://r.example/1", arguments),
        (broken, "whatever", {"name": "Juan"}),
    ):
        body = {
            **validate,
            "description": "d",
            "expectedOutput": {"senderInfo": "BRAND", "content": expected},
            "arguments": args,
        }
        envelope(
            await http.put(f"/v2/orgs/{org}/examples/{example_id}", json=body, headers=bearer), 200
        )
    # Another language's example is not this template's.
    other = {**validate, "language": "es", "expectedOutput": {"senderInfo": "X", "content": "y"}}
    await http.put(f"/v2/orgs/{org}/examples/{uuid.uuid4()}", json=other, headers=bearer)

    result = envelope(await http.post(f"{base}/validate", json=validate, headers=bearer), 202)
    assert result["valid"] is False and result["problems"] == []
    checks = {c["exampleId"]: c for c in result["examples"]}
    assert set(checks) == {good, bad, broken}
    assert checks[good]["passed"] is True and checks[good]["diff"] == ""
    assert checks[bad]["passed"] is False
    assert checks[bad]["diff"] == (
        "--- expected/content\n+++ rendered/content\n@@ -1,2 +1,2 @@\n"
        "-Hola Juan,\n+Hi Juan,\n reset: https://r.example/1\n"
    )
    assert checks[bad]["rendered"]["content"] == "Hi Juan,\nreset: https://r.example/1"
    assert checks[broken]["passed"] is False and "rendered" not in checks[broken]
    assert "missing argument 'link'" in checks[broken]["problems"][0]["message"]
    # A sender mismatch shows in the diff too.
    body = {
        **validate,
        "expectedOutput": {
            "senderInfo": "OTHER",
            "content": "Hi Juan,\nreset: https://r.example/1",
        },
        "arguments": arguments,
    }
    await http.put(f"/v2/orgs/{org}/examples/{good}", json=body, headers=bearer)
    result = envelope(await http.post(f"{base}/validate", json=validate, headers=bearer), 202)
    diff = next(c["diff"] for c in result["examples"] if c["exampleId"] == good)
    assert "-OTHER\n+BRAND\n" in diff and "expected/senderInfo" in diff
    # changeType draft validates the draft (404 without one); archived is not a choice.
    errors(
        await http.post(
            f"{base}/validate", json=validate | {"changeType": "draft"}, headers=bearer
        ),
        404,
    )
    errors(
        await http.post(
            f"{base}/validate", json=validate | {"changeType": "archived"}, headers=bearer
        ),
        400,
    )


# ---- examples ---------------------------------------------------------------------------------


async def test_examples_put_get_and_validation(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    await ensure_type(http, admin_headers(make_token, org))
    example_id = "30387cbc-e3da-4c2a-be92-8aad3438908a"
    # The public docs' ExampleRequestDto example.
    body = {
        "id": example_id,
        "type": "password_reset",
        "language": "en",
        "channel": "sms",
        "requestRef": "https://jiranext.masmovil.com/browse/CUCO-817",
        "description": "Mobile subscription contract sending",
        "expectedOutput": {"senderInfo": "MasMovil", "content": "Bienvenido a MasMovil!"},
        "arguments": {
            "name": "Juan",
            "subscriptions": ["ftth", "mobile", "health"],
            "resetLink": "https://password.com/reset/123456",
            "birthDate": "2022-04-25 12:00:00",
            "vipClient": False,
            "balance": 45.7,
            "birthCountry": "US",
        },
    }
    path = f"/v2/orgs/{org}/examples/{example_id}"
    errors(await http.get(path, headers=bearer), 404)
    stored = envelope(await http.put(path, json=body, headers=bearer), 200)
    found = envelope(await http.get(path, headers=bearer), 202)
    assert found == stored
    assert {k: found[k] for k in body} == body
    assert set(found) == {*body, "createdTime", "updatedTime"}
    # Replace: the example becomes the new body.
    replaced = envelope(
        await http.put(
            path,
            json=body | {"description": "changed", "arguments": {"name": "Ana"}},
            headers=bearer,
        ),
        200,
    )
    assert replaced["description"] == "changed" and replaced["arguments"] == {"name": "Ana"}
    assert replaced["createdTime"] == stored["createdTime"]
    # Uppercase ids are the same UUID.
    upper = f"/v2/orgs/{org}/examples/{example_id.upper()}"
    assert envelope(await http.get(upper, headers=bearer), 202)["id"] == example_id

    async def refused(example: dict[str, Any], where: str = path) -> str:
        return details(await http.put(where, json=example, headers=bearer), 400)

    assert "exampleId" in await refused(body | {"id": ""}, f"/v2/orgs/{org}/examples/not-a-uuid")
    assert "id: must equal" in await refused(body | {"id": str(uuid.uuid4())})
    text = await refused(
        body | {"arguments": {"nmae": "x", "balance": "lots", "birthCountry": "USA"}}
    )
    assert (
        "arguments.nmae" in text
        and "arguments.balance" in text
        and "arguments.birthCountry" in text
    )
    assert "expectedOutput" in await refused(
        {k: v for k, v in body.items() if k != "expectedOutput"}
    )
    assert "expectedOutput.senderInfo" in await refused(body | {"expectedOutput": {"content": "x"}})
    assert "type: no communication type" in await refused(body | {"type": "nope_nope"})
    email_example = body | {"channel": "email", "expectedOutput": {"content": "<p>x</p>"}}
    assert "expectedOutput.subject" in await refused(email_example)
    events = await event_types(app, org, example_id)
    assert events == ["example.created", "example.updated"]


# ---- cross-org isolation ------------------------------------------------------------------


async def test_another_orgs_templates_and_examples_are_invisible(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    draft = envelope(
        await http.post(f"/v2/beta/orgs/{org}/templates", json=sms(code, "x"), headers=bearer), 202
    )
    example_id = str(uuid.uuid4())
    example = {
        "type": code,
        "language": "en",
        "channel": "sms",
        "expectedOutput": {"senderInfo": "B", "content": "x"},
    }
    envelope(
        await http.put(f"/v2/orgs/{org}/examples/{example_id}", json=example, headers=bearer), 200
    )

    other_org = org + "-other"
    other = {"Authorization": f"Bearer {make_token(other_org)}"}
    # The path's org must be the token's...
    errors(await http.get(f"/v2/orgs/{org}/examples/{example_id}", headers=other), 403)
    errors(await http.get(f"/v2/beta/orgs/{org}/templates", headers=other), 403)
    errors(
        await http.post(f"/v2/beta/orgs/{org}/templates", json=sms(code, "y"), headers=other), 403
    )
    # ...and in its own org, the other org's objects do not exist.
    errors(await http.get(f"/v2/orgs/{other_org}/examples/{example_id}", headers=other), 404)
    listed = await http.get(
        f"/v2/beta/orgs/{other_org}/templates", params={"changeType": "draft"}, headers=other
    )
    assert envelope(listed, 200) == []
    validate = {"type": code, "language": "en", "channel": "sms", "changeType": "draft"}
    errors(
        await http.post(
            f"/v2/beta/orgs/{other_org}/templates/validate", json=validate, headers=other
        ),
        404,
    )
    body = {
        "commitItems": [{"objectId": draft["id"], "objectType": "sms_template"}],
        "deletedItems": [],
    }
    errors(await http.post("/v2/beta/commit", json=body, headers=other), 404)
    download = {"download": [{"objectId": draft["id"], "objectType": "sms_template"}]}
    errors(
        await http.post(
            f"/v2/beta/orgs/{other_org}/templates/download", json=download, headers=other
        ),
        404,
    )
    download = {"download": [{"objectId": example_id, "objectType": "sms_example"}]}
    errors(
        await http.post(
            f"/v2/beta/orgs/{other_org}/templates/download", json=download, headers=other
        ),
        404,
    )
    # The same example id in another org is another example.
    envelope(
        await http.put(
            f"/v2/orgs/{other_org}/examples/{example_id}",
            json=example | {"description": "mine"},
            headers=other,
        ),
        200,
    )
    mine = envelope(await http.get(f"/v2/orgs/{org}/examples/{example_id}", headers=bearer), 202)
    assert mine["description"] == ""
    # Without a token: 401.
    errors(await http.get(f"/v2/orgs/{org}/examples/{example_id}"), 401)


# ---- deployment packages --------------------------------------------------------------------


async def test_download_import_round_trip(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    stable = envelope(
        await http.post(
            f"/v2/orgs/{org}/templates", json=sms(code, "Hi [(${name})]"), headers=bearer
        ),
        202,
    )
    draft = envelope(
        await http.post(
            f"/v2/beta/orgs/{org}/templates", json=sms(code, "Hello [(${name})]"), headers=bearer
        ),
        202,
    )
    mail = envelope(
        await http.post(
            f"/v2/beta/orgs/{org}/templates",
            json=email(code, "<p>[[${name}]]</p>", "Hi"),
            headers=bearer,
        ),
        202,
    )
    example_id = str(uuid.uuid4())
    example = {
        "type": code,
        "language": "en",
        "channel": "sms",
        "expectedOutput": {"senderInfo": "BRAND", "content": "Hi Ana"},
        "arguments": {"name": "Ana"},
    }
    await http.put(f"/v2/orgs/{org}/examples/{example_id}", json=example, headers=bearer)
    selection = {
        "download": [
            {"objectId": stable["id"], "objectType": "sms_template"},
            {"objectId": draft["id"], "objectType": "sms_template"},
            {"objectId": mail["id"], "objectType": "email_template"},
            {"objectId": example_id, "objectType": "sms_example"},
            {"objectId": code, "objectType": "communication_type"},
        ]
    }
    response = await http.post(
        f"/v2/beta/orgs/{org}/templates/download", json=selection, headers=bearer
    )
    package = envelope(response, 200)
    assert (
        response.headers["content-disposition"] == 'attachment; filename="deployment-package.json"'
    )
    assert package["formatVersion"] == 1 and package["sourceOrg"] == org
    assert [t["id"] for t in package["templates"]] == [stable["id"], draft["id"], mail["id"]]
    assert [t["code"] for t in package["types"]] == [code]
    file = response.content

    # Into another org: the stable version stays stable, drafts stay drafts.
    target = org + "-prod"
    target_auth = {"Authorization": f"Bearer {make_token(target)}"}
    url = f"/v2/beta/orgs/{target}/templates/import"
    response = await http.post(
        url, files={"file": ("package.json", file, "application/json")}, headers=target_auth
    )
    result = envelope(response, 200)
    assert response.json()["id"] == json.loads(file)["id"]
    outcomes = [(i["objectType"], i["outcome"], i["changeType"]) for i in result["items"]]
    assert outcomes == [
        ("communication_type", "unchanged", ""),
        ("sms_example", "created", ""),
        ("sms_template", "created", "stable"),
        ("sms_template", "created", "draft"),
        ("email_template", "created", "draft"),
    ]
    copied = await app.templates.templates.stable_template(target, code, "sms", "en")
    assert copied is not None and copied.content == "Hi [(${name})]" and copied.id != stable["id"]
    drafts = envelope(
        await http.get(
            f"/v2/beta/orgs/{target}/templates", params={"changeType": "draft"}, headers=target_auth
        ),
        200,
    )
    assert sorted(unb64(t["data"]["content"]) for t in drafts) == [
        "<p>[[${name}]]</p>",
        "Hello [(${name})]",
    ]
    copied_example = envelope(
        await http.get(f"/v2/orgs/{target}/examples/{example_id}", headers=target_auth), 202
    )
    assert copied_example["expectedOutput"] == example["expectedOutput"]
    # The templates validate against the imported example there.
    validation = envelope(
        await http.post(
            f"/v2/beta/orgs/{target}/templates/validate",
            json={"type": code, "language": "en", "channel": "sms"},
            headers=target_auth,
        ),
        202,
    )
    assert validation["valid"] is True and validation["examples"][0]["passed"] is True

    # The same package again: 400 "duplicate version".
    response = await http.post(
        url, files={"file": ("package.json", file, "application/json")}, headers=target_auth
    )
    assert "duplicate version" in details(response, 400)
    # A fresh download of the same objects imports, changing nothing.
    again = await http.post(
        f"/v2/beta/orgs/{org}/templates/download", json=selection, headers=bearer
    )
    response = await http.post(
        url, files={"file": ("p.json", again.content, "application/json")}, headers=target_auth
    )
    assert {i["outcome"] for i in envelope(response, 200)["items"]} == {"unchanged"}


async def test_import_refuses_invalid_packages(
    http: httpx.AsyncClient, bearer: dict[str, str], org: str, make_token: TokenFactory
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    url = f"/v2/beta/orgs/{org}/templates/import"

    def package(**data: Any) -> bytes:
        body = {"commit": "v1", "id": str(uuid.uuid4()), "data": {"formatVersion": 1, **data}}
        return json.dumps(body).encode()

    async def refused(file: bytes, status: int = 400) -> str:
        files = {"file": ("package.json", file, "application/json")}
        return details(await http.post(url, files=files, headers=bearer), status)

    # The documented curl sends `file=undefined`.
    assert "not a deployment package" in await refused(b"undefined")
    assert "not a deployment package" in await refused(b'{"data": {"colour": 1}}')
    assert "formatVersion" in await refused(
        json.dumps({"id": "x", "data": {"formatVersion": 7}}).encode()
    )
    assert "id" in await refused(json.dumps({"data": {"formatVersion": 1}}).encode())
    template = {"type": code, "language": "en", "channel": "sms", "changeType": "stable"}
    bad = template | {"data": {"senderInfo": "B", "content": b64("Hi [(${nope})]")}}
    text = await refused(package(templates=[bad]))
    assert "data.templates[0].data.content" in text and "unknown argument 'nope'" in text
    unknown = template | {
        "type": "no_such_type_x",
        "data": {"senderInfo": "B", "content": b64("x")},
    }
    assert "no communication type" in await refused(package(templates=[unknown]))
    good = template | {"data": {"senderInfo": "B", "content": b64("Hi")}}
    assert "a second stable" in await refused(package(templates=[good, good]))
    # A type the package would change needs Admin.
    changed = {
        "code": code,
        "description": "changed",
        "arguments": [{"name": "name", "type": "String"}],
    }
    assert "only an Admin" in await refused(package(types=[changed], templates=[good]), 403)
    new_type = {"code": new_type_code(), "description": "new"}
    assert "only an Admin" in await refused(package(types=[new_type]), 403)
    # Multipart without a file part, and a body that is neither.
    response = await http.post(url, files={"other": ("x", b"{}")}, headers=bearer)
    assert "file" in details(response, 400)
    response = await http.post(
        url, content=b"hello", headers=bearer | {"content-type": "text/plain"}
    )
    assert "multipart/form-data" in details(response, 400)
    # Nothing of the refused packages was written.
    stable = await http.get(f"/v2/orgs/{org}/templates", params={"type": code}, headers=bearer)
    assert envelope(stable, 200) == []
    # An Admin may import type changes.
    admin = admin_headers(make_token, org)
    files = {
        "file": ("package.json", package(types=[changed], templates=[good]), "application/json")
    }
    result = envelope(await http.post(url, files=files, headers=admin), 200)
    assert [i["outcome"] for i in result["items"]] == ["updated", "created"]
    kind = envelope(await http.get(f"/v2/types/{code}", headers=bearer), 202)
    assert kind["description"] == "changed" and kind["version"] == 2


# ---- gRPC ---------------------------------------------------------------------------------------


async def test_grpc_surface(
    channel: grpc.aio.Channel, http: httpx.AsyncClient, org: str, make_token: TokenFactory
) -> None:
    stub = templates_service_pb2_grpc.TemplatesServiceStub(channel)
    admin = [("authorization", f"Bearer {make_token(org, roles=[Role.ADMIN])}")]
    client = [("authorization", f"Bearer {make_token(org)}")]
    code = new_type_code()
    body = pb.PutCommunicationTypeRequest(type_code=code)
    body.body.description = "grpc"
    body.body.arguments.add(name="name", type="String")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.PutCommunicationType(body, metadata=client)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    created = await stub.PutCommunicationType(body, metadata=admin)
    assert created.id == code and created.data.arguments[0].name == "name"
    found = await stub.GetCommunicationType(
        pb.GetCommunicationTypeRequest(type_code=code), metadata=client
    )
    assert found.data.description == "grpc"

    draft = pb.CreateDraftTemplateRequest(org=org)
    draft.body.type, draft.body.language, draft.body.channel = code, "en", "sms"
    draft.body.data.sender_info = "BRAND"
    draft.body.data.content = b64("Hi [(${name}")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.CreateDraftTemplate(draft, metadata=client)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, _, fields = error_details(bad.value)
    assert reason == "400" and fields == [("data.content", "Template")]
    assert "line 1, column 4" in (bad.value.details() or "")
    draft.body.data.content = b64("Hi [(${name})]")
    made = await stub.CreateDraftTemplate(draft, metadata=client)
    assert made.data.change_type == "draft"
    committed = await stub.CommitTemplates(
        pb.CommitTemplatesRequest(
            commit_items=[
                deployment_pb2.DeploymentItem(object_id=made.id, object_type="sms_template")
            ]
        ),
        metadata=client,
    )
    assert committed.data.committed[0].outcome == "committed"

    preview = pb.PreviewTemplateRequest(org=org)
    preview.body.CopyFrom(draft.body)
    preview.body.arguments.update({"name": "Ana"})
    rendered = await stub.PreviewTemplate(preview, metadata=client)
    assert rendered.data.content == "Hi Ana"

    # Import over gRPC: the package JSON itself as the body.
    download = pb.DownloadTemplatePackageRequest(
        org=org,
        download=[deployment_pb2.DeploymentItem(object_id=made.id, object_type="sms_template")],
    )
    package = await stub.DownloadTemplatePackage(download, metadata=client)
    target = org + "-grpc"
    request = pb.ImportTemplatePackageRequest(org=target)
    request.body.content_type = "application/json"
    request.body.data = json_format.MessageToJson(package).encode()
    imported = await stub.ImportTemplatePackage(
        request, metadata=[("authorization", f"Bearer {make_token(target)}")]
    )
    assert [i.outcome for i in imported.data.items] == ["unchanged", "created"]


# ---- what the communications domain reads ---------------------------------------------------


async def test_stable_template_and_channels_for_communications(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    stable = f"/v2/orgs/{org}/templates"
    await http.post(stable, json=sms(code, "Hi [(${name})]"), headers=bearer)
    await http.post(
        stable, json=email(code, "<p>[[${name}]]</p>", "For [(${name})]"), headers=bearer
    )
    await http.post(
        f"/v2/beta/orgs/{org}/templates",
        json=sms(code, "draft") | {"channel": "whatsapp"},
        headers=bearer,
    )
    assert await app.templates.templates.stable_channels(org, code, "en") == ["email", "sms"]
    assert await app.templates.templates.stable_channels(org, code, "es") == []
    assert await app.templates.templates.stable_channels(org + "-x", code, "en") == []
    mail = await app.templates.templates.stable_template(org, code, "email", "EN")
    assert (
        mail is not None and mail.subject == "For [(${name})]" and mail.compiled_subject is not None
    )
    assert mail.compiled_subject.render({"name": "<Ana>"}) == "For <Ana>"
    assert mail.compiled_content.render({"name": "<Ana>"}) == "<p>&lt;Ana&gt;</p>"
    assert mail.sender_info == "news@brand.example" and mail.version == 1
    assert await app.templates.templates.stable_template(org, code, "whatsapp", "en") is None
    kind = await app.templates.types.get_type(code)
    assert kind is not None and kind.sensitive_arguments == {"link"}
    assert kind.delivery_window == "ANYDAY_ANYTIME" and kind.delivery_hours is None
    assert await app.templates.types.get_type("no_such_type_at_all") is None


# ---- helpers ------------------------------------------------------------------------------------


async def event_types(
    app: Application, org: str, resource_id: str | None, prefix: str = ""
) -> list[str]:
    columns = table_of(EventRecord).c
    query = select(columns.type).where(columns.org_id == org).order_by(columns.seq)
    if resource_id is not None:
        query = query.where(columns.resource_id == resource_id)
    if prefix:
        query = query.where(columns.type.startswith(prefix))
    async with app.db.read() as session:
        return list((await session.execute(query)).scalars())


async def test_versions_are_stored_decoded(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    org: str,
    make_token: TokenFactory,
    app: Application,
) -> None:
    code = await simple_type(http, admin_headers(make_token, org))
    await http.post(
        f"/v2/orgs/{org}/templates", json=sms(code, "Olá [(${name})] ✓"), headers=bearer
    )
    columns = table_of(TemplateVersionRecord).c
    async with app.db.read() as session:
        rows = (
            await session.execute(select(columns.content).where(columns.org_id == org))
        ).scalars()
        assert list(rows) == ["Olá [(${name})] ✓"]
