"""A fake Clickatell Platform ("One API") SMS endpoint.

`POST /messages` with `Authorization: <apiKey>`: 401 with Clickatell's error body for a wrong
key; per-message results `{apiMessageId, accepted, to, error}` (HTTP 202, or 400 when no
message was accepted); numbers in `refuse` are refused with the given error. Rate limiting:
more than `rate_limit` submits per second answer 429 with Retry-After. `GET /messages/{id}`
answers the message's status; `callback()` builds the status callback Clickatell would POST.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tests.fakes import FakeServer, json_body

STATUS_CODES = {
    "QUEUED": 2,
    "DELIVERED_TO_GATEWAY": 3,
    "RECEIVED_BY_RECIPIENT": 4,
    "ERROR_DELIVERING": 7,
    "ROUTING_ERROR": 9,
    "EXPIRED": 10,
}


class FakeClickatell(FakeServer):
    def __init__(self, api_key: str = "ck-test-key", rate_limit: int = 0) -> None:
        super().__init__()
        self.api_key = api_key
        self.rate_limit = rate_limit  # submits per second; 0 = unlimited
        self.refuse: dict[str, str] = {}  # number (no +) → error
        self.messages: dict[str, dict[str, Any]] = {}  # apiMessageId → what was sent + status
        self._window: list[float] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/messages", self._send)
        app.router.add_get("/messages/{id}", self._status)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == self.api_key:
            return None
        return json_body(
            {
                "messages": [],
                "errorCode": 1,
                "error": "Invalid or missing Integration API Key",
                "errorDescription": "Invalid or missing Integration API Key",
            },
            status=401,
        )

    async def _send(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 1.0]
        if self.rate_limit and len(self._window) >= self.rate_limit:
            return json_body(
                {"messages": [], "errorCode": 429, "error": "Too many requests"},
                status=429,
                **{"Retry-After": "1"},
            )
        self._window.append(now)
        body = await request.json()
        results = []
        for message in body.get("messages", []):
            to = message.get("to", "")
            if to in self.refuse:
                results.append(
                    {"apiMessageId": "", "accepted": False, "to": to, "error": self.refuse[to]}
                )
                continue
            api_id = self.next_id("ck")
            self.messages[api_id] = {**message, "status": "QUEUED"}
            results.append({"apiMessageId": api_id, "accepted": True, "to": to, "error": None})
        accepted = any(r["accepted"] for r in results)
        return json_body({"messages": results, "error": None}, status=202 if accepted else 400)

    async def _status(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        message = self.messages.get(request.match_info["id"])
        if message is None:
            return json_body({"error": "Message not found"}, status=404)
        return json_body(
            {
                "messageId": request.match_info["id"],
                "status": message["status"],
                "statusCode": STATUS_CODES[message["status"]],
                "clientMessageId": message.get("clientMessageId", ""),
            }
        )

    def set_status(self, api_id: str, status: str) -> None:
        self.messages[api_id]["status"] = status

    def callback(self, api_id: str, status: str) -> dict[str, Any]:
        """Record a status change and return the callback body Clickatell would POST."""
        self.set_status(api_id, status)
        message = self.messages[api_id]
        return {
            "integrationName": "switchboard",
            "messageId": api_id,
            "requestId": api_id,
            "clientMessageId": message.get("clientMessageId", ""),
            "to": message["to"],
            "from": "",
            "statusCode": STATUS_CODES[status],
            "status": status,
            "timestamp": int(time.time() * 1000),
        }
