"""A fake WhatsApp Cloud API (Graph API) messages endpoint and webhook source.

`POST /{version}/{phone_number_id}/messages` with a bearer token: `{"messaging_product",
"contacts": [{input, wa_id}], "messages": [{"id": "wamid..."}]}`; a wrong token answers 401 with
an OAuthException (code 190); numbers in `errors` answer Graph's error object with the given
HTTP status and code (e.g. 400/131026, 400/100, 400/130429 for throughput limits); more than
`rate_limit` requests per second answer 429 with code 130429. `status_webhook` and
`inbound_webhook` build the bodies Meta POSTs, `sign` their X-Hub-Signature-256.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes import FakeServer, json_body

MESSAGES = {
    100: "(#100) Invalid parameter",
    130429: "Rate limit hit",
    131009: "(#131009) Parameter value is not valid",
    131026: "Message undeliverable",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
}


def graph_error(code: int, status: int, subcode: int | None = None) -> tuple[dict[str, Any], int]:
    error: dict[str, Any] = {
        "message": MESSAGES.get(code, f"(#{code}) error"),
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": MESSAGES.get(code, "")},
        "fbtrace_id": "AbCdEf123",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}, status


class FakeWhatsApp(FakeServer):
    def __init__(
        self,
        token: str = "wa-test-token",
        phone_number_id: str = "106540352242922",
        display_number: str = "15550783881",
        app_secret: str = "app-secret",
        rate_limit: int = 0,
    ) -> None:
        super().__init__()
        self.token = token
        self.phone_number_id = phone_number_id
        self.display_number = display_number
        self.app_secret = app_secret
        self.rate_limit = rate_limit
        self.errors: dict[str, tuple[int, int]] = {}  # wa number → (HTTP status, Graph code)
        self.sent: dict[str, dict[str, Any]] = {}  # wamid → request body
        self._window: list[float] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/{phone}/messages", self._send)

    async def _send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            body, status = graph_error(190, 401, subcode=463)
            body["error"]["message"] = "Error validating access token: Session has expired"
            return json_body(body, status)
        if request.match_info["phone"] != self.phone_number_id:
            return json_body(*graph_error(100, 400, subcode=33))
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 1.0]
        if self.rate_limit and len(self._window) >= self.rate_limit:
            return json_body(*graph_error(130429, 429))
        self._window.append(now)
        body = await request.json()
        if body.get("messaging_product") != "whatsapp" or body.get("type") != "text":
            return json_body(*graph_error(100, 400))
        to = str(body.get("to", ""))
        if not to.isdigit():
            return json_body(*graph_error(131009, 400))
        if to in self.errors:
            status, code = self.errors[to]
            return json_body(*graph_error(code, status))
        wamid = "wamid." + self.next_id("HBgL")
        self.sent[wamid] = body
        return json_body(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            }
        )

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_number,
                "phone_number_id": self.phone_number_id,
            },
            **value,
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA_ID", "changes": [{"value": value, "field": "messages"}]}],
        }

    def status_webhook(self, *updates: tuple[str, str]) -> dict[str, Any]:
        """(wamid, sent|delivered|read|failed) → a statuses webhook body."""
        statuses = []
        for wamid, state in updates:
            sent = self.sent[wamid]
            status: dict[str, Any] = {
                "id": wamid,
                "status": state,
                "timestamp": str(int(time.time())),
                "recipient_id": sent["to"],
            }
            if "biz_opaque_callback_data" in sent:
                status["biz_opaque_callback_data"] = sent["biz_opaque_callback_data"]
            if state == "failed":
                status["errors"] = [
                    {
                        "code": 131026,
                        "title": "Message undeliverable",
                        "message": "Message undeliverable",
                        "error_data": {"details": "Message Undeliverable."},
                    }
                ]
            statuses.append(status)
        return self._envelope({"statuses": statuses})

    def inbound_webhook(self, sender: str, text: str) -> dict[str, Any]:
        return self._envelope(
            {
                "contacts": [{"profile": {"name": "Juan"}, "wa_id": sender}],
                "messages": [
                    {
                        "from": sender,
                        "id": "wamid." + self.next_id("IN"),
                        "timestamp": str(int(time.time())),
                        "type": "text",
                        "text": {"body": text},
                    }
                ],
            }
        )

    def sign(self, payload: dict[str, Any]) -> tuple[bytes, str]:
        """The raw body Meta would send and its X-Hub-Signature-256 header."""
        raw = json.dumps(payload).encode()
        digest = hmac.new(self.app_secret.encode(), raw, hashlib.sha256).hexdigest()
        return raw, f"sha256={digest}"
