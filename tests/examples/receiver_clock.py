"""Runs examples/python/quickstart.py (the path in argv[1]) with standardwebhooks' timestamp
check on the platform's clock: a pinned test run (`make test AT=...`) starts servers that sign
with a clock SWITCHBOARD_CLOCK_OFFSET_SECONDS away from the machine's, and a receiver checks
webhook-timestamp against its own. The example itself stays as a user would write it."""

from __future__ import annotations

import os
import runpy
import sys
from datetime import datetime, timedelta, tzinfo
from unittest import mock

OFFSET = timedelta(seconds=float(os.environ.get("SWITCHBOARD_CLOCK_OFFSET_SECONDS") or 0))


def _shift_receiver_clock() -> None:
    try:
        from standardwebhooks import webhooks
    except ImportError:  # the example skips its webhook step then
        return

    class PlatformTime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> PlatformTime:
            return super().now(tz) + OFFSET

    mock.patch.object(webhooks, "datetime", PlatformTime).start()  # for the whole run


if __name__ == "__main__":
    if OFFSET:
        _shift_receiver_clock()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
