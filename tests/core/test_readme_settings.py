"""The README's configuration table names every setting, so a new knob cannot go undocumented."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.server.app.config import Settings

pytestmark = pytest.mark.unit


def test_every_setting_is_in_the_configuration_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [
        name for name in Settings.model_fields if f"| `SWITCHBOARD_{name.upper()}` |" not in table
    ]
    assert missing == []
