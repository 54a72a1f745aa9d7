"""The SMS API's side of the delivery engine: its messages' content and status changes.

ACCEPTED → SENT when a provider took it, → DELIVERED / FAILED by receipt; FAILED at once when
refused. Each change is an `sms.*` event in the engine's transaction. The SMS API has no
windows or expiry, so `scheduled` changes nothing visible and `expired` fails the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from switchboard.server.core.events import EventLog
from switchboard.server.core.types import Row
from switchboard.server.delivery.engine import Failure, Prepared
from switchboard.server.delivery.models import QueueKind
from switchboard.server.providers.base import Outbound, Receipt, SubmitResult
from switchboard.server.sms.models import SmsStatus
from switchboard.server.sms.repository import SmsRepository
from switchboard.server.sms.service import status_event


class SmsLedger:
    kind = QueueKind.SMS.value

    def __init__(self, repository: SmsRepository, events: EventLog) -> None:
        self._repository = repository
        self._events = events

    def prepare(self, session: Session, rows: Sequence[Row]) -> dict[str, Prepared]:
        messages = self._repository.lock_in_status(
            session, [r["id"] for r in rows], SmsStatus.ACCEPTED
        )
        return {
            m["id"]: Prepared(
                Outbound(
                    delivery_id=m["id"],
                    org_id=m["org_id"],
                    channel="sms",
                    to=m["destination"],
                    to_type=m["destination_type"],
                    sender="",
                    subject="",
                    content=m["content"],
                )
            )
            for m in messages
        }

    def scheduled(self, session: Session, rows: Sequence[Row], now: datetime) -> None:
        return None

    def sent(
        self, session: Session, results: Sequence[tuple[Row, SubmitResult]], now: datetime
    ) -> None:
        changes = [
            {
                "id": row["id"],
                "status": SmsStatus.SENT.value,
                "provider_message_id": result.provider_message_id,
                "updated_at": now,
            }
            for row, result in results
        ]
        self._change(session, SmsStatus.ACCEPTED, changes)

    def failed(self, session: Session, failures: Sequence[Failure], now: datetime) -> None:
        changes = [
            {
                "id": f.row["id"],
                "status": SmsStatus.FAILED.value,
                "error": f.error,
                "updated_at": now,
            }
            for f in failures
        ]
        self._change(session, SmsStatus.ACCEPTED, changes)

    def expired(self, session: Session, rows: Sequence[Row], now: datetime) -> None:
        changes = [
            {"id": r["id"], "status": SmsStatus.FAILED.value, "error": "expired", "updated_at": now}
            for r in rows
        ]
        self._change(session, SmsStatus.ACCEPTED, changes)

    def receipted(
        self, session: Session, receipts: Sequence[tuple[Row, Receipt]], now: datetime
    ) -> None:
        changes = [
            {
                "id": row["id"],
                "status": (SmsStatus.DELIVERED if r.delivered else SmsStatus.FAILED).value,
                "error": r.error,
                "updated_at": now,
            }
            for row, r in receipts
        ]
        self._change(session, SmsStatus.SENT, changes)

    def _change(
        self, session: Session, from_status: SmsStatus, changes: list[dict[str, Any]]
    ) -> None:
        """Apply changes to messages still in `from_status`, with an event for each."""
        if not changes:
            return
        current = {
            row["id"]: row
            for row in self._repository.lock_in_status(
                session, [c["id"] for c in changes], from_status
            )
        }
        applied = [c for c in changes if c["id"] in current]
        self._repository.update_many(session, from_status, applied)
        self._events.append(session, [status_event({**current[c["id"]], **c}) for c in applied])


__all__ = ["SmsLedger"]
