"""The clock is an input: a moved clock moves every date the platform judges, tokens included,
and the token CLI shares the deployment's offset."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.clock import OffsetClock, SystemClock, clock_with_offset
from switchboard.server.core.errors import Unauthenticated
from tests.support.auth import TEST_SECRET

MONTH = timedelta(days=30)


@pytest.mark.unit
def test_an_offset_clock_reads_its_instant_and_runs_on() -> None:
    instant = datetime(2026, 12, 27, 11, 30, tzinfo=UTC)
    clock = OffsetClock.reading(instant)
    first = clock.now()
    assert timedelta(0) <= first - instant < timedelta(seconds=1)
    assert clock.now() >= first
    assert isinstance(clock_with_offset(0), SystemClock)
    moved = clock_with_offset(-MONTH.total_seconds())
    assert isinstance(moved, OffsetClock) and moved.offset == -MONTH


@pytest.mark.unit
def test_tokens_live_by_the_platforms_clock_not_the_machines() -> None:
    ahead = TokenService(TEST_SECRET, OffsetClock(MONTH))
    machine = TokenService(TEST_SECRET, SystemClock())
    behind = TokenService(TEST_SECRET, OffsetClock(-MONTH))

    token = ahead.issue(org="acme", roles=[Role.CLIENT], subject="a", ttl=timedelta(hours=1))
    assert ahead.verify(token).org == "acme"
    # Issued a month from now: not yet valid for the machine's clock.
    with pytest.raises(Unauthenticated, match=r"not yet valid \(iat\)"):
        machine.verify(token)
    # Valid for an hour by the machine's clock, long expired a month later.
    today = machine.issue(org="acme", roles=[Role.CLIENT], subject="a", ttl=timedelta(hours=1))
    with pytest.raises(Unauthenticated, match="has expired"):
        ahead.verify(today)
    with pytest.raises(Unauthenticated, match="not yet valid"):
        behind.verify(today)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": "tomorrow"}, "exp must be a number"),
        ({"exp": True}, "exp must be a number"),
        ({"nbf": 4102444800}, r"not yet valid \(nbf\)"),  # 2100-01-01
    ],
)
def test_malformed_or_early_times_are_refused(claims: dict[str, object], message: str) -> None:
    now = int(datetime.now(UTC).timestamp())
    body = {"sub": "a", "org": "acme", "roles": ["Client"], "iat": now, "exp": now + 60}
    token = jwt.encode(body | claims, TEST_SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match=message):
        TokenService(TEST_SECRET, SystemClock()).verify(token)


def test_the_token_cli_issues_at_the_deployments_moved_time(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "SWITCHBOARD_VAR_DIR": str(tmp_path),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
        "SWITCHBOARD_CLOCK_OFFSET_SECONDS": str(-MONTH.total_seconds()),
    }
    issued = subprocess.run(
        [sys.executable, "-m", "switchboard.server.cli", "token", "create", "--org", "acme"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    moved = (datetime.now(UTC) - MONTH).timestamp()
    assert abs(claims["iat"] - moved) < 60
    assert TokenService(TEST_SECRET, OffsetClock(-MONTH)).verify(token).org == "acme"
