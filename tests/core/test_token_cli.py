"""`switchboard token create` signs with the running server's secret or refuses: run from another
directory it used to make a new secret and database there, whose tokens the server rejected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from switchboard.server.app.config import Settings
from switchboard.server.core.auth import TokenService
from tests.support.clock import TEST_CLOCK


def _switchboard(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: only the SWITCHBOARD_* variables given here, and the
    suite's clock (a pinned run's tokens are checked against TEST_CLOCK)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWITCHBOARD_") or k == "SWITCHBOARD_CLOCK_OFFSET_SECONDS"
    }
    return subprocess.run(
        [sys.executable, "-m", "switchboard.server.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    """A checkout a server ran in on its defaults: var/jwt-secret and var/switchboard.db."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    Settings(var_dir=checkout / "var").resolved_jwt_secret()
    upgraded = _switchboard("db", "upgrade", cwd=checkout)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (checkout / "var" / "switchboard.db").exists()
    return checkout


def _server_secret(server_dir: Path) -> str:
    return (server_dir / "var" / "jwt-secret").read_text().strip()


def _orgs(database: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.execute(text("SELECT id FROM orgs"))}
    finally:
        engine.dispose()


def test_from_another_directory_it_refuses_and_creates_nothing(
    tmp_path: Path, server_dir: Path
) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    refused = _switchboard("token", "create", "--org", "demo", cwd=elsewhere)
    assert refused.returncode == 2
    assert refused.stdout == ""
    message = refused.stderr
    assert str((elsewhere / "var" / "jwt-secret").resolve()) in message
    assert "SWITCHBOARD_VAR_DIR" in message and "directory the server runs in" in message
    assert not (elsewhere / "var").exists()


def test_from_the_servers_directory_it_signs_with_the_servers_secret(server_dir: Path) -> None:
    issued = _switchboard("token", "create", "--org", "demo", cwd=server_dir)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert TokenService(_server_secret(server_dir), TEST_CLOCK).verify(token).org == "demo"
    assert "demo" in _orgs(server_dir / "var" / "switchboard.db")


def test_pointed_at_the_server_it_works_from_anywhere(tmp_path: Path, server_dir: Path) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    var = str(server_dir / "var")
    # The var dir alone: the default database would be a new file here, so it refuses.
    refused = _switchboard(
        "token", "create", "--org", "demo", cwd=elsewhere, SWITCHBOARD_VAR_DIR=var
    )
    assert refused.returncode == 2
    assert str((elsewhere / "var" / "switchboard.db").resolve()) in refused.stderr
    assert "SWITCHBOARD_DATABASE_URL" in refused.stderr
    assert not (elsewhere / "var").exists()
    database = server_dir / "var" / "switchboard.db"
    issued = _switchboard(
        "token",
        "create",
        "--org",
        "demo",
        cwd=elsewhere,
        SWITCHBOARD_VAR_DIR=var,
        SWITCHBOARD_DATABASE_URL=f"sqlite:///{database}",
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert TokenService(_server_secret(server_dir), TEST_CLOCK).verify(token).org == "demo"
    assert "demo" in _orgs(database)
    assert not (elsewhere / "var").exists()
