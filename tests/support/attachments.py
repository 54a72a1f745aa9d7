"""Messaging attachments through the REST edge: metadata, access tokens, content upload."""

from __future__ import annotations

from typing import Any

import httpx

CONTENT = "/scg-attachment/api/v1/messaging/attachments/{}/content"


async def create(http: httpx.AsyncClient, bearer: dict[str, str], **fields: Any) -> str:
    response = await http.post("/messaging/attachments", json=fields, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    attachment_id: str = response.json()["id"]
    return attachment_id


async def token(http: httpx.AsyncClient, bearer: dict[str, str], attachment_id: str) -> str:
    response = await http.post(
        f"/messaging/attachments/{attachment_id}/access_tokens", json={}, headers=bearer
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    value: str = response.json()["id"]
    return value


async def upload(
    http: httpx.AsyncClient, access_token: str, data: bytes, mime: str = "image/png"
) -> httpx.Response:
    files = {"file": ("picture.png", data, mime)}
    return await http.post(CONTENT.format(access_token), files=files)


async def get(
    http: httpx.AsyncClient, bearer: dict[str, str], attachment_id: str
) -> dict[str, Any]:
    response = await http.get(f"/messaging/attachments/{attachment_id}", headers=bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
