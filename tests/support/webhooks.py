"""A real webhook receiver on 127.0.0.1 (aiohttp, in the test's event loop) that records what
it gets and answers as told, plus polling helpers for event handler tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Behaviour:
    """What one path answers: `statuses` in turn (then `then`), after `sleep` seconds."""

    statuses: list[int] = field(default_factory=list)
    then: int = 200
    sleep: float = 0.0


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    def on(self, path: str, behaviour: Behaviour) -> None:
        self.behaviours["/" + path.lstrip("/")] = behaviour

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        behaviour = self.behaviours.get(request.path, Behaviour())
        self.received.append(
            Received(
                request.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                time.monotonic(),
            )
        )
        self._changed.set()
        if behaviour.sleep:
            await asyncio.sleep(behaviour.sleep)
        status = behaviour.statuses.pop(0) if behaviour.statuses else behaviour.then
        return web.Response(status=status, text=f"answer {status}")

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == "/" + path.lstrip("/")]


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns a truthy value (returned) or `timeout` passes (fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
