"""Conformance fuzzing: Schemathesis against the OpenAPI document the edge serves, through the
real Envoy in front of a real server. No response may be a 5xx, and every response must match
the document (status, content type, headers, body), for valid and invalid requests alike.

Settings (seed, examples per operation, checks) are in schemathesis.toml beside this file;
filters for known bugs being fixed elsewhere in hooks.py. Marked `fuzz`: `make test` leaves it
out (it takes minutes), `make fuzz` and .ci/run run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from switchboard.server.core.auth import Role
from switchboard.server.edge.envoy import EnvoyProcess
from tests.support.auth import TokenFactory

pytestmark = [pytest.mark.envoy, pytest.mark.fuzz]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: The whole run's wall-clock budget; the examples per operation bound it well below this.
BUDGET_SECONDS = 600
FUZZ_ORG = "fuzz"


def _count_cases(report: Path) -> tuple[int, dict[str, int]]:
    """Test cases Schemathesis sent, in all and per phase, from its NDJSON event log."""
    per_phase: dict[str, int] = {}
    for line in report.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        phase = str(finished.get("phase", "?"))
        cases = finished.get("recorder", {}).get("cases", {})
        per_phase[phase] = per_phase.get(phase, 0) + len(cases)
    return sum(per_phase.values()), per_phase


async def test_rest_apis_conform_to_the_openapi_document(
    envoy: EnvoyProcess,
    make_token: TokenFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every role, so that Admin-only operations and any org's paths are reached too.
    token = make_token(
        FUZZ_ORG, roles=(Role.CLIENT, Role.PARTNER, Role.ADMIN), ttl=timedelta(hours=1)
    )
    report = tmp_path / "events.ndjson"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{envoy.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    dropped = tmp_path / "dropped.ndjson"
    environment = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
        "SWITCHBOARD_FUZZ_DROPPED": str(dropped),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    output = tmp_path / "schemathesis.out"
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, env=environment, stdout=sink, stderr=asyncio.subprocess.STDOUT
        )
        try:
            code = await asyncio.wait_for(process.wait(), BUDGET_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"schemathesis ran past {BUDGET_SECONDS} s:\n{output.read_text()[-8000:]}")
    text = output.read_text(encoding="utf-8", errors="replace")
    total, per_phase = _count_cases(report)
    known: dict[str, int] = {}
    if dropped.exists():
        for line in dropped.read_text(encoding="utf-8").splitlines():
            issue = json.loads(line)["issue"]
            known[issue] = known.get(issue, 0) + 1
    with capsys.disabled():
        summary = next((line for line in text.splitlines() if " generated, " in line), "")
        print(f"\nschemathesis: {total} test cases {per_phase}: {summary.strip()}")
        print(f"schemathesis: failures of known bugs fixed elsewhere, dropped: {known or 'none'}")
    assert code == 0, text[-20000:]
    assert total > 1000, f"too few test cases ({total}): {text[-4000:]}"
