"""The server's version, as the Communications API's `commit` field reports it."""

from __future__ import annotations

import functools
from importlib import metadata


@functools.cache
def server_version() -> str:
    """`v` + the installed package version (e.g. `v0.1.0`), or `vdev` when not installed."""
    try:
        return "v" + metadata.version("switchboard")
    except metadata.PackageNotFoundError:
        return "vdev"
