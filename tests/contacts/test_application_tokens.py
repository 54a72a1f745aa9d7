"""A contact's application tokens: /contacts/{contact_id}/application_tokens."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from switchboard.contacts.v1 import access_token_pb2, contacts_service_pb2_grpc
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from switchboard.server.app.server import Application
from tests.support.auth import Metadata, TokenFactory
from tests.support.contacts import make_contact
from tests.support.errors import assert_error, error_details
from tests.support.rest import bare

pytestmark = pytest.mark.envoy

KEYS = {
    "id",
    "sender_id_address",
    "message_delivery_provider",
    "token",
    "application_id",
    "created_date",
    "last_update_date",
    "version_number",
}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "sender_id_address": "+34600111222",
        "message_delivery_provider": "APN",
        "token": "device-token-1",
        **overrides,
    }


async def setup(app: Application, org: str) -> str:
    contact = await make_contact(app, org)
    return f"/contacts/{contact}/application_tokens"


async def create(http: httpx.AsyncClient, bearer: dict[str, str], path: str, **fields: Any) -> str:
    response = await http.post(path, json=body(**fields), headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    token_id: str = response.json()["id"]
    return token_id


async def get(http: httpx.AsyncClient, bearer: dict[str, str], url: str) -> dict[str, Any]:
    response = await http.get(url, headers=bearer)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()
    return item


async def test_crud(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, org: str
) -> None:
    path = await setup(app, org)
    token_id = await create(http, bearer, path)
    url = f"{path}/{token_id}"
    item = await get(http, bearer, url)
    assert set(item) == KEYS
    assert item["id"] == token_id and item["token"] == "device-token-1"
    assert item["message_delivery_provider"] == "APN"
    assert item["application_id"] == "test-app" and item["version_number"] == 1
    assert item["created_date"] == item["last_update_date"] and item["created_date"].endswith("Z")
    assert bare(await http.get(path, headers=bearer)) == [item]

    # POST /{id}: only the fields given change.
    response = await http.post(url, json={"message_delivery_provider": "FCM"}, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": token_id}
    updated = await get(http, bearer, url)
    assert updated["message_delivery_provider"] == "FCM"
    assert updated["token"] == "device-token-1" and updated["version_number"] == 2
    assert updated["last_update_date"] > updated["created_date"]

    # PUT (form-encoded): a replacement; absent fields are cleared.
    response = await http.put(
        url, content="token=device-token-2&version_number=2", headers={**bearer, **FORM}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}
    replaced = await get(http, bearer, url)
    assert (replaced["token"], replaced["sender_id_address"]) == ("device-token-2", "")
    assert replaced["message_delivery_provider"] == ""
    assert replaced["version_number"] == 3

    response = await http.delete(url, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert_error(await http.get(url, headers=bearer), 404, "404")
    assert bare(await http.get(path, headers=bearer)) == []


async def test_filters(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, org: str
) -> None:
    path = await setup(app, org)
    apn = await create(http, bearer, path)
    fcm = await create(http, bearer, path, message_delivery_provider="FCM", token="t2")
    # The day the server dated them (the two may straddle a midnight, so expect by that).
    days = {i: (await get(http, bearer, f"{path}/{i}"))["created_date"][:10] for i in (apn, fcm)}
    for params, expected in (
        ({"message_delivery_provider": "FCM"}, [fcm]),
        ({"token": "device-token-1"}, [apn]),
        ({"id": fcm}, [fcm]),
        ({"sender_id_address": "+34600111222"}, [apn, fcm]),
        ({"application_id": "test-app"}, [apn, fcm]),
        ({"created_date": days[apn]}, [i for i in (apn, fcm) if days[i] == days[apn]]),
        ({"last_update_date": "2001-01-01"}, []),
        ({"limit": 1, "offset": 1}, [fcm]),
    ):
        found = bare(await http.get(path, params=params, headers=bearer))
        assert [t["id"] for t in found] == expected, params
    # Item GETs accept (and ignore) the same filters.
    item = await get(http, bearer, f"{path}/{apn}?message_delivery_provider=FCM")
    assert item["id"] == apn


async def test_validation(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, org: str
) -> None:
    path = await setup(app, org)
    for fields, code, name in (
        ({"token": "t" * 4097}, "1023", "token"),
        ({"message_delivery_provider": "P" * 33}, "1023", "message_delivery_provider"),
        ({"sender_id_address": "s" * 129}, "1023", "sender_id_address"),
        ({"token": ""}, "400", "token"),
        ({"colour": "red"}, "400", "colour"),
    ):
        response = await http.post(path, json=body(**fields), headers=bearer)
        assert name in assert_error(response, 400, code), fields
    response = await http.post(path, json={"sender_id_address": "x"}, headers=bearer)
    assert "token" in assert_error(response, 400, "400")
    token_id = await create(http, bearer, path)
    url = f"{path}/{token_id}"
    assert_error(await http.post(url, json={"token": "x" * 5000}, headers=bearer), 400, "1023")
    assert_error(await http.post(url, json={"token": " "}, headers=bearer), 400, "400")
    response = await http.put(url, content="sender_id_address=x", headers={**bearer, **FORM})
    assert "token" in assert_error(response, 400, "400")
    response = await http.put(url, content="token=a&colour=red", headers={**bearer, **FORM})
    assert "colour" in assert_error(response, 400, "400")
    assert (await get(http, bearer, url))["version_number"] == 1


async def test_stale_versions(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, org: str
) -> None:
    path = await setup(app, org)
    url = f"{path}/{await create(http, bearer, path)}"
    assert_error(
        await http.post(url, json={"token": "a", "version_number": 2}, headers=bearer), 409, "1001"
    )
    assert_error(
        await http.post(url, json={"token": "a"}, headers={**bearer, "If-Match": '"4"'}),
        409,
        "1001",
    )
    assert_error(
        await http.put(url, content="token=a&version_number=0", headers={**bearer, **FORM}),
        409,
        "1001",
    )
    assert_error(await http.delete(url, headers={**bearer, "If-Match": "9"}), 409, "1001")
    response = await http.post(url, json={"token": "a"}, headers={**bearer, "If-Match": "1"})
    assert response.status_code == 200, response.text
    response = await http.put(url, data={"token": "b", "version_number": "2"}, headers=bearer)
    assert response.status_code == 200, response.text
    assert (await get(http, bearer, url))["version_number"] == 3


async def test_scoped_to_org_and_contact(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    app: Application,
    org: str,
    make_token: TokenFactory,
) -> None:
    path = await setup(app, org)
    other_path = await setup(app, org)
    token_id = await create(http, bearer, path)
    url = f"{path}/{token_id}"
    assert_error(await http.get(f"{other_path}/{token_id}", headers=bearer), 404, "404")
    assert_error(await http.delete(f"{other_path}/{token_id}", headers=bearer), 404, "404")
    assert bare(await http.get(other_path, headers=bearer)) == []

    other = {"Authorization": f"Bearer {make_token(org + '-other')}"}
    assert_error(await http.get(path, headers=other), 404, "404")
    assert_error(await http.get(url, headers=other), 404, "404")
    assert_error(await http.post(path, json=body(), headers=other), 404, "404")
    assert_error(await http.post(url, json={"token": "x"}, headers=other), 404, "404")
    assert_error(await http.put(url, data={"token": "x"}, headers=other), 404, "404")
    assert_error(await http.delete(url, headers=other), 404, "404")
    assert_error(
        await http.post("/contacts/con_missing/application_tokens", json=body(), headers=bearer),
        404,
        "404",
    )
    assert_error(await http.get(path), 401, "401")
    assert (await get(http, bearer, url))["version_number"] == 1


async def test_grpc(channel: grpc.aio.Channel, auth: Metadata, app: Application, org: str) -> None:
    stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    contact = await make_contact(app, org)
    created = await stub.CreateContactApplicationToken(
        pb.CreateContactApplicationTokenRequest(
            contact_id=contact,
            body=access_token_pb2.ContactApplicationTokenInput(token="t", sender_id_address="s"),
        ),
        metadata=auth,
    )
    await stub.ReplaceContactApplicationToken(
        pb.ReplaceContactApplicationTokenRequest(
            contact_id=contact,
            application_token_id=created.id,
            body=access_token_pb2.ContactApplicationTokenInput(token="t2", version_number=1),
        ),
        metadata=auth,
    )
    got = await stub.GetContactApplicationToken(
        pb.GetContactApplicationTokenRequest(contact_id=contact, application_token_id=created.id),
        metadata=auth,
    )
    assert (got.token, got.sender_id_address, got.version_number) == ("t2", "", 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateContactApplicationToken(
            pb.UpdateContactApplicationTokenRequest(
                contact_id=contact,
                application_token_id=created.id,
                body=access_token_pb2.ContactApplicationTokenInput(token="x" * 5000),
            ),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0] == "1023"
    listed = await stub.ListContactApplicationTokens(
        pb.ListContactApplicationTokensRequest(contact_id=contact), metadata=auth
    )
    assert [t.id for t in listed.application_tokens] == [created.id]
    await stub.DeleteContactApplicationToken(
        pb.DeleteContactApplicationTokenRequest(
            contact_id=contact, application_token_id=created.id
        ),
        metadata=auth,
    )
