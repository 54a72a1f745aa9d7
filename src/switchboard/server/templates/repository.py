"""Persistence of communication types, template versions and examples.

Template versions and examples are scoped by org in every query; types are global. Writes are
synchronous (inside Database.run_write's transaction); reads are async.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from switchboard.server.core.db import for_update, table_of
from switchboard.server.core.types import Row
from switchboard.server.templates.models import (
    ChangeType,
    CommunicationTypeRecord,
    ExampleRecord,
    PackageImportRecord,
    TemplateVersionRecord,
)

types_table = table_of(CommunicationTypeRecord)
versions = table_of(TemplateVersionRecord)
examples_table = table_of(ExampleRecord)
imports_table = table_of(PackageImportRecord)
_t = types_table.c
_v = versions.c
_e = examples_table.c
LIVE = (ChangeType.DRAFT.value, ChangeType.STABLE.value)


def key_clause(org_id: str, type_code: str, channel: str, language: str) -> ColumnElement[bool]:
    return (
        (_v.org_id == org_id)
        & (_v.type_code == type_code)
        & (_v.channel == channel)
        & (_v.language == language)
    )


class TemplateRepository:
    # -- communication types -------------------------------------------------------------------

    async def get_type(self, session: AsyncSession, code: str) -> Row | None:
        query = select(types_table).where(_t.code == code)
        return (await session.execute(query)).mappings().one_or_none()

    async def list_types(self, session: AsyncSession, limit: int, offset: int) -> list[Row]:
        query = select(types_table).order_by(_t.code).offset(offset).limit(limit)
        return list((await session.execute(query)).mappings())

    def locked_type(self, session: Session, code: str) -> Row | None:
        query = select(types_table).where(_t.code == code)
        return session.execute(for_update(session, query)).mappings().one_or_none()

    def insert_type(self, session: Session, row: Mapping[str, Any]) -> None:
        session.execute(insert(types_table).values(dict(row)))

    def update_type(self, session: Session, code: str, values: Mapping[str, Any]) -> None:
        session.execute(update(types_table).where(_t.code == code).values(dict(values)))

    def live_templates_of_type(self, session: Session, code: str) -> list[Row]:
        """Every org's draft and stable versions of a type (what a type change could break)."""
        query = select(versions).where(_v.type_code == code, _v.change_type.in_(LIVE))
        return list(session.execute(query).mappings())

    # -- template versions ---------------------------------------------------------------------

    def locked_key(
        self, session: Session, org_id: str, type_code: str, channel: str, language: str
    ) -> tuple[dict[str, Row], int]:
        """The key's live versions by change type, and its highest version number (0: none)."""
        key = key_clause(org_id, type_code, channel, language)
        live = select(versions).where(key, _v.change_type.in_(LIVE))
        rows: dict[str, Row] = {
            r["change_type"]: r for r in session.execute(for_update(session, live)).mappings()
        }
        highest = session.execute(select(func.max(_v.version)).where(key)).scalar()
        return rows, int(highest or 0)

    def locked_version(self, session: Session, org_id: str, version_id: str) -> Row | None:
        query = select(versions).where(_v.org_id == org_id, _v.id == version_id)
        return session.execute(for_update(session, query)).mappings().one_or_none()

    def insert_version(self, session: Session, row: Mapping[str, Any]) -> None:
        session.execute(insert(versions).values(dict(row)))

    def update_version(self, session: Session, version_id: str, values: Mapping[str, Any]) -> None:
        session.execute(update(versions).where(_v.id == version_id).values(dict(values)))

    def purge_version(self, session: Session, version_id: str) -> None:
        session.execute(delete(versions).where(_v.id == version_id))

    async def stable(
        self, session: AsyncSession, org_id: str, type_code: str, channel: str, language: str
    ) -> Row | None:
        query = select(versions).where(
            key_clause(org_id, type_code, channel, language),
            _v.change_type == ChangeType.STABLE.value,
        )
        return (await session.execute(query)).mappings().one_or_none()

    async def current(
        self,
        session: AsyncSession,
        org_id: str,
        type_code: str,
        channel: str,
        language: str,
        change_type: str,
    ) -> Row | None:
        query = select(versions).where(
            key_clause(org_id, type_code, channel, language), _v.change_type == change_type
        )
        # Archived and deleted versions may be many: the newest.
        query = query.order_by(_v.version.desc()).limit(1)
        return (await session.execute(query)).mappings().first()

    async def stable_channels(
        self, session: AsyncSession, org_id: str, type_code: str, language: str
    ) -> list[str]:
        query = (
            select(_v.channel)
            .where(
                _v.org_id == org_id,
                _v.type_code == type_code,
                _v.language == language,
                _v.change_type == ChangeType.STABLE.value,
            )
            .order_by(_v.channel)
        )
        return list((await session.execute(query)).scalars())

    async def search(
        self,
        session: AsyncSession,
        org_id: str,
        where: Sequence[ColumnElement[bool]],
        limit: int,
        offset: int,
    ) -> list[Row]:
        query = (
            select(versions)
            .where(_v.org_id == org_id, *where)
            .order_by(_v.type_code, _v.channel, _v.language, _v.version)
            .offset(offset)
            .limit(limit)
        )
        return list((await session.execute(query)).mappings())

    async def history(
        self, session: AsyncSession, org_id: str, type_code: str, channel: str, language: str
    ) -> list[Row]:
        query = (
            select(versions)
            .where(key_clause(org_id, type_code, channel, language))
            .order_by(_v.version)
        )
        return list((await session.execute(query)).mappings())

    async def versions_by_ids(
        self, session: AsyncSession, org_id: str, ids: Sequence[str]
    ) -> dict[str, Row]:
        if not ids:
            return {}
        query = select(versions).where(_v.org_id == org_id, _v.id.in_(list(ids)))
        return {r["id"]: r for r in (await session.execute(query)).mappings()}

    # -- examples ------------------------------------------------------------------------------

    async def get_example(self, session: AsyncSession, org_id: str, example_id: str) -> Row | None:
        query = select(examples_table).where(_e.org_id == org_id, _e.id == example_id)
        return (await session.execute(query)).mappings().one_or_none()

    async def examples_by_ids(
        self, session: AsyncSession, org_id: str, ids: Sequence[str]
    ) -> dict[str, Row]:
        if not ids:
            return {}
        query = select(examples_table).where(_e.org_id == org_id, _e.id.in_(list(ids)))
        return {r["id"]: r for r in (await session.execute(query)).mappings()}

    async def examples_for(
        self, session: AsyncSession, org_id: str, type_code: str, channel: str, language: str
    ) -> list[Row]:
        query = (
            select(examples_table)
            .where(
                _e.org_id == org_id,
                _e.type_code == type_code,
                _e.channel == channel,
                _e.language == language,
            )
            .order_by(_e.created_at, _e.id)
        )
        return list((await session.execute(query)).mappings())

    def locked_example(self, session: Session, org_id: str, example_id: str) -> Row | None:
        query = select(examples_table).where(_e.org_id == org_id, _e.id == example_id)
        return session.execute(for_update(session, query)).mappings().one_or_none()

    def insert_example(self, session: Session, row: Mapping[str, Any]) -> None:
        session.execute(insert(examples_table).values(dict(row)))

    def update_example(
        self, session: Session, org_id: str, example_id: str, values: Mapping[str, Any]
    ) -> None:
        session.execute(
            update(examples_table)
            .where(_e.org_id == org_id, _e.id == example_id)
            .values(dict(values))
        )

    def delete_example(self, session: Session, org_id: str, example_id: str) -> None:
        session.execute(delete(examples_table).where(_e.org_id == org_id, _e.id == example_id))

    # -- package imports -----------------------------------------------------------------------

    def package_imported(self, session: Session, org_id: str, package_id: str) -> bool:
        query = select(imports_table.c.package_id).where(
            imports_table.c.org_id == org_id, imports_table.c.package_id == package_id
        )
        return session.execute(query).first() is not None

    def record_import(self, session: Session, row: Mapping[str, Any]) -> None:
        session.execute(insert(imports_table).values(dict(row)))
