"""Local HTTP fakes of the gateways the providers talk to: real aiohttp servers on 127.0.0.1
that answer as the real APIs do (bodies, status codes, auth and rate-limit answers), record
what they received, and can be told to misbehave for the next requests."""

from __future__ import annotations

import asyncio
import itertools
import json
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.server import free_port


@dataclass
class Canned:
    """A scripted answer that replaces the next normal one."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering: longer than a client's timeout = a timeout


class FakeServer(ABC):
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, str, Any]] = []  # method, path, JSON body
        self.script: deque[Canned] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """Add this API's endpoints."""

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        self.routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        if self.script:
            canned = self.script.popleft()
            if canned.delay:
                await asyncio.sleep(canned.delay)
            return web.json_response(canned.body, status=canned.status, headers=canned.headers)
        response: web.StreamResponse = await handler(request)
        return response


def json_body(value: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        text=json.dumps(value), status=status, content_type="application/json", headers=headers
    )
