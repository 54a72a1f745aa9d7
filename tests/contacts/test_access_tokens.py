"""Access tokens: the org's (/access_tokens) and a contact's (/contacts/{id}/access_tokens).

Opaque `<id>.<secret>` tokens, shown once, stored as a hash, expiring; `verify` is what content
endpoints use.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from switchboard.contacts.v1 import contacts_service_pb2 as pb
from switchboard.contacts.v1 import contacts_service_pb2_grpc

from switchboard.server.app.server import Application
from switchboard.server.contacts.models import AccessTokenRecord, TokenOwner
from switchboard.server.contacts.tokens import AccessTokenService
from switchboard.server.core.db import table_of
from switchboard.server.core.errors import Unauthenticated
from tests.support.auth import Metadata, TokenFactory
from tests.support.clock import TEST_CLOCK
from tests.support.contacts import make_contact
from tests.support.errors import assert_error, error_details
from tests.support.rest import bare

pytestmark = pytest.mark.envoy

TOKENS = "/access_tokens"
TOKEN_KEYS = {
    "id",
    "expiry_time",
    "application_id",
    "created_date",
    "last_updated_date",
    "version_number",
}
_tokens = table_of(AccessTokenRecord)


async def expire(app: Application, token_id: str) -> None:
    def work(session: Session) -> None:
        past = TEST_CLOCK.now() - timedelta(seconds=1)
        session.execute(update(_tokens).where(_tokens.c.id == token_id).values(expiry_time=past))

    await app.db.run_write(work)


def service(app: Application) -> AccessTokenService:
    return app.contacts.access_tokens


async def create(http: httpx.AsyncClient, bearer: dict[str, str], path: str = TOKENS) -> str:
    response = await http.post(path, json={}, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    token: str = response.json()["id"]
    return token


# ---- /access_tokens ---------------------------------------------------------------------------


async def test_create_get_list_delete(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application
) -> None:
    before = TEST_CLOCK.now()
    token = await create(http, bearer)
    token_id, _, secret = token.partition(".")
    assert token_id.startswith("atk_") and len(secret) >= 43

    for name in (token_id, token):  # the id or the full token
        response = await http.get(f"{TOKENS}/{name}", headers=bearer)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == TOKEN_KEYS
        assert body["id"] == token_id  # never the secret
    assert body["application_id"] == "test-app"
    assert body["version_number"] == 1
    expiry = datetime.fromisoformat(body["expiry_time"])
    ttl = timedelta(seconds=app.settings.access_token_ttl_seconds)
    assert before + ttl - timedelta(seconds=5) <= expiry <= TEST_CLOCK.now() + ttl
    assert body["expiry_time"].endswith("Z")

    assert bare(await http.get(TOKENS, headers=bearer)) == [body]
    assert bare(await http.get(TOKENS, params={"id": token_id}, headers=bearer)) == [body]
    assert bare(await http.get(TOKENS, params={"id": "atk_nope"}, headers=bearer)) == []
    day = before.date().isoformat()
    assert bare(await http.get(TOKENS, params={"created_date": day}, headers=bearer)) == [body]
    exact = {"expiry_time": body["expiry_time"]}
    assert bare(await http.get(TOKENS, params=exact, headers=bearer)) == [body]

    response = await http.delete(f"{TOKENS}/{token}", headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert_error(await http.get(f"{TOKENS}/{token_id}", headers=bearer), 404, "404")
    assert_error(await http.delete(f"{TOKENS}/{token_id}", headers=bearer), 404, "404")
    assert bare(await http.get(TOKENS, headers=bearer)) == []
    with pytest.raises(Unauthenticated):
        await service(app).verify(token, TokenOwner.ORG)


async def test_wrong_secret_is_unknown(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    token = await create(http, bearer)
    token_id = token.partition(".")[0]
    assert_error(await http.get(f"{TOKENS}/{token_id}.wrong", headers=bearer), 404, "404")
    assert_error(await http.delete(f"{TOKENS}/{token_id}.wrong", headers=bearer), 404, "404")
    assert (await http.get(f"{TOKENS}/{token}", headers=bearer)).status_code == 200


async def test_only_the_hash_is_stored(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application
) -> None:
    token = await create(http, bearer)
    token_id, _, secret = token.partition(".")
    async with app.db.read() as session:
        [row] = (await session.execute(select(_tokens).where(_tokens.c.id == token_id))).all()
        dump = [tuple(r) for r in (await session.execute(select(_tokens))).all()]
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for r in dump for value in r)
    async with app.db.read() as session:  # nowhere else either (e.g. the event log)
        for table in ("events", "access_tokens"):
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
            assert all(secret not in str(value) for r in rows for value in r)


async def test_verify(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, org: str
) -> None:
    tokens = service(app)
    token = await create(http, bearer)
    token_id = token.partition(".")[0]
    verified = await tokens.verify(token, TokenOwner.ORG)
    assert (verified.id, verified.org_id, verified.owner_type) == (token_id, org, TokenOwner.ORG)
    for wrong in (token_id, token_id + ".", token + "x", "junk", "", "." + token):
        with pytest.raises(Unauthenticated):
            await tokens.verify(wrong, TokenOwner.ORG)
    with pytest.raises(Unauthenticated):
        await tokens.verify(token, TokenOwner.CONTACT)
    with pytest.raises(Unauthenticated):
        await tokens.verify(token, TokenOwner.ORG, owner_id="someone")

    attachment = await tokens.create(org, "app", TokenOwner.ATTACHMENT, "att_1")
    assert (await tokens.verify(attachment, TokenOwner.ATTACHMENT, "att_1")).owner_id == "att_1"
    with pytest.raises(Unauthenticated):
        await tokens.verify(attachment, TokenOwner.ATTACHMENT, "att_2")
    # Attachment tokens belong to the org's collection (so they can be listed and revoked).
    listed = bare(await http.get(TOKENS, headers=bearer))
    assert {t["id"] for t in listed} == {token_id, attachment.partition(".")[0]}


async def test_expired_tokens_are_listed_but_refused(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application
) -> None:
    token = await create(http, bearer)
    token_id = token.partition(".")[0]
    await expire(app, token_id)
    body = (await http.get(f"{TOKENS}/{token_id}", headers=bearer)).json()
    assert datetime.fromisoformat(body["expiry_time"]) < TEST_CLOCK.now()
    assert [t["id"] for t in bare(await http.get(TOKENS, headers=bearer))] == [token_id]
    with pytest.raises(Unauthenticated):
        await service(app).verify(token, TokenOwner.ORG)


async def test_errors(
    http: httpx.AsyncClient, bearer: dict[str, str], make_token: TokenFactory, org: str
) -> None:
    assert_error(await http.get(TOKENS), 401, "401")
    assert_error(await http.post(TOKENS, json={}), 401, "401")
    assert "scope" in assert_error(
        await http.post(TOKENS, json={"scope": "x"}, headers=bearer), 400, "400"
    )
    assert_error(
        await http.get(TOKENS, params={"expiry_time": "later"}, headers=bearer), 400, "400"
    )
    token = await create(http, bearer)
    token_id = token.partition(".")[0]
    other = {"Authorization": f"Bearer {make_token(org + '-other')}"}
    assert_error(await http.get(f"{TOKENS}/{token_id}", headers=other), 404, "404")
    assert_error(await http.get(f"{TOKENS}/{token}", headers=other), 404, "404")
    assert_error(await http.delete(f"{TOKENS}/{token}", headers=other), 404, "404")
    assert bare(await http.get(TOKENS, headers=other)) == []
    stale = {**bearer, "If-Match": "2"}
    assert_error(await http.delete(f"{TOKENS}/{token_id}", headers=stale), 409, "1001")
    response = await http.delete(f"{TOKENS}/{token_id}", headers={**bearer, "If-Match": "1"})
    assert response.status_code == 200, response.text


# ---- /contacts/{contact_id}/access_tokens -----------------------------------------------------


async def test_contact_tokens(
    http: httpx.AsyncClient, bearer: dict[str, str], app: Application, org: str
) -> None:
    contact = await make_contact(app, org)
    other_contact = await make_contact(app, org)
    path = f"/contacts/{contact}/access_tokens"
    token = await create(http, bearer, path)
    token_id = token.partition(".")[0]
    body = (await http.get(f"{path}/{token}", headers=bearer)).json()
    assert set(body) == TOKEN_KEYS and body["id"] == token_id
    assert bare(await http.get(path, headers=bearer)) == [body]
    verified = await service(app).verify(token, TokenOwner.CONTACT, contact)
    assert verified.owner_id == contact
    with pytest.raises(Unauthenticated):
        await service(app).verify(token, TokenOwner.CONTACT, other_contact)

    # Only visible under its contact.
    assert bare(await http.get(TOKENS, headers=bearer)) == []
    assert_error(await http.get(f"{TOKENS}/{token_id}", headers=bearer), 404, "404")
    other_path = f"/contacts/{other_contact}/access_tokens"
    assert bare(await http.get(other_path, headers=bearer)) == []
    assert_error(await http.get(f"{other_path}/{token_id}", headers=bearer), 404, "404")
    org_token = await create(http, bearer)
    assert_error(await http.get(f"{path}/{org_token}", headers=bearer), 404, "404")

    # PUT renews: the expiry moves ahead, the version goes up.
    await expire_soon(app, token_id)
    short = (await http.get(f"{path}/{token_id}", headers=bearer)).json()
    response = await http.put(f"{path}/{token}", data={}, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json() == {}
    renewed = (await http.get(f"{path}/{token_id}", headers=bearer)).json()
    assert renewed["version_number"] == 2
    assert renewed["expiry_time"] > short["expiry_time"]
    assert renewed["last_updated_date"] > renewed["created_date"]
    response = await http.put(f"{path}/{token_id}", json={}, headers={**bearer, "If-Match": "1"})
    assert_error(response, 409, "1001")
    response = await http.put(f"{path}/{token_id}.nope", json={}, headers=bearer)
    assert_error(response, 404, "404")

    # An expired token cannot be renewed.
    await expire(app, token_id)
    assert "expired" in assert_error(
        await http.put(f"{path}/{token_id}", json={}, headers=bearer), 400, "400"
    )
    with pytest.raises(Unauthenticated):
        await service(app).verify(token, TokenOwner.CONTACT, contact)

    response = await http.delete(f"{path}/{token_id}", headers=bearer)
    assert response.status_code == 200, response.text
    assert bare(await http.get(path, headers=bearer)) == []


async def expire_soon(app: Application, token_id: str) -> None:
    def work(session: Session) -> None:
        soon = TEST_CLOCK.now() + timedelta(seconds=30)
        session.execute(update(_tokens).where(_tokens.c.id == token_id).values(expiry_time=soon))

    await app.db.run_write(work)


async def test_contact_tokens_need_the_contact(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    app: Application,
    org: str,
    make_token: TokenFactory,
) -> None:
    missing = "/contacts/con_missing/access_tokens"
    assert_error(await http.post(missing, json={}, headers=bearer), 404, "404")
    assert_error(await http.get(missing, headers=bearer), 404, "404")
    assert_error(await http.get(f"{missing}/atk_x", headers=bearer), 404, "404")
    assert_error(await http.put(f"{missing}/atk_x", json={}, headers=bearer), 404, "404")
    assert_error(await http.delete(f"{missing}/atk_x", headers=bearer), 404, "404")

    contact = await make_contact(app, org)
    path = f"/contacts/{contact}/access_tokens"
    token = await create(http, bearer, path)
    other = {"Authorization": f"Bearer {make_token(org + '-other')}"}
    assert_error(await http.post(path, json={}, headers=other), 404, "404")
    assert_error(await http.get(path, headers=other), 404, "404")
    assert_error(await http.get(f"{path}/{token}", headers=other), 404, "404")
    assert_error(await http.put(f"{path}/{token}", json={}, headers=other), 404, "404")
    assert_error(await http.delete(f"{path}/{token}", headers=other), 404, "404")
    assert_error(await http.get(path), 401, "401")
    assert len(bare(await http.get(path, headers=bearer))) == 1


async def test_delete_owned(app: Application, org: str) -> None:
    tokens = service(app)
    contact = await make_contact(app, org)
    token = await tokens.create(org, "app", TokenOwner.CONTACT, contact)
    kept = await tokens.create(org, "app", TokenOwner.ORG)
    await app.db.run_write(
        lambda session: tokens.delete_owned(session, org, TokenOwner.CONTACT, contact)
    )
    with pytest.raises(Unauthenticated):
        await tokens.verify(token, TokenOwner.CONTACT, contact)
    assert (await tokens.verify(kept, TokenOwner.ORG)).org_id == org


# ---- gRPC ------------------------------------------------------------------------------------


async def test_grpc_tokens(
    channel: grpc.aio.Channel, auth: Metadata, app: Application, org: str
) -> None:
    stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    created = await stub.CreateAccessToken(pb.CreateAccessTokenRequest(), metadata=auth)
    token_id = created.id.partition(".")[0]
    got = await stub.GetAccessToken(
        pb.GetAccessTokenRequest(access_token_id=created.id), metadata=auth
    )
    assert got.id == token_id and got.version_number == 1
    assert got.expiry_time.ToDatetime(UTC) > TEST_CLOCK.now()
    for _ in range(2):
        await stub.CreateAccessToken(pb.CreateAccessTokenRequest(), metadata=auth)
    first = await stub.ListAccessTokens(pb.ListAccessTokensRequest(limit=2), metadata=auth)
    assert len(first.access_tokens) == 2 and first.next_page_token
    rest = await stub.ListAccessTokens(
        pb.ListAccessTokensRequest(page_token=first.next_page_token), metadata=auth
    )
    assert len(rest.access_tokens) == 1 and not rest.next_page_token

    contact = await make_contact(app, org)
    made = await stub.CreateContactAccessToken(
        pb.CreateContactAccessTokenRequest(contact_id=contact), metadata=auth
    )
    await stub.RenewContactAccessToken(
        pb.RenewContactAccessTokenRequest(contact_id=contact, access_token_id=made.id),
        metadata=auth,
    )
    listed = await stub.ListContactAccessTokens(
        pb.ListContactAccessTokensRequest(contact_id=contact), metadata=auth
    )
    assert [t.version_number for t in listed.access_tokens] == [2]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetContactAccessToken(
            pb.GetContactAccessTokenRequest(contact_id="nope", access_token_id=made.id),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value)[0] == "404"
    await stub.DeleteContactAccessToken(
        pb.DeleteContactAccessTokenRequest(contact_id=contact, access_token_id=made.id),
        metadata=auth,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListAccessTokens(pb.ListAccessTokensRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
