"""Messaging as tests drive it through the REST edge: sender IDs that can always send, and
message requests submitted, read and awaited."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx
import phonenumbers

#: A sender class whose delivery window is 00:00-24:00 on every day, holidays included.
ALWAYS_OPEN = "alerts-na"
MR = "/messaging/message_requests"


def us_number() -> str:
    while True:
        candidate = f"+1415{random.randint(2000000, 9999999)}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate


async def create_sender(http: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    """A sender of the ALWAYS_OPEN class, so that what it sends never waits for a delivery
    window, whatever the hour; tests of windows pass their own `class_id`."""
    body = {"type_id": "sms-long-code", "class_id": ALWAYS_OPEN, **fields}
    body.setdefault("address", us_number())
    response = await http.post("/messaging/sender_ids", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    sender_id: str = response.json()["id"]
    return sender_id


async def submit(http: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    response = await http.post(MR, json=fields, headers=headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    request_id: str = response.json()["id"]
    return request_id


async def read(http: httpx.AsyncClient, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    response = await http.get(f"{MR}/{request_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_request(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    request_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 15.0,
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            body = await read(http, headers, request_id)
            if until(body):
                return body
            await asyncio.sleep(0.1)


async def messages_of(
    http: httpx.AsyncClient, headers: dict[str, str], request_id: str, query: str = ""
) -> list[dict[str, Any]]:
    response = await http.get(f"{MR}/{request_id}/messages{query}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list)
    return body


def done(body: dict[str, Any]) -> bool:
    return body["state"] in ("COMPLETED", "PAUSED", "CANCELED", "REJECTED")
