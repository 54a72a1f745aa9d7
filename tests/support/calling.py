"""Calls through the REST edge: a voice-capable sender, placing a call, waiting for a state."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support.messaging import us_number

CALLS = "/calling/calls"


async def voice_sender(http: httpx.AsyncClient, bearer: dict[str, str]) -> str:
    response = await http.post(
        "/messaging/sender_ids",
        json={"type_id": "sms-long-code", "class_id": "alerts-na", "address": us_number()},
        headers=bearer,
    )
    assert response.status_code == 200, response.text
    sender_id: str = response.json()["id"]
    return sender_id


async def call(http: httpx.AsyncClient, bearer: dict[str, str], **fields: Any) -> str:
    response = await http.post(CALLS, json=fields, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    call_id: str = response.json()["id"]
    return call_id


async def until(
    http: httpx.AsyncClient, bearer: dict[str, str], call_id: str, state: str
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            body: dict[str, Any] = (await http.get(f"{CALLS}/{call_id}", headers=bearer)).json()
            if body["state"] == state:
                return body
            await asyncio.sleep(0.05)
