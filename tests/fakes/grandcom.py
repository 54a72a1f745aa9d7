"""A fake Grandcom gateway, as modelled in `providers/http_sms.py` (no public spec exists).

`POST /messages` with `Authorization: Bearer <key>` answers `GrandcomMsgResponse`: per message
`{apiMessageId, accepted, to, error, hasError, msg}` (echoing the message, so answers match by
clientMessageId), HTTP 200; a wrong key answers 401 with `{"error"}`, too many submits per
second 429 with Retry-After. `GET /messages/{id}` answers the status; `callback()` builds the
status callback body.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tests.fakes import FakeServer, json_body


class FakeGrandcom(FakeServer):
    def __init__(self, api_key: str = "gc-test-key", rate_limit: int = 0) -> None:
        super().__init__()
        self.api_key = api_key
        self.rate_limit = rate_limit
        self.refuse: dict[str, str] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.reverse = False  # answer in reverse order: clients must match by clientMessageId
        self._window: list[float] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/messages", self._send)
        app.router.add_get("/messages/{id}", self._status)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return json_body({"messages": [], "error": "Unauthorized: invalid API key"}, status=401)

    async def _send(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 1.0]
        if self.rate_limit and len(self._window) >= self.rate_limit:
            return json_body(
                {"messages": [], "error": "Rate limit exceeded"}, 429, **{"Retry-After": "2"}
            )
        self._window.append(now)
        results = []
        for message in (await request.json()).get("messages", []):
            to = message.get("to", "")
            error = self.refuse.get(to)
            api_id = "" if error else self.next_id("gc-")
            if api_id:
                self.messages[api_id] = {**message, "status": "QUEUED"}
            results.append(
                {
                    "apiMessageId": api_id,
                    "accepted": error is None,
                    "to": to,
                    "error": error or "",
                    "hasError": error is not None,
                    "msg": message,
                }
            )
        if self.reverse:
            results.reverse()
        return json_body({"messages": results, "error": ""})

    async def _status(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        api_id = request.match_info["id"]
        if api_id not in self.messages:
            return json_body({"error": "Not found"}, status=404)
        return json_body(self._status_body(api_id))

    def _status_body(self, api_id: str) -> dict[str, Any]:
        message = self.messages[api_id]
        failed = message["status"] in ("FAILED", "REJECTED", "EXPIRED")
        return {
            "apiMessageId": api_id,
            "clientMessageId": message.get("clientMessageId", ""),
            "status": message["status"],
            "error": "Handset unreachable" if failed else "",
        }

    def callback(self, api_id: str, status: str) -> dict[str, Any]:
        self.messages[api_id]["status"] = status
        return self._status_body(api_id)
