"""The README's quick starts run as written: examples/node/quickstart.mjs (grpc-js +
proto-loader, installed with `npm ci` from its lock) and examples/python/quickstart.py (the
generated stubs), each through a real Envoy with a fresh org's token. Node.js and npm are
required: a machine without them fails here rather than skipping.

The scripts' webhook receiver listens on 127.0.0.1, which a deployment refuses unless it allows
private URLs; the suite's shared server must refuse them (its SSRF tests), so the quick starts
get a platform of their own that allows them, as `make run`'s sandbox may."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from switchboard.server.app.platform import descriptor_set_path
from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role
from switchboard.server.edge.envoy import EnvoyProcess, EnvoySettings
from tests.support.server import free_port, fresh_database, make_settings

pytestmark = pytest.mark.envoy

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE_EXAMPLE = REPO / "examples" / "node"
PYTHON_EXAMPLE = REPO / "examples" / "python" / "quickstart.py"
#: Each step waits at most this long for its outcome (the scripts fail past it).
STEP_TIMEOUT_SECONDS = 30


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on PATH: the Node.js quick start needs Node.js >= 18 and npm "
            "(Debian: apt-get install nodejs npm)"
        )
    return path


async def _run(*args: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        return -1, out.decode() + f"\n(killed after {timeout} s)"
    return process.returncode or 0, out.decode()


@pytest.fixture(scope="session")
async def node_example() -> Path:
    """examples/node with its node_modules installed exactly from package-lock.json, once per
    run (node_modules is git-ignored)."""
    node, npm = _tool("node"), _tool("npm")
    code, out = await _run(node, "--version", cwd=NODE_EXAMPLE, env=dict(os.environ), timeout=30)
    assert code == 0, out
    major = int(out.strip().lstrip("v").split(".")[0])
    assert major >= 18, f"Node.js {out.strip()} is too old: the quick start needs >= 18"
    code, out = await _run(
        npm,
        "ci",
        "--ignore-scripts",  # none of these packages needs one to work
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        cwd=NODE_EXAMPLE,
        env=dict(os.environ),
        timeout=300,
    )
    assert code == 0, f"npm ci in examples/node failed:\n{out}"
    return NODE_EXAMPLE


@dataclass
class Platform:
    app: Application
    envoy: EnvoyProcess

    def token(self, org: str) -> str:
        roles = (Role.CLIENT, Role.ADMIN)
        return self.app.tokens.issue(
            org=org, roles=roles, subject="quickstart", ttl=timedelta(hours=1)
        )

    def env(self, org: str) -> dict[str, str]:
        return {
            **os.environ,
            "SWITCHBOARD_GRPC_ADDR": self.envoy.base_url.removeprefix("http://"),
            "SWITCHBOARD_TOKEN": self.token(org),
            "SWITCHBOARD_STEP_TIMEOUT_MS": str(STEP_TIMEOUT_SECONDS * 1000),
            "SWITCHBOARD_STEP_TIMEOUT_SECONDS": str(STEP_TIMEOUT_SECONDS),
            # Straight to the local Envoy, whatever proxy the machine configures.
            "NO_PROXY": "*",
            "no_proxy": "*",
            "no_grpc_proxy": "*",
        }


@pytest.fixture(scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """A server that allows webhook receivers on private addresses, behind its own Envoy."""
    work = tmp_path_factory.mktemp("quickstarts")
    overrides = {"webhooks_allow_private_urls": True}
    async with fresh_database(work) as database_url:
        app = build_application(make_settings(work, database_url=database_url, **overrides))
        await app.start()
        try:
            envoy_settings = EnvoySettings(
                listen_port=free_port(),
                admin_port=free_port(),
                upstreams=[("127.0.0.1", app.port)],
                descriptor_path=descriptor_set_path(),
                listen_host="127.0.0.1",
                access_log_path=str(work / "access.log"),
            )
            async with EnvoyProcess(envoy_settings, work) as envoy:
                yield Platform(app, envoy)
        finally:
            await app.stop()


def _assert_steps(out: str) -> None:
    lines = out.splitlines()
    assert any(line.startswith("sms: sent sms_") for line in lines), out
    assert any(line.endswith("sms.delivered DELIVERED") for line in lines), out
    assert any(line.startswith("sms: sms_") and line.endswith(" DELIVERED") for line in lines), out
    assert "call: STARTED -> ACTIVE -> COMPLETED" in lines, out
    assert any(line.startswith("call: call_") and "COMPLETED" in line for line in lines), out
    assert any(line.startswith("error: INVALID_ARGUMENT") for line in lines), out
    assert "error: ErrorInfo reason=400" in out, out
    assert any(line.startswith("error: field Messages[0].to:") for line in lines), out
    assert any(line.startswith("error: field Messages[0].content:") for line in lines), out
    assert any(
        line.startswith("webhook: sms.delivered for sms_") and "verified with" in line
        for line in lines
    ), out
    assert lines[-1] == "quickstart: OK", out


async def test_node_quickstart(node_example: Path, platform: Platform, org: str) -> None:
    code, out = await _run(
        _tool("node"),
        "--import",
        (HERE / "receiver_clock.mjs").as_uri(),
        "quickstart.mjs",
        cwd=node_example,
        env=platform.env(org),
        timeout=4 * STEP_TIMEOUT_SECONDS + 30,
    )
    print(out)
    assert code == 0, out
    _assert_steps(out)


async def test_python_quickstart(platform: Platform, org: str) -> None:
    code, out = await _run(
        sys.executable,
        str(HERE / "receiver_clock.py"),
        str(PYTHON_EXAMPLE),
        cwd=REPO,
        env=platform.env(org),
        timeout=4 * STEP_TIMEOUT_SECONDS + 30,
    )
    print(out)
    assert code == 0, out
    _assert_steps(out)


async def test_grpc_js_finds_services_by_reflection_v1_and_v1alpha(
    node_example: Path, app: Application
) -> None:
    code, out = await _run(
        _tool("node"),
        str(HERE / "reflection.mjs"),
        f"127.0.0.1:{app.port}",
        cwd=REPO,
        env={**os.environ, "NO_PROXY": "*", "no_proxy": "*", "no_grpc_proxy": "*"},
        timeout=60,
    )
    assert code == 0, out
    lines = out.splitlines()
    for version in ("v1", "v1alpha"):
        prefix = f"reflection {version}: "
        services = next(line for line in lines if line.startswith(prefix)).removeprefix(prefix)
        assert "switchboard.sms.v1.SmsService" in services.split(), out
        assert "grpc.reflection.v1.ServerReflection" in services.split(), out
        # The file that defines the symbol comes first, then its dependencies.
        where = f"{prefix}switchboard.sms.v1.SmsService in switchboard/sms/v1/sms_service.proto "
        assert any(line.startswith(where) for line in lines), out
