"""REST family B bodies that are not errors (those are in `errors`): form-encoded PUTs and bare
JSON arrays for lists."""

from __future__ import annotations

from typing import Any

import httpx

#: The content type of family B's form-encoded PUTs.
FORM = "application/x-www-form-urlencoded"


def bare(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list), body
    return body
