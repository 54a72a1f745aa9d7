"""Persistence of orgs and applications."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.server.orgs.models import Application, Org


class OrgRepository:
    async def ensure_org(self, session: AsyncSession, org_id: str, now: datetime) -> Org:
        org = await session.get(Org, org_id)
        if org is None:
            org = Org(id=org_id, name=org_id, created_at=now)
            session.add(org)
            await session.flush()
        return org

    async def ensure_application(
        self, session: AsyncSession, org_id: str, app_id: str, now: datetime
    ) -> Application:
        app = await session.get(Application, app_id)
        if app is None:
            app = Application(id=app_id, org_id=org_id, name=app_id, created_at=now)
            session.add(app)
            await session.flush()
        return app
