"""Inbound (MO) messages: what a provider received from an end user becomes an MO message of the
org that owns the address it was sent to, keywords apply, and auto-replies go out.

One transaction per batch the provider hands over (the provider acknowledges to its peer only
after it returns, so nothing received is lost):

1. The sender ID whose address the message was sent to decides the org. A SHARED address (an
   operator's short code used by several orgs) belongs to the org that last messaged this end
   user from it; failing that, to an org's own (PRIVATE) sender with that address. Messages to
   an address no org sends from are logged and dropped.
2. The message is stored RECEIVED (`message.received`).
3. Keywords match (KeywordService.match_inbound: the org's COMPANY keywords, then the RESERVED
   STOP/START/HELP); OPTOUT/OPTIN change consent with history source MESSAGE, STORE records it.
4. A reply is sent when the keyword names a reply template, else for the RESERVED keywords the
   org's template named like the keyword (`STOP`, `START`, `HELP`), else the default text below
   (what carriers expect a short code to answer). Replies skip delivery windows: the end user
   is waiting for them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import NotFound
from switchboard.server.core.validation import Checks
from switchboard.server.delivery import queue
from switchboard.server.delivery.models import Priority, QueueKind
from switchboard.server.delivery.recipients import country_and_zones
from switchboard.server.messaging.content.keywords import KeywordService, KeywordType
from switchboard.server.messaging.content.message_templates import (
    MessageTemplateService,
    placeholders,
)
from switchboard.server.messaging.requests.messages import MessageService, messages_table
from switchboard.server.messaging.requests.models import Direction
from switchboard.server.messaging.senders.models import SYSTEM_ORG, SenderIdRecord
from switchboard.server.messaging.senders.reference import types
from switchboard.server.providers.base import InboundSms
from switchboard.server.telephony.phone import InvalidNumber, classify

log = logging.getLogger("switchboard.messaging.inbound")

_senders = table_of(SenderIdRecord)
_s = _senders.c
_m = messages_table.c

DEFAULT_REPLIES = {
    "STOP": "You are unsubscribed and will receive no more messages from this number. "
    "Reply START to resubscribe.",
    "START": "You are subscribed again. Reply STOP to unsubscribe, HELP for help.",
    "HELP": "Reply STOP to unsubscribe. Message and data rates may apply.",
}


class InboundService:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        keywords: KeywordService,
        messages: MessageService,
        templates: MessageTemplateService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keywords = keywords
        self._messages = messages
        self._templates = templates

    async def receive(self, inbound: Sequence[InboundSms]) -> None:
        """Store, match and answer a provider's batch of MO messages (the engine's sink)."""
        await self._db.run_write(lambda session: self._receive(session, inbound))

    async def inject(self, org_id: str, from_address: str, to_address: str, text: str) -> str:
        """The sandbox's way in (DiagnosticsService.InjectInboundMessage): an MO message from
        `from_address` to one of `org_id`'s own sender addresses, handled like one from a
        carrier. Returns the MO message id; NotFound when the org sends from no such address."""
        checks = Checks()
        checks.required("from", from_address or None)
        checks.required("to", to_address or None)
        checks.required("text", text or None)
        checks.length("text", text, 1600)
        checks.raise_if_failed()
        now = self._clock.now()
        mo = InboundSms(_normalised(from_address), to_address, text, provider="sandbox")

        def work(session: Session) -> str:
            query = select(_senders).where(
                _s.org_id == org_id, _s.address.in_([_normalised(to_address), to_address])
            )
            sender = session.execute(query.limit(1)).mappings().first()
            if sender is None:
                raise NotFound(f"your org has no sender ID with the address {to_address!r}")
            return self._handle(session, mo, sender, now)

        return await self._db.run_write(work)

    def _receive(self, session: Session, inbound: Sequence[InboundSms]) -> None:
        now = self._clock.now()
        for mo in inbound:
            sender = self._sender_for(session, mo.to_address, _normalised(mo.from_address))
            if sender is None:
                log.warning(
                    "MO message to an address no org sends from: dropped",
                    extra={"to": mo.to_address, "provider": mo.provider},
                )
                continue
            self._handle(session, mo, sender, now)

    def _handle(self, session: Session, mo: InboundSms, sender: Any, now: datetime) -> str:
        """Store one MO message for the sender's org, apply keywords, answer; its id."""
        from_address = _normalised(mo.from_address)
        org_id = sender["org_id"]
        received = self._messages.insert_inbound(
            session,
            org_id,
            from_address=from_address,
            to_address=sender["address"],
            body=mo.content,
            customer_sender_id=sender["id"],
            now=now,
        )
        match = self._keywords.match_inbound(
            session, org_id, sender["id"], mo.content, now, from_address=from_address
        )
        if match is None:
            return str(received["id"])
        reply = match.reply_body
        if reply is None and match.type == KeywordType.RESERVED:
            reply = self._reserved_reply(session, org_id, match.name)
        if reply:
            self._send_reply(session, received, sender, reply, now)
        return str(received["id"])

    def _sender_for(self, session: Session, address: str, end_user: str) -> Any:
        """The sender (org's own row) an MO to `address` belongs to, or None."""
        candidates = [_normalised(address), address]
        last_mt = (
            select(_m.customer_sender_id)
            .where(
                _m.direction == Direction.MT.value,
                _m.from_address.in_(candidates),
                _m.to_address == end_user,
                _m.customer_sender_id != "",
            )
            .order_by(_m.created_at.desc())
            .limit(1)
        )
        sender_id = session.execute(last_mt).scalar()
        if sender_id:
            row = session.execute(select(_senders).where(_s.id == sender_id)).mappings().first()
            if row is not None:
                return row
        own = (
            select(_senders)
            .where(_s.address.in_(candidates), _s.org_id != SYSTEM_ORG)
            .order_by(_s.created_at)
            .limit(1)
        )
        return session.execute(own).mappings().first()

    def _reserved_reply(self, session: Session, org_id: str, keyword: str) -> str | None:
        template = self._templates.by_name(session, org_id, keyword)
        if template is not None and not placeholders(template["pattern"]):
            return str(template["pattern"])
        return DEFAULT_REPLIES.get(keyword)

    def _send_reply(self, session: Session, mo: Any, sender: Any, body: str, now: datetime) -> None:
        reply = self._messages.insert_reply(session, mo, body, now)
        gateway = session.execute(
            select(types.c.gateway_id).where(types.c.id == sender["type_id"])
        ).scalar()
        country, zones = country_and_zones(reply["to_address"])
        queue.enqueue(
            session,
            [
                {
                    "id": reply["id"],
                    "kind": QueueKind.MESSAGE.value,
                    "org_id": reply["org_id"],
                    "channel": "whatsapp" if "WHATSAPP" in sender["capabilities"] else "sms",
                    "route": gateway or "sms-default",
                    "sender": reply["from_address"],
                    "destination": reply["to_address"],
                    "country": country,
                    "zones": zones,
                    "class_id": sender["class_id"],
                    "priority": Priority.HIGH,
                    "due_at": now,
                    "created_at": now,
                }
            ],
        )


def _normalised(address: str) -> str:
    """E.164 for numbers (SMSCs send `27821234567` or `+27821234567`), else as received."""
    text = address.strip()
    digits = text.lstrip("+")
    if digits.isdigit() and len(digits) > 8:
        try:
            return classify("+" + digits).e164
        except InvalidNumber:
            return text
    return text


__all__ = ["DEFAULT_REPLIES", "InboundService"]
