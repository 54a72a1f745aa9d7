"""The time of this test run.

Set SWITCHBOARD_TEST_AT (an ISO 8601 instant with its offset; `make test AT=…`) to run the whole
suite at that instant: this process's `TEST_CLOCK` and every server the tests start (in process,
or as a subprocess through SWITCHBOARD_CLOCK_OFFSET_SECONDS) read it, and time runs on from there
at real speed. Envoy, SMSCs and fake providers are peers on the real clock.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from switchboard.server.core.clock import Clock, clock_with_offset


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
