"""The communications' side of the delivery engine: each channel delivery's content and states.

A delivery waits ACCEPTED (due) or SCHEDULED (its requested time or its type's window) in the
queue; SENT once its provider took it; DELIVERED or FAILED by receipt, or FAILED when refused.
Each change is a `communication.*` event in the engine's transaction. The sealed rendering is
opened only in `prepare`, just before the hand-off, and dropped once the delivery is SENT or
FAILED, so the real content (reset links, codes) never outlives its delivery.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from switchboard.server.communications import qr
from switchboard.server.communications.email import EmailParts, InlinePart, build_email
from switchboard.server.communications.models import ChannelName, DeliveryRecord, DeliveryStatus
from switchboard.server.communications.sealing import Sealer
from switchboard.server.communications.service import delivery_event
from switchboard.server.core.db import table_of
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.types import Row
from switchboard.server.delivery.engine import Failure, Prepared
from switchboard.server.delivery.models import QueueKind
from switchboard.server.providers.base import Outbound, Receipt, SubmitResult

log = logging.getLogger("switchboard.communications.delivery")

_table = table_of(DeliveryRecord)
_c = _table.c
_WAITING = (DeliveryStatus.ACCEPTED.value, DeliveryStatus.SCHEDULED.value)


class CommunicationLedger:
    kind = QueueKind.COMMUNICATION.value

    def __init__(self, *, events: EventLog, sealer: Sealer, email_from: str) -> None:
        self._events = events
        self._sealer = sealer
        self._email_from = email_from

    def prepare(self, session: Session, rows: Sequence[Row]) -> dict[str, Prepared]:
        query = select(_table).where(_c.id.in_([r["id"] for r in rows]), _c.status.in_(_WAITING))
        prepared: dict[str, Prepared] = {}
        for delivery in session.connection().execute(query).mappings():
            try:
                # The dev outbox shows the masked rendering, never the sealed one.
                outbound = self._outbound(delivery)
                prepared[delivery["id"]] = Prepared(outbound, shown=delivery["content"])
            except (InvalidToken, ValueError, KeyError) as exc:
                log.warning(
                    "sealed content unreadable",
                    extra={"delivery": delivery["id"], "error": repr(exc)},
                )
                problem = "the sealed content cannot be opened (was the secret changed?)"
                prepared[delivery["id"]] = Prepared(failure=problem)
        return prepared

    def _outbound(self, row: Mapping[Any, Any]) -> Outbound:
        sealed = self._sealer.unseal(row["sealed"] or "")
        base = {
            "delivery_id": row["id"],
            "org_id": row["org_id"],
            "channel": row["channel"],
            "to": row["destination"],
            "to_type": row["destination_type"],
            "sender": row["sender_info"],
            "subject": sealed.get("subject", ""),
            "content": sealed["content"],
        }
        if row["channel"] != ChannelName.EMAIL:
            return Outbound(**base)
        inline: list[InlinePart] = []
        attachments: list[InlinePart] = []
        for file in sealed.get("files", []):
            part = InlinePart(
                file["name"], file["content_type"], base64.b64decode(file["content"]), file["cid"]
            )
            (inline if part.content_id else attachments).append(part)
        code = sealed.get("qr")
        if code:
            inline.append(InlinePart("qr.png", "image/png", qr.png(code["text"]), code["cid"]))
        cc = tuple(sealed.get("cc", ()))
        sender = row["sender_info"]
        address = sender if "@" in sender else self._email_from
        mime = build_email(
            EmailParts(
                sender_name="" if "@" in sender else sender,
                sender_address=address,
                to=row["destination"],
                cc=cc,
                reply_to=sealed.get("reply_to", ""),
                subject=base["subject"],
                html=base["content"],
                inline=inline,
                attachments=attachments,
            )
        )
        recipients = (row["destination"], *cc, *sealed.get("bcc", ()))
        return Outbound(**base, recipients=recipients, mime=mime)

    # -- outcomes --------------------------------------------------------------------------------

    def scheduled(self, session: Session, rows: Sequence[Row], now: datetime) -> None:
        for row in rows:
            self._move(
                session,
                row["id"],
                _WAITING,
                {"status": DeliveryStatus.SCHEDULED.value, "due_at": row["due_at"]},
                now,
                event_unless=DeliveryStatus.SCHEDULED.value,
            )

    def sent(
        self, session: Session, results: Sequence[tuple[Row, SubmitResult]], now: datetime
    ) -> None:
        for row, result in results:
            change = {
                "status": DeliveryStatus.SENT.value,
                "provider_message_id": result.provider_message_id or "",
                "sent_at": now,
                "error": "",
                "sealed": None,
            }
            self._move(session, row["id"], _WAITING, change, now)

    def failed(self, session: Session, failures: Sequence[Failure], now: datetime) -> None:
        for failure in failures:
            change = {"status": DeliveryStatus.FAILED.value, "error": failure.error, "sealed": None}
            self._move(session, failure.row["id"], _WAITING, change, now)

    def expired(self, session: Session, rows: Sequence[Row], now: datetime) -> None:
        for row in rows:
            change = {"status": DeliveryStatus.FAILED.value, "error": "expired", "sealed": None}
            self._move(session, row["id"], _WAITING, change, now)

    def receipted(
        self, session: Session, receipts: Sequence[tuple[Row, Receipt]], now: datetime
    ) -> None:
        for row, receipt in receipts:
            if receipt.delivered:
                change: dict[str, Any] = {
                    "status": DeliveryStatus.DELIVERED.value,
                    "delivered_at": now,
                }
            else:
                change = {"status": DeliveryStatus.FAILED.value, "error": receipt.error or ""}
            self._move(session, row["id"], (DeliveryStatus.SENT.value,), change, now)

    def _move(
        self,
        session: Session,
        delivery_id: str,
        from_statuses: Sequence[str],
        change: dict[str, Any],
        now: datetime,
        *,
        event_unless: str = "",
    ) -> None:
        """Apply `change` if the delivery is still in one of `from_statuses`, with its event
        (none when it already was in `event_unless`: a second deferral is not news)."""
        connection = session.connection()
        current = (
            connection.execute(
                select(_table).where(_c.id == delivery_id, _c.status.in_(from_statuses))
            )
            .mappings()
            .one_or_none()
        )
        if current is None:
            return
        values = {**change, "lease_until": None, "updated_at": now}
        connection.execute(update(_table).where(_c.id == delivery_id).values(values))
        if current["status"] != event_unless:
            events: list[NewEvent] = [delivery_event({**current, **values})]
            self._events.append(session, events)


__all__ = ["CommunicationLedger"]
