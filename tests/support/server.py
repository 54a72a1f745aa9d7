"""Starting servers of one's own: free ports, Settings for a test server, fresh databases.

Set SWITCHBOARD_TEST_DATABASE_URL (e.g. postgresql://…) to run everything against PostgreSQL;
the default is a fresh SQLite file.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url

from switchboard.server.app.config import Settings
from switchboard.server.core.db import create_engine
from tests.support.auth import TEST_SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def reset_postgres(url: str) -> None:
    """A clean schema per session, so migrations run from scratch like on a new deployment."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


def make_settings(tmp: Path, **overrides: object) -> Settings:
    url = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL") or f"sqlite+aiosqlite:///{tmp}/sb.db"
    values: dict[str, object] = {
        "database_url": url,
        "var_dir": tmp,
        "grpc_port": 0,
        "jwt_secret": SecretStr(TEST_SECRET),
        "sandbox_delivery_delay": 0.2,
        "dispatcher_poll_seconds": 0.2,
        "stream_poll_seconds": 0.2,
        "drain_seconds": 1.0,
        "sms_max_batch": 50,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def fresh_database(tmp: Path) -> AsyncIterator[str]:
    """A database nobody else uses: a new SQLite file in `tmp`, or a new PostgreSQL database
    (dropped afterwards)."""
    shared = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")
    if not shared:
        yield f"sqlite+aiosqlite:///{tmp}/fresh.db"
        return
    name = f"sb_{uuid.uuid4().hex[:10]}"
    admin = create_engine(shared).execution_options(isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(shared).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()
