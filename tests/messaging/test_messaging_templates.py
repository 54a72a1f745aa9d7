"""Message templates through the REST edge (family B): CRUD, form PUT, locking, unique names,
lengths, cross-org isolation, events; and the domain functions render / body_allowed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from switchboard.server.core.db import table_of
from switchboard.server.core.errors import InvalidArgument
from switchboard.server.core.models import EventRecord
from switchboard.server.messaging.content.message_templates import (
    MissingValues,
    body_allowed,
    placeholders,
    render,
)
from tests.support.auth import TokenFactory
from tests.support.errors import assert_error
from tests.support.rest import FORM

_events = table_of(EventRecord)
PATH = "/messaging/message_templates"


async def create(http: httpx.AsyncClient, bearer: dict[str, str], **fields: Any) -> str:
    response = await http.post(PATH, json=fields, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    template_id: str = response.json()["id"]
    return template_id


async def get(http: httpx.AsyncClient, bearer: dict[str, str], template_id: str) -> dict[str, Any]:
    response = await http.get(f"{PATH}/{template_id}", headers=bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.unit
def test_render_and_placeholders() -> None:
    pattern = "Hi {{name}}, code {{ code }} ({{name}}) {{ not a placeholder }} {{}}"
    assert placeholders(pattern) == ["name", "code"]
    assert (
        render(pattern, {"name": "Ana", "code": "{{name}}"})
        == "Hi Ana, code {{name}} (Ana) {{ not a placeholder }} {{}}"
    )
    with pytest.raises(MissingValues) as caught:
        render(pattern, {})
    assert "name, code" in str(caught.value)
    assert isinstance(caught.value, InvalidArgument)


@pytest.mark.unit
def test_body_allowed() -> None:
    assert body_allowed([], "anything")
    validators = [r"Your code is \d{6}", r"Order [A-Z]+ shipped"]
    assert body_allowed(validators, "Your code is 123456")
    assert not body_allowed(validators, "Your code is 123456!")  # whole body
    assert body_allowed(validators, "Order ABC shipped")
    assert not body_allowed(["("], "(")  # a broken pattern matches nothing


@pytest.mark.envoy
async def test_crud_form_put_locking_and_events(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any, org: str
) -> None:
    template_id = await create(
        http, bearer, designation="TEMPLATE", name="otp", pattern="Code {{code}}"
    )
    body = await get(http, bearer, template_id)
    assert body["designation"] == "TEMPLATE"
    assert body["pattern"] == "Code {{code}}"
    assert body["version_number"] == 1
    assert body["application_id"] == "test-app"
    assert body["created_date"].endswith("Z")
    # Item GET accepts and ignores filters.
    response = await http.get(f"{PATH}/{template_id}", params={"name": "x"}, headers=bearer)
    assert response.status_code == 200
    # Partial update.
    response = await http.post(
        f"{PATH}/{template_id}", json={"pattern": "Your code: {{code}}"}, headers=bearer
    )
    assert response.json() == {"id": template_id}
    body = await get(http, bearer, template_id)
    assert (body["name"], body["pattern"], body["version_number"]) == (
        "otp",
        "Your code: {{code}}",
        2,
    )
    # Stale version, by body and by If-Match.
    response = await http.post(
        f"{PATH}/{template_id}", json={"name": "x", "version_number": 1}, headers=bearer
    )
    assert_error(response, 409, "1001")
    response = await http.post(
        f"{PATH}/{template_id}", json={"name": "x"}, headers={**bearer, "If-Match": '"1"'}
    )
    assert_error(response, 409, "1001")
    # Form-encoded PUT replaces; mandatory fields must be present.
    form = "designation=VALIDATOR&name=otp-check&pattern=Code+%5Cd%7B6%7D&version_number=2"
    response = await http.put(
        f"{PATH}/{template_id}", content=form, headers={**bearer, "content-type": FORM}
    )
    assert response.status_code == 200, response.text
    body = await get(http, bearer, template_id)
    assert (body["designation"], body["name"], body["pattern"]) == (
        "VALIDATOR",
        "otp-check",
        r"Code \d{6}",
    )
    assert body["version_number"] == 3
    response = await http.put(
        f"{PATH}/{template_id}", content="name=only", headers={**bearer, "content-type": FORM}
    )
    assert_error(response, 400, "400")
    # Delete.
    response = await http.delete(f"{PATH}/{template_id}", headers=bearer)
    assert response.status_code == 200
    assert_error(await http.get(f"{PATH}/{template_id}", headers=bearer), 404, "404")
    async with app.db.read() as session:
        rows = (
            await session.execute(
                select(_events.c.type)
                .where(_events.c.org_id == org, _events.c.resource_id == template_id)
                .order_by(_events.c.seq)
            )
        ).scalars()
        assert list(rows) == [
            "message_template.created",
            "message_template.updated",
            "message_template.updated",
            "message_template.deleted",
        ]


@pytest.mark.envoy
async def test_validation_unique_names_and_lists(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory
) -> None:
    first = await create(http, bearer, designation="TEMPLATE", name="a", pattern="A {{x}}")
    second = await create(http, bearer, designation="validator", name="b", pattern="B.*")
    response = await http.post(
        PATH, json={"designation": "TEMPLATE", "name": "a", "pattern": "p"}, headers=bearer
    )
    assert_error(response, 409, "1011")
    response = await http.post(f"{PATH}/{second}", json={"name": "a"}, headers=bearer)
    assert_error(response, 409, "1011")
    response = await http.post(
        PATH, json={"designation": "TEMPLATE", "name": "n" * 129, "pattern": "p"}, headers=bearer
    )
    assert_error(response, 400, "1023")
    response = await http.post(
        PATH, json={"designation": "OTHER", "name": "c", "pattern": "p"}, headers=bearer
    )
    assert_error(response, 400, "400")
    response = await http.post(PATH, json={"name": "c", "pattern": "p"}, headers=bearer)
    assert_error(response, 400, "400")
    response = await http.post(
        PATH, json={"designation": "VALIDATOR", "name": "c", "pattern": "(unclosed"}, headers=bearer
    )
    assert_error(response, 400, "400")
    # Bare-array list with exact filters.
    response = await http.get(PATH, headers=bearer)
    assert response.status_code == 200
    assert [t["id"] for t in response.json()] == [first, second]
    response = await http.get(PATH, params={"designation": "VALIDATOR"}, headers=bearer)
    assert [t["id"] for t in response.json()] == [second]
    # Another org: 404 and an empty list; names are per org.
    other = {"Authorization": f"Bearer {make_token('org-other-templates')}"}
    assert_error(await http.get(f"{PATH}/{first}", headers=other), 404, "404")
    response = await http.put(
        f"{PATH}/{first}",
        content="designation=TEMPLATE&name=z&pattern=z",
        headers={**other, "content-type": FORM},
    )
    assert_error(response, 404, "404")
    assert_error(await http.delete(f"{PATH}/{first}", headers=other), 404, "404")
    assert (await http.get(PATH, headers=other)).json() == []


@pytest.mark.envoy
async def test_shared_sender_validators_are_immutable(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Any
) -> None:
    template_id = await create(http, bearer, designation="VALIDATOR", name="v", pattern="x")
    service = app.messaging.message_templates
    hook = service.shared_sender_lock
    service.shared_sender_lock = lambda session, org_id, tid: tid == template_id
    try:
        response = await http.post(f"{PATH}/{template_id}", json={"pattern": "y"}, headers=bearer)
        assert_error(response, 403, "403")
        assert_error(await http.delete(f"{PATH}/{template_id}", headers=bearer), 403, "403")
    finally:
        service.shared_sender_lock = hook


async def test_validators_of_a_shared_sender_are_immutable(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    """A VALIDATOR attached to the org's copy of a SHARED sender is the operator's rule."""
    validator = await create(
        http, bearer, designation="VALIDATOR", name="otp-rule", pattern=r"Your code is \d{6}"
    )
    free = await create(http, bearer, designation="VALIDATOR", name="free-rule", pattern="x.*")
    copy = await http.post(
        "/messaging/sender_ids",
        json={"parent_id": "sid_shared_us_alerts", "message_templates": [validator]},
        headers=bearer,
    )
    assert copy.status_code == 200, copy.text
    changed = await http.post(f"{PATH}/{validator}", json={"pattern": ".*"}, headers=bearer)
    assert "shared sender" in assert_error(changed, 403, "403")
    assert_error(await http.delete(f"{PATH}/{validator}", headers=bearer), 403, "403")
    assert (await get(http, bearer, validator))["pattern"] == r"Your code is \d{6}"
    # Templates no shared sender uses stay the customer's to change.
    ok = await http.post(f"{PATH}/{free}", json={"pattern": "y.*"}, headers=bearer)
    assert ok.status_code == 200, ok.text
