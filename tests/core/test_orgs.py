"""Orgs and applications are registered idempotently: tokens minted at the same moment for a new
org (by replicas, or by `switchboard token create` run several times at once) all succeed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import func, select

from switchboard.server.core.auth import TokenService
from switchboard.server.core.db import Database, create_engine
from switchboard.server.migrations.migrate import upgrade
from switchboard.server.orgs.models import Application, Org
from switchboard.server.orgs.repository import OrgRepository
from tests.support.auth import TEST_SECRET
from tests.support.clock import TEST_CLOCK

WRITERS = 6


async def test_concurrent_registrations_of_a_new_org_all_succeed(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url)
    await upgrade(engine)
    # One engine per writer: separate connections, as separate processes or replicas have.
    databases = [Database(create_engine(fresh_database_url)) for _ in range(WRITERS)]
    repository = OrgRepository()

    async def register(db: Database, subject: str) -> tuple[str, str]:
        async with db.write() as session:
            org = await repository.ensure_org(session, "org-new", TEST_CLOCK.now())
            app = await repository.ensure_application(session, "org-new", subject, TEST_CLOCK.now())
            return org.id, app.org_id

    try:
        # Half of them share an application id too.
        results = await asyncio.gather(
            *(register(db, f"app-{i % 2}") for i, db in enumerate(databases))
        )
        assert results == [("org-new", "org-new")] * WRITERS
        async with databases[0].read() as session:
            orgs = await session.scalar(select(func.count()).select_from(Org))
            apps = await session.scalar(select(func.count()).select_from(Application))
        assert (orgs, apps) == (1, 2)
    finally:
        for db in databases:
            await db.dispose()
        await engine.dispose()


async def test_token_create_run_concurrently_for_a_new_org(
    fresh_database_url: str, tmp_path: Path
) -> None:
    engine = create_engine(fresh_database_url)
    await upgrade(engine)  # a deployment's database (the CLI migrates too, then registers)
    await engine.dispose()
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": fresh_database_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
    }
    command = [sys.executable, "-m", "switchboard.server.cli", "token", "create"]
    processes = [
        await asyncio.create_subprocess_exec(
            *command,
            "--org",
            "org-cli",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    tokens = TokenService(TEST_SECRET, TEST_CLOCK)
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
        assert tokens.verify(stdout.decode().strip()).org == "org-cli"
