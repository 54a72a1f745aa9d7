"""Contacts made for tests: through the REST edge, or written directly as rows."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.orm import Session

from switchboard.server.app.server import Application
from switchboard.server.contacts.models import ContactRecord
from switchboard.server.core.ids import new_id
from tests.support.clock import TEST_CLOCK


async def create(http: httpx.AsyncClient, bearer: dict[str, str], **fields: Any) -> str:
    response = await http.post("/contacts", json=fields, headers=bearer)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    contact_id: str = response.json()["id"]
    return contact_id


async def make_contact(app: Application, org: str) -> str:
    """A contact row (written directly: tests of its tokens need no more)."""
    contact_id = new_id("con_")

    def work(session: Session) -> None:
        now = TEST_CLOCK.now()
        session.add(
            ContactRecord(
                id=contact_id, org_id=org, application_id="test-app", created_at=now, updated_at=now
            )
        )

    await app.db.run_write(work)
    return contact_id
