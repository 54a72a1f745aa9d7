"""What a process starts and stops with it: background workers (job runners, sweepers, seeders)."""

from __future__ import annotations

from typing import Protocol


class BackgroundWorker(Protocol):
    """Started after migrations, stopped (in reverse order) after the gRPC server drained."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
