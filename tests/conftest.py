"""Shared fixtures: one real server (gRPC on port 0, real database) per test session, and one real
Envoy in front of it for REST tests. Tests isolate themselves by using their own org ids.

Set SWITCHBOARD_TEST_DATABASE_URL (e.g. postgresql://…) to run everything against PostgreSQL;
the default is a fresh SQLite file.

Set SWITCHBOARD_TEST_AT (an ISO 8601 instant with its offset; `make test AT=…`) to run the whole
suite at that instant: this process's `TEST_CLOCK` and every server the tests start (in process,
or as a subprocess through SWITCHBOARD_CLOCK_OFFSET_SECONDS) read it, and time runs on from there
at real speed. Envoy, SMSCs and fake providers are peers on the real clock.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url

from switchboard.server.app.config import Settings
from switchboard.server.app.platform import descriptor_set_path
from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role
from switchboard.server.core.clock import Clock, clock_with_offset
from switchboard.server.core.db import create_engine
from switchboard.server.edge.envoy import EnvoyProcess, EnvoySettings

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
TokenFactory = Callable[..., str]


def _pinned_offset_seconds() -> float:
    text = os.environ.get("SWITCHBOARD_TEST_AT", "").strip()
    if not text:
        return 0.0
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        raise pytest.UsageError(f"SWITCHBOARD_TEST_AT={text!r} needs an offset, e.g. -08:00 or Z")
    return (instant - datetime.now(UTC)).total_seconds()


CLOCK_OFFSET_SECONDS = _pinned_offset_seconds()
# Servers built from Settings (here or in subprocesses, which inherit the environment) share it.
os.environ["SWITCHBOARD_CLOCK_OFFSET_SECONDS"] = repr(CLOCK_OFFSET_SECONDS)
#: The time of this test run: what tests compare server times with, and issue tokens at.
TEST_CLOCK: Clock = clock_with_offset(CLOCK_OFFSET_SECONDS)


def pytest_report_header() -> str:
    if not CLOCK_OFFSET_SECONDS:
        return "clock: the machine's (pin one with SWITCHBOARD_TEST_AT / make test AT=...)"
    return f"clock: pinned, starts at {TEST_CLOCK.now().isoformat(timespec='seconds')}"


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


@pytest.fixture(scope="session")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Application]:
    settings = make_settings(tmp_path_factory.mktemp("server"))
    if settings.database_url.startswith("postgresql"):
        await reset_postgres(settings.database_url)
    application = build_application(settings)
    await application.start()
    yield application
    await application.stop()


@pytest.fixture(scope="session")
def make_token(app: Application) -> TokenFactory:
    def make(
        org: str,
        roles: Iterable[Role] = (Role.CLIENT,),
        ttl: timedelta = timedelta(hours=1),
        subject: str = "test-app",
    ) -> str:
        return app.tokens.issue(org=org, roles=roles, subject=subject, ttl=ttl)

    return make


@pytest.fixture
def org() -> str:
    """A fresh org per test: nothing another test did is visible to it."""
    return f"org-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def auth(org: str, make_token: TokenFactory) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {make_token(org)}")]


@pytest.fixture(scope="session")
async def channel(app: Application) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
async def envoy(
    app: Application, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EnvoyProcess]:
    work = tmp_path_factory.mktemp("envoy")
    settings = EnvoySettings(
        listen_port=free_port(),
        admin_port=free_port(),
        upstreams=[("127.0.0.1", app.port)],
        descriptor_path=descriptor_set_path(),
        listen_host="127.0.0.1",
        access_log_path=str(work / "access.log"),
    )
    async with EnvoyProcess(settings, work) as process:
        yield process


@pytest.fixture
async def http(envoy: EnvoyProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=envoy.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def bearer(org: str, make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(org)}"}


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


@pytest.fixture
async def fresh_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database nobody else uses: a new SQLite file, or a new PostgreSQL database."""
    async with fresh_database(tmp_path) as url:
        yield url
