"""Message requests' side of the delivery engine: each message's content and states.

A message's queue row is written with the message (HELD) and released (QUEUED) when its request
starts TRANSMITTING, or when a PAUSED request is resumed; canceled and expired messages take
their rows with them. From the queue a message goes CREATED/SCHEDULED → SENT → DELIVERED or
FAILED (by receipt), or FAILED when refused, EXPIRED past its `expiry_time`, SCHEDULED again
while its sender class's window is closed. Each change goes through `MessageService.apply`:
a `message.*` event and the request's counters, in the engine's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from switchboard.server.core.db import for_update
from switchboard.server.core.types import Row
from switchboard.server.delivery.engine import Failure, FailureKind, Prepared
from switchboard.server.delivery.models import QueueKind
from switchboard.server.messaging.requests.messages import (
    MessageService,
    messages_table,
)
from switchboard.server.messaging.requests.models import FailureCode, MessageState
from switchboard.server.messaging.senders.rates import Rates
from switchboard.server.providers.base import Outbound, Receipt, SubmitResult
from switchboard.server.telephony.phone import InvalidNumber, classify

_m = messages_table.c
WAITING = (MessageState.CREATED.value, MessageState.SCHEDULED.value)


def _ids(provider_message_id: str | None) -> str:
    return (provider_message_id or "")[:1024]


def _text(error: str | None) -> str:
    return (error or "")[:1024]


class MessageLedger:
    kind = QueueKind.MESSAGE.value

    def __init__(self, messages: MessageService, rates: Rates) -> None:
        self._messages = messages
        self._rates = rates

    def _current(self, session: Session, ids: Sequence[str], states: Sequence[str]) -> list[Row]:
        query = select(messages_table).where(_m.id.in_(list(ids)), _m.state.in_(list(states)))
        query = for_update(session, query)
        return [dict(r) for r in session.execute(query).mappings()]

    def prepare(self, session: Session, rows: Sequence[Row]) -> dict[str, Prepared]:
        prepared: dict[str, Prepared] = {}
        channels = {r["id"]: r["channel"] for r in rows}
        for m in self._current(session, list(channels), WAITING):
            channel = channels[m["id"]]
            to_type = ""
            if channel != "email":  # providers judge numbers by their type (mobile, fixed line…)
                try:
                    to_type = classify(m["to_address"]).type
                except InvalidNumber as exc:
                    prepared[m["id"]] = Prepared(failure=str(exc))
                    continue
            prepared[m["id"]] = Prepared(
                Outbound(
                    delivery_id=m["id"],
                    org_id=m["org_id"],
                    channel=channel,
                    to=m["to_address"],
                    to_type=to_type,
                    sender=m["from_address"],
                    subject=m["subject"],
                    content=m["body"],
                )
            )
        return prepared

    def scheduled(self, session: Session, rows: Sequence[Row], now: datetime) -> None:
        due = {r["id"]: r["due_at"] for r in rows}
        current = self._current(session, list(due), WAITING)
        self._messages.apply(
            session,
            current,
            {"state": MessageState.SCHEDULED.value},
            now,
            "scheduled",
            per_row={m["id"]: {"scheduled_at": due[m["id"]]} for m in current},
        )

    def sent(
        self, session: Session, results: Sequence[tuple[Row, SubmitResult]], now: datetime
    ) -> None:
        ids = {row["id"]: result for row, result in results}
        where = {row["id"]: (row["channel"], row["country"], row["route"]) for row, _ in results}
        senders = {row["id"]: row["sender"] for row, _ in results}  # a failover's own address
        current = self._current(session, list(ids), WAITING)
        self._messages.apply(
            session,
            current,
            {"state": MessageState.SENT.value, "sent_at": now, "lease_until": None},
            now,
            "sent",
            per_row={
                m["id"]: {
                    "external_transaction_ids": _ids(ids[m["id"]].provider_message_id),
                    "price": self._price(m, *where[m["id"]]),
                    "from_address": senders[m["id"]] or m["from_address"],
                }
                for m in current
            },
        )

    def _price(self, message: Row, channel: str, country: str, route: str) -> float:
        return self._rates.price(channel, country, message["body"], route)

    def failed(self, session: Session, failures: Sequence[Failure], now: datetime) -> None:
        by_id = {f.row["id"]: f for f in failures}
        current = self._current(session, list(by_id), WAITING)
        per_row: dict[str, dict[str, Any]] = {}
        for message in current:
            failure = by_id[message["id"]]
            # Refused by the provider, or not a number we can send to: the recipient's fault.
            code = (
                FailureCode.INVALID_RECIPIENT
                if failure.kind in (FailureKind.REFUSED, FailureKind.UNREADABLE)
                else FailureCode.OTHER
            )
            per_row[message["id"]] = {
                "failure_code": code.value,
                "failure_details": failure.error[:1024],
            }
        self._messages.apply(
            session,
            current,
            {"state": MessageState.FAILED.value, "lease_until": None},
            now,
            "failed",
            per_row=per_row,
        )

    def expired(self, session: Session, rows: Sequence[Row], now: datetime) -> None:
        current = self._current(session, [r["id"] for r in rows], WAITING)
        self._messages.apply(
            session, current, {"state": MessageState.EXPIRED.value}, now, "expired"
        )

    def receipted(
        self, session: Session, receipts: Sequence[tuple[Row, Receipt]], now: datetime
    ) -> None:
        by_id = {row["id"]: receipt for row, receipt in receipts}
        current = self._current(session, list(by_id), [MessageState.SENT.value])
        delivered = [m for m in current if by_id[m["id"]].delivered]
        failed = [m for m in current if not by_id[m["id"]].delivered]
        self._messages.apply(
            session,
            delivered,
            {"state": MessageState.DELIVERED.value, "delivered_at": now},
            now,
            "delivered",
        )
        self._messages.apply(
            session,
            failed,
            {"state": MessageState.FAILED.value, "failure_code": FailureCode.OTHER.value},
            now,
            "failed",
            per_row={m["id"]: {"failure_details": _text(by_id[m["id"]].error)} for m in failed},
        )


__all__ = ["WAITING", "MessageLedger"]
