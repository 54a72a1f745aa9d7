"""Persistence of orgs and applications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.server.core.db import table_of
from switchboard.server.orgs.models import Application, Org

_orgs = table_of(Org)
_applications = table_of(Application)


def _insert_new(table: Table) -> dict[str, Any]:
    """INSERT … ON CONFLICT (id) DO NOTHING per dialect: of several transactions registering the
    same id at once, one inserts and the others wait for it and insert nothing (no unique
    violation, whichever commits first)."""
    return {
        dialect.dialect.name: dialect.insert(table).on_conflict_do_nothing(index_elements=["id"])
        for dialect in (postgresql, sqlite)
    }


_INSERT_ORG = _insert_new(_orgs)
_INSERT_APPLICATION = _insert_new(_applications)


class OrgRepository:
    """`ensure_*` register an org or application unless it exists: idempotent, also when
    several processes (token minting, replicas) register the same new one concurrently."""

    async def ensure_org(self, session: AsyncSession, org_id: str, now: datetime) -> Org:
        dialect = (await session.connection()).dialect.name
        await session.execute(
            _INSERT_ORG[dialect], {"id": org_id, "name": org_id, "created_at": now}
        )
        org = await session.get(Org, org_id)
        assert org is not None
        return org

    async def ensure_application(
        self, session: AsyncSession, org_id: str, app_id: str, now: datetime
    ) -> Application:
        dialect = (await session.connection()).dialect.name
        await session.execute(
            _INSERT_APPLICATION[dialect],
            {"id": app_id, "org_id": org_id, "name": app_id, "created_at": now},
        )
        app = await session.get(Application, app_id)
        assert app is not None
        return app
