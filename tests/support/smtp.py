"""A real SMTP server (aiosmtpd) on the test's loop, recording what it accepts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.server import free_port


@dataclass
class Recorder:
    """aiosmtpd handler: keeps what it accepted and refuses chosen recipients with a reply."""

    refuse: dict[str, str] = field(default_factory=dict)  # address → full SMTP reply
    messages: list[tuple[str, list[str], bytes, str]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.content, str(session.peer))
        )
        return "250 Message accepted for delivery"


class Server:
    def __init__(self, recorder: Recorder, server: asyncio.Server, port: int) -> None:
        self.recorder = recorder
        self.server = server
        self.port = port


async def serve(recorder: Recorder, **smtp_options: Any) -> Server:
    port = free_port()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(recorder, hostname="mx.test", **smtp_options), "127.0.0.1", port
    )
    return Server(recorder, server, port)
