"""Access tokens (opaque, expiring, hash-only) and contacts' application tokens.

An access token is `<id>.<secret>`: the id names the row, the secret (32 random bytes) proves
possession and is stored only as its SHA-256. The create call returns the full token, the only
time the secret is shown. Tokens belong to an owner: the org (`/access_tokens`), a contact
(`/contacts/{id}/access_tokens`) or an attachment (messaging). The org's collection holds its
ORG and ATTACHMENT tokens; a contact's tokens are only visible under that contact.

Management calls (get, delete, renew) accept the id or the full token; a full token with a wrong
secret is as unknown as a wrong id (404). `verify` is what content endpoints call: it refuses
unknown, deleted, expired, wrong-owner and wrong-secret tokens alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.contacts.models import (
    AccessTokenRecord,
    ContactApplicationTokenRecord,
    ContactRecord,
    TokenOwner,
)
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.errors import (
    InvalidArgument,
    NotFound,
    Unauthenticated,
    require_version,
)
from switchboard.server.core.ids import new_id
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks

TOKEN_ID_PREFIX = "atk_"
ID_MAX = 64

_tokens = table_of(AccessTokenRecord)
_app_tokens = table_of(ContactApplicationTokenRecord)
_contacts = table_of(ContactRecord)
_t = _tokens.c
_a = _app_tokens.c
_k = _contacts.c

TOKEN_FILTER_COLUMNS = {"created_date": "created_at", "last_updated_date": "updated_at"}
TOKEN_FILTER_TIMES = frozenset({"expiry_time", "created_date", "last_updated_date"})
APP_TOKEN_FILTER_COLUMNS = {"created_date": "created_at", "last_update_date": "updated_at"}
APP_TOKEN_FILTER_TIMES = frozenset({"created_date", "last_update_date"})
APP_TOKEN_LIMITS = {"sender_id_address": 128, "message_delivery_provider": 32, "token": 4096}
# The org's own collection: tokens it created directly and its attachments' tokens.
_ORG_COLLECTION = (TokenOwner.ORG.value, TokenOwner.ATTACHMENT.value)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(value: str) -> tuple[str, str | None]:
    """`<id>.<secret>` → (id, secret); a bare id → (id, None)."""
    token_id, dot, secret = value.strip().partition(".")
    return token_id, (secret if dot else None)


@dataclass(frozen=True)
class VerifiedToken:
    """A token that `verify` accepted: what it grants access to, and until when."""

    id: str
    org_id: str
    owner_type: TokenOwner
    owner_id: str
    expiry_time: datetime


def token_snapshot(row: Row) -> Snapshot:
    """An access token as clients see it: never its secret (nor its hash)."""
    return {
        "id": row["id"],
        "expiry_time": iso(row["expiry_time"]),
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def app_token_snapshot(row: Row) -> Snapshot:
    """A contact application token as clients see it (`last_update_date`, as documented)."""
    return {
        "id": row["id"],
        "sender_id_address": row["sender_id_address"],
        "message_delivery_provider": row["message_delivery_provider"],
        "token": row["token"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_update_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


async def _list(
    db: Database,
    table: Table,
    where: list[ColumnElement[bool]],
    given: Mapping[str, str],
    *,
    limit: int,
    offset: int,
    page_token: str,
    columns: Mapping[str, str],
    times: frozenset[str],
) -> tuple[list[Row], str]:
    checks = Checks()
    page = listing.page(checks, limit, offset, page_token)
    clauses = listing.filters(checks, table, given, columns=columns, times=times)
    checks.raise_if_failed()
    query = listing.paged(select(table).where(*where, *clauses), table, page)
    async with db.read() as session:
        rows = list((await session.execute(query)).mappings())
    return rows[: page.limit], listing.next_page_token(rows, page)


async def _require_contact(session: AsyncSession, org_id: str, contact_id: str) -> None:
    query = select(_k.id).where(_k.org_id == org_id, _k.id == contact_id)
    if (await session.execute(query)).first() is None:
        raise NotFound(f"contact {contact_id!r} does not exist")


def _require_contact_sync(session: Session, org_id: str, contact_id: str) -> None:
    query = select(_k.id).where(_k.org_id == org_id, _k.id == contact_id)
    if session.connection().execute(query).first() is None:
        raise NotFound(f"contact {contact_id!r} does not exist")


class AccessTokenService:
    def __init__(self, *, db: Database, clock: Clock, ttl_seconds: int) -> None:
        self._db = db
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_seconds)

    # ---- creation -----------------------------------------------------------------------------

    async def create(
        self,
        org_id: str,
        application_id: str,
        owner_type: TokenOwner,
        owner_id: str = "",
    ) -> str:
        """A new token for the owner, live for the configured lifetime; returns the full token
        (`<id>.<secret>`). Contacts must exist in the org (else 404); other owners are the
        caller's to check."""
        token_id = new_id(TOKEN_ID_PREFIX)
        secret = secrets.token_urlsafe(32)

        def work(session: Session) -> None:
            if owner_type == TokenOwner.CONTACT:
                _require_contact_sync(session, org_id, owner_id)
            now = self._clock.now()
            session.connection().execute(
                insert(_tokens),
                {
                    "id": token_id,
                    "org_id": org_id,
                    "owner_type": TokenOwner(owner_type).value,
                    "owner_id": owner_id,
                    "secret_hash": _hash(secret),
                    "expiry_time": now + self._ttl,
                    "application_id": application_id,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                },
            )

        await self._db.run_write(work)
        return f"{token_id}.{secret}"

    # ---- management (the org's and a contact's collections) -----------------------------------

    def _scope(self, org_id: str, contact_id: str | None) -> list[ColumnElement[bool]]:
        if contact_id is None:
            return [_t.org_id == org_id, _t.owner_type.in_(_ORG_COLLECTION)]
        return [
            _t.org_id == org_id,
            _t.owner_type == TokenOwner.CONTACT.value,
            _t.owner_id == contact_id,
        ]

    async def list_tokens(
        self,
        org_id: str,
        given: Mapping[str, str],
        *,
        contact_id: str | None = None,
        limit: int,
        offset: int,
        page_token: str,
    ) -> tuple[list[Snapshot], str]:
        """The org's tokens, or a contact's (None: the org's collection)."""
        if contact_id is not None:
            async with self._db.read() as session:
                await _require_contact(session, org_id, contact_id)
        filters = dict(given)
        if "id" in filters:  # the full token names its id too
            filters["id"] = split_token(filters["id"])[0]
        rows, token = await _list(
            self._db,
            _tokens,
            self._scope(org_id, contact_id),
            filters,
            limit=limit,
            offset=offset,
            page_token=page_token,
            columns=TOKEN_FILTER_COLUMNS,
            times=TOKEN_FILTER_TIMES,
        )
        return [token_snapshot(r) for r in rows], token

    def _matching(self, row: Row | None, secret: str | None) -> Row | None:
        if row is None:
            return None
        if secret is not None and not hmac.compare_digest(_hash(secret), row["secret_hash"]):
            return None
        return row

    async def get(self, org_id: str, token: str, *, contact_id: str | None = None) -> Snapshot:
        """One token, by id or full token (a wrong secret is a 404)."""
        token_id, secret = split_token(token)
        async with self._db.read() as session:
            if contact_id is not None:
                await _require_contact(session, org_id, contact_id)
            query = select(_tokens).where(_t.id == token_id, *self._scope(org_id, contact_id))
            row = (await session.execute(query)).mappings().one_or_none()
        found = self._matching(row, secret)
        if found is None:
            raise NotFound("access token does not exist")
        return token_snapshot(found)

    def _get_for_write(
        self, session: Session, org_id: str, token: str, contact_id: str | None
    ) -> Row:
        token_id, secret = split_token(token)
        if contact_id is not None:
            _require_contact_sync(session, org_id, contact_id)
        query = select(_tokens).where(_t.id == token_id, *self._scope(org_id, contact_id))
        query = for_update(session, query)
        found = self._matching(session.connection().execute(query).mappings().one_or_none(), secret)
        if found is None:
            raise NotFound("access token does not exist")
        return found

    async def delete(
        self,
        org_id: str,
        token: str,
        *,
        contact_id: str | None = None,
        expected_version: int | None = None,
    ) -> None:
        """Revokes a token: it stops working at once."""

        def work(session: Session) -> None:
            row = self._get_for_write(session, org_id, token, contact_id)
            require_version(row["version"], expected_version, "access token")
            session.connection().execute(delete(_tokens).where(_t.id == row["id"]))

        await self._db.run_write(work)

    async def renew(
        self,
        org_id: str,
        token: str,
        *,
        contact_id: str,
        expected_version: int | None = None,
    ) -> None:
        """Moves a live contact token's expiry one lifetime ahead of now (version + 1); an
        expired token cannot be renewed (400): create a new one."""

        def work(session: Session) -> None:
            row = self._get_for_write(session, org_id, token, contact_id)
            require_version(row["version"], expected_version, "access token")
            now = self._clock.now()
            if row["expiry_time"] <= now:
                raise InvalidArgument(
                    "access token has expired and cannot be renewed: create a new one"
                )
            changes = {"expiry_time": now + self._ttl, "updated_at": now}
            session.connection().execute(
                update(_tokens).where(_t.id == row["id"]).values(**changes, version=_t.version + 1)
            )

        await self._db.run_write(work)

    def delete_owned(
        self, session: Session, org_id: str, owner_type: TokenOwner, owner_id: str
    ) -> None:
        """Revokes every token of an owner, inside the caller's transaction (e.g. when a contact
        or an attachment is deleted)."""
        session.connection().execute(
            delete(_tokens).where(
                _t.org_id == org_id,
                _t.owner_type == TokenOwner(owner_type).value,
                _t.owner_id == owner_id,
            )
        )

    # ---- use ----------------------------------------------------------------------------------

    async def verify(
        self, token: str, owner_type: TokenOwner, owner_id: str | None = None
    ) -> VerifiedToken:
        """The token if it is a full token (`<id>.<secret>`) that exists, has not expired and
        belongs to `owner_type` (and `owner_id`, when given); else 401 with one message for every
        cause, so a caller learns nothing about which part was wrong."""
        refused = Unauthenticated("access token is not valid: unknown, revoked or expired")
        token_id, secret = split_token(token)
        if not secret or not token_id or len(token_id) > ID_MAX:
            raise refused
        async with self._db.read() as session:
            query = select(_tokens).where(_t.id == token_id)
            row = (await session.execute(query)).mappings().one_or_none()
        if self._matching(row, secret) is None or row is None:
            raise refused
        if row["owner_type"] != TokenOwner(owner_type).value:
            raise refused
        if owner_id is not None and row["owner_id"] != owner_id:
            raise refused
        if row["expiry_time"] <= self._clock.now():
            raise refused
        return VerifiedToken(
            id=row["id"],
            org_id=row["org_id"],
            owner_type=TokenOwner(row["owner_type"]),
            owner_id=row["owner_id"],
            expiry_time=row["expiry_time"],
        )


class ApplicationTokenService:
    """A contact's application tokens (push registration ids and the like)."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def list_tokens(
        self,
        org_id: str,
        contact_id: str,
        given: Mapping[str, str],
        *,
        limit: int,
        offset: int,
        page_token: str,
    ) -> tuple[list[Snapshot], str]:
        async with self._db.read() as session:
            await _require_contact(session, org_id, contact_id)
        rows, token = await _list(
            self._db,
            _app_tokens,
            [_a.org_id == org_id, _a.contact_id == contact_id],
            given,
            limit=limit,
            offset=offset,
            page_token=page_token,
            columns=APP_TOKEN_FILTER_COLUMNS,
            times=APP_TOKEN_FILTER_TIMES,
        )
        return [app_token_snapshot(r) for r in rows], token

    async def get(self, org_id: str, contact_id: str, token_id: str) -> Snapshot:
        async with self._db.read() as session:
            await _require_contact(session, org_id, contact_id)
            query = select(_app_tokens).where(
                _a.org_id == org_id, _a.contact_id == contact_id, _a.id == token_id
            )
            row = (await session.execute(query)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"application token {token_id!r} does not exist")
        return app_token_snapshot(row)

    def _checked(self, fields: Mapping[str, Any], *, whole: bool) -> dict[str, str]:
        """The writable fields given (all of them when replacing: absent ones become "")."""
        checks = Checks()
        values = {
            name: str(fields[name]).strip()
            for name in APP_TOKEN_LIMITS
            if fields.get(name) is not None
        }
        checks.lengths(values, APP_TOKEN_LIMITS)
        if whole or "token" in values:
            checks.required("token", values.get("token"))
        checks.raise_if_failed()
        if whole:
            return {name: values.get(name, "") for name in APP_TOKEN_LIMITS}
        return values

    async def create(
        self, org_id: str, application_id: str, contact_id: str, fields: Mapping[str, Any]
    ) -> str:
        values = self._checked(fields, whole=True)
        token_id = new_id("cat_")

        def work(session: Session) -> None:
            _require_contact_sync(session, org_id, contact_id)
            now = self._clock.now()
            session.connection().execute(
                insert(_app_tokens),
                {
                    "id": token_id,
                    "org_id": org_id,
                    "contact_id": contact_id,
                    **values,
                    "application_id": application_id,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                },
            )

        await self._write(work, contact_id)
        return token_id

    async def update(
        self,
        org_id: str,
        contact_id: str,
        token_id: str,
        fields: Mapping[str, Any],
        expected_version: int | None,
    ) -> str:
        """Changes the fields given."""
        await self._change(
            org_id, contact_id, token_id, self._checked(fields, whole=False), expected_version
        )
        return token_id

    async def replace(
        self,
        org_id: str,
        contact_id: str,
        token_id: str,
        fields: Mapping[str, Any],
        expected_version: int | None,
    ) -> None:
        """Replaces every writable field: absent ones are cleared (the token itself is required)."""
        await self._change(
            org_id, contact_id, token_id, self._checked(fields, whole=True), expected_version
        )

    async def delete(
        self, org_id: str, contact_id: str, token_id: str, expected_version: int | None
    ) -> None:
        def work(session: Session) -> None:
            row = self._get_for_write(session, org_id, contact_id, token_id)
            require_version(row["version"], expected_version, "application token")
            session.connection().execute(delete(_app_tokens).where(_a.id == row["id"]))

        await self._write(work, contact_id)

    async def _change(
        self,
        org_id: str,
        contact_id: str,
        token_id: str,
        values: dict[str, str],
        expected_version: int | None,
    ) -> None:
        def work(session: Session) -> None:
            row = self._get_for_write(session, org_id, contact_id, token_id)
            require_version(row["version"], expected_version, "application token")
            session.connection().execute(
                update(_app_tokens)
                .where(_a.id == row["id"])
                .values(**values, updated_at=self._clock.now(), version=_a.version + 1)
            )

        await self._write(work, contact_id)

    def _get_for_write(self, session: Session, org_id: str, contact_id: str, token_id: str) -> Row:
        _require_contact_sync(session, org_id, contact_id)
        query = select(_app_tokens).where(
            _a.org_id == org_id, _a.contact_id == contact_id, _a.id == token_id
        )
        query = for_update(session, query)
        row = session.connection().execute(query).mappings().one_or_none()
        if row is None:
            raise NotFound(f"application token {token_id!r} does not exist")
        return row

    async def _write(self, work: Callable[[Session], None], contact_id: str) -> None:
        try:
            await self._db.run_write(work)
        except IntegrityError as exc:  # the contact was deleted while we wrote
            raise NotFound(f"contact {contact_id!r} does not exist") from exc
