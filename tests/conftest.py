"""Shared fixtures: one real server (gRPC on port 0, real database) per test session, and one real
Envoy in front of it for REST tests. Tests isolate themselves by using their own org ids.

Set SWITCHBOARD_TEST_DATABASE_URL (e.g. postgresql://…) to run everything against PostgreSQL;
the default is a fresh SQLite file. SWITCHBOARD_TEST_AT pins the clock of the run (see
tests/support/clock.py). Helpers live in tests/support/: import them from there, never from here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import pytest

from switchboard.server.app.platform import descriptor_set_path
from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role
from switchboard.server.edge.envoy import EnvoyProcess, EnvoySettings
from tests.support.auth import TokenFactory

# Imported before any server starts: it sets SWITCHBOARD_CLOCK_OFFSET_SECONDS for them all.
from tests.support.clock import CLOCK_OFFSET_SECONDS, TEST_CLOCK
from tests.support.server import free_port, fresh_database, make_settings, reset_postgres


def pytest_report_header() -> str:
    if not CLOCK_OFFSET_SECONDS:
        return "clock: the machine's (pin one with SWITCHBOARD_TEST_AT / make test AT=...)"
    return f"clock: pinned, starts at {TEST_CLOCK.now().isoformat(timespec='seconds')}"


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


@pytest.fixture
async def fresh_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database nobody else uses: a new SQLite file, or a new PostgreSQL database."""
    async with fresh_database(tmp_path) as url:
        yield url
