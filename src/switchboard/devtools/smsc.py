"""A development/test SMSC: SMPP 3.4 on asyncio with smpp34's codec, plus an HTTP/JSON control API.

    python -m switchboard.devtools.smsc --port 2775 [--control-port 8775] [--dlr-delay 0.1]
        [--system-id ID --password PW] [--resp-delay S] [--dlr-before-resp]

Outcome by destination (digits only, no "+"):
  ends 0429 → submit_sm rejected with ESME_RTHROTTLED (0x58), a transient error
  ends 0411 → submit_sm rejected with ESME_RINVDSTADR (0x0B), a permanent error
  ends 0013 → accepted, receipt stat:UNDELIV err:013
  anything else → accepted, receipt stat:DELIVRD err:000
One receipt per submitted part (as real SMSCs do), `--dlr-delay` seconds after the submit;
with `--dlr-before-resp` the receipt is written before the submit_sm_resp.
A deliver_sm answered with a non-zero status is re-sent after `--redeliver-delay`; deliveries
to a session that went away wait for the next bind.

Control API (JSON): GET /stats, GET /messages, POST /mo {"from","to","text"}, POST /reset,
POST /config {dlr_delay, resp_delay, dlr_before_resp, redeliver_delay, max_redeliveries}.
Not built on smpp34.Server: that cannot refuse binds, hold submit answers in order with
receipts, or report window use, and its runtime crashes at exit; the codec alone does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import smpp34

from switchboard.server.providers.smpp import (
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVDSTADR,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    GENERIC_NACK,
    RESPONSE_BIT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    TLV_MESSAGE_STATE,
    TLV_RECEIPTED_MESSAGE_ID,
    UNBIND,
    UNBIND_RESP,
    Framer,
    cstring,
    pdu,
)
from switchboard.server.telephony import gsm

BIND_COMMANDS = {0x01, 0x02, 0x09}  # receiver, transmitter, transceiver
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F


@dataclass
class Config:
    dlr_delay: float = 0.05
    resp_delay: float = 0.0
    dlr_before_resp: bool = False
    redeliver_delay: float = 0.2
    max_redeliveries: int = 5
    system_id: str = ""
    password: str = ""


@dataclass
class Delivery:
    """A deliver_sm to push (receipt or MO) and how often it was refused."""

    kind: str  # "dlr" or "mo"
    source: str
    destination: str
    short_message: bytes
    esm_class: int
    data_coding: int = 0
    source_ton: int = 1
    destination_ton: int = 0
    tlvs: list[tuple[int, bytes]] = field(default_factory=list)
    attempts: int = 0
    session: Session | None = None  # preferred: the one that submitted
    generation: int = 0  # deliveries from before a /reset are dropped


class Session:
    def __init__(self, smsc: Smsc, writer: asyncio.StreamWriter) -> None:
        self.smsc = smsc
        self.writer = writer
        self.bound = False
        self.sequence = itertools.count(1)
        self.pending: dict[int, Delivery] = {}
        self._out: list[bytes] = []

    def send(self, data: bytes) -> None:
        """Everything sent while one chunk of input is handled leaves in one write."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if not self.writer.is_closing():
            self.writer.write(data)


class Smsc:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.sessions: list[Session] = []
        self.outbox: list[Delivery] = []
        self._ids = itertools.count(1)
        self._references = itertools.count(1)
        self.generation = 0
        self.reset()

    def reset(self) -> None:
        self.generation += 1
        self.outbox.clear()
        for session in self.sessions:
            session.pending.clear()
        self.messages: list[dict[str, Any]] = []
        self.seen: set[tuple[str, str]] = set()
        self.partial: dict[tuple[str, str, int, int], dict[int, tuple[bytes, str]]] = {}
        self.outstanding = 0
        self.stats: dict[str, int] = dict.fromkeys(
            [
                "binds",
                "bind_failures",
                "submits",
                "messages",
                "duplicates",
                "throttled",
                "rejected",
                "receipts_sent",
                "mo_sent",
                "deliver_acked",
                "deliver_errors",
                "redeliveries",
                "max_outstanding",
            ],
            0,
        )

    # ── SMPP side ────────────────────────────────────────────────────────────────────────

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session(self, writer)
        self.sessions.append(session)
        framer = Framer()
        try:
            while data := await reader.read(65536):
                for raw in framer.feed(data):
                    self.handle(session, raw)
                if writer.is_closing():
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            session.bound = False
            self.sessions.remove(session)
            self.outbox.extend(session.pending.values())  # unanswered: retried on the next bind
            session.pending.clear()
            writer.close()

    def handle(self, session: Session, raw: bytes) -> None:
        command = int.from_bytes(raw[4:8], "big")
        status = int.from_bytes(raw[8:12], "big")
        sequence = int.from_bytes(raw[12:16], "big")
        if command == SUBMIT_SM:
            self.on_submit(session, sequence, raw)
        elif command == DELIVER_SM_RESP:
            self.on_deliver_resp(session, sequence, status)
        elif command in BIND_COMMANDS:
            self.on_bind(session, command, sequence, raw[16:])
        elif command == ENQUIRE_LINK:
            session.send(pdu(ENQUIRE_LINK_RESP, ESME_ROK, sequence))
        elif command == UNBIND:
            session.bound = False
            session.send(pdu(UNBIND_RESP, ESME_ROK, sequence))
            asyncio.get_running_loop().call_soon(session.writer.close)
        elif not command & RESPONSE_BIT:
            session.send(pdu(GENERIC_NACK, ESME_RINVCMDID, sequence))

    def on_bind(self, session: Session, command: int, sequence: int, body: bytes) -> None:
        system_id, offset = cstring(body)
        password, _ = cstring(body, offset)
        status = ESME_ROK
        if self.config.system_id and system_id != self.config.system_id:
            status = ESME_RINVSYSID
        elif self.config.password and password != self.config.password:
            status = ESME_RINVPASWD
        self.stats["bind_failures" if status else "binds"] += 1
        session.send(pdu(command | RESPONSE_BIT, status, sequence, b"devsmsc\0"))
        if status:
            asyncio.get_running_loop().call_soon(session.writer.close)
            return
        session.bound = True
        waiting, self.outbox = self.outbox, []
        for delivery in waiting:
            self.push(delivery)

    def on_submit(self, session: Session, sequence: int, raw: bytes) -> None:
        stats = self.stats
        stats["submits"] += 1
        if not session.bound:
            session.send(pdu(SUBMIT_SM_RESP, ESME_RINVBNDSTS, sequence))
            return
        try:
            sm = smpp34.decode(raw)
        except smpp34.SmppError:
            session.send(pdu(SUBMIT_SM_RESP, ESME_RSYSERR, sequence))
            return
        assert isinstance(sm, smpp34.SubmitSm)
        destination = sm.destination_addr
        if destination.endswith("0429"):
            stats["throttled"] += 1
            session.send(pdu(SUBMIT_SM_RESP, ESME_RTHROTTLED, sequence))
            return
        if destination.endswith("0411"):
            stats["rejected"] += 1
            session.send(pdu(SUBMIT_SM_RESP, ESME_RINVDSTADR, sequence))
            return
        message_id = f"{next(self._ids):x}"
        self.record(sm, message_id)
        self.outstanding += 1
        stats["max_outstanding"] = max(stats["max_outstanding"], self.outstanding)
        if destination.endswith("0013"):
            stat, err = "UNDELIV", "013"
        else:
            stat, err = "DELIVRD", "000"
        receipt = self.receipt(sm, message_id, stat, err, session)
        resp = pdu(SUBMIT_SM_RESP, ESME_ROK, sequence, message_id.encode() + b"\0")
        loop = asyncio.get_running_loop()
        if self.config.dlr_before_resp:
            self.push(receipt)
            self.answer(session, resp)
            return
        if self.config.resp_delay > 0:
            loop.call_later(self.config.resp_delay, self.answer, session, resp)
        else:
            self.answer(session, resp)
        if self.config.dlr_delay > 0:
            loop.call_later(self.config.dlr_delay, self.push, receipt)
        else:
            loop.call_soon(self.push, receipt)

    def answer(self, session: Session, resp: bytes) -> None:
        self.outstanding -= 1
        if session.bound:
            session.send(resp)

    def record(self, sm: smpp34.SubmitSm, message_id: str) -> None:
        """Keep every complete message: reassemble UDH-concatenated parts first."""
        payload = sm.short_message
        concat = None
        if sm.esm_class & gsm.ESM_UDHI:
            concat, payload = gsm.split_udh(payload)
        ids = [message_id]
        if concat is not None and concat.total > 1:
            key = (sm.source_addr, sm.destination_addr, concat.reference, concat.total)
            parts = self.partial.setdefault(key, {})
            parts[concat.sequence] = (payload, message_id)
            if len(parts) < concat.total:
                return
            del self.partial[key]
            ordered = [parts[i] for i in sorted(parts)]
            payload = b"".join(body for body, _ in ordered)
            ids = [ident for _, ident in ordered]
        text = gsm.decode(sm.data_coding, payload)
        self.stats["messages"] += 1
        if (sm.destination_addr, text) in self.seen:
            self.stats["duplicates"] += 1
        self.seen.add((sm.destination_addr, text))
        self.messages.append(
            {
                "destination": sm.destination_addr,
                "source": sm.source_addr,
                "source_ton": sm.source_addr_ton,
                "source_npi": sm.source_addr_npi,
                "text": text,
                "parts": len(ids),
                "message_ids": ids,
                "data_coding": sm.data_coding,
                "registered_delivery": sm.registered_delivery,
            }
        )

    def receipt(
        self, sm: smpp34.SubmitSm, message_id: str, stat: str, err: str, session: Session
    ) -> Delivery:
        stamp = time.strftime("%y%m%d%H%M")
        delivered = "001" if stat == "DELIVRD" else "000"
        text = (
            f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{stamp} done date:{stamp} "
            f"stat:{stat} err:{err} text:"
        )
        state = 2 if stat == "DELIVRD" else 5
        return Delivery(
            kind="dlr",
            source=sm.destination_addr,
            destination=sm.source_addr,
            short_message=text.encode(),
            esm_class=0x04,
            generation=self.generation,
            tlvs=[
                (TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\0"),
                (TLV_MESSAGE_STATE, bytes([state])),
            ],
            session=session,
        )

    def push(self, delivery: Delivery) -> None:
        """Send a deliver_sm to its session if still bound, else any bound one, else wait."""
        if delivery.generation != self.generation:
            return
        session = delivery.session
        if session is None or not session.bound:
            session = next((s for s in self.sessions if s.bound), None)
        if session is None:
            self.outbox.append(delivery)
            return
        delivery.session = session
        sequence = next(session.sequence)
        session.pending[sequence] = delivery
        session.send(
            smpp34.DeliverSm(
                delivery.source,
                delivery.destination,
                delivery.short_message,
                source_addr_ton=delivery.source_ton,
                source_addr_npi=1 if delivery.source_ton == 1 else 0,
                dest_addr_ton=delivery.destination_ton,
                dest_addr_npi=1 if delivery.destination_ton == 1 else 0,
                esm_class=delivery.esm_class,
                data_coding=delivery.data_coding,
                tlvs=[smpp34.Tlv(tag, value) for tag, value in delivery.tlvs],
                sequence_number=sequence,
            ).encode()
        )
        self.stats["receipts_sent" if delivery.kind == "dlr" else "mo_sent"] += 1

    def on_deliver_resp(self, session: Session, sequence: int, status: int) -> None:
        delivery = session.pending.pop(sequence, None)
        if delivery is None:
            return
        if status == ESME_ROK:
            self.stats["deliver_acked"] += 1
            return
        self.stats["deliver_errors"] += 1
        delivery.attempts += 1
        if delivery.attempts <= self.config.max_redeliveries:
            self.stats["redeliveries"] += 1
            asyncio.get_running_loop().call_later(self.config.redeliver_delay, self.push, delivery)

    def inject_mo(self, source: str, destination: str, text: str) -> int:
        encoded = gsm.encode(text, next(self._references))
        international = source.startswith("+")
        for part in encoded.parts:
            self.push(
                Delivery(
                    kind="mo",
                    source=source.lstrip("+"),
                    destination=destination.lstrip("+"),
                    short_message=part,
                    esm_class=encoded.esm_class,
                    data_coding=encoded.data_coding,
                    source_ton=1 if international else 0,
                    destination_ton=1 if destination.startswith("+") else 3,
                    generation=self.generation,
                )
            )
        return len(encoded.parts)

    # ── control API ──────────────────────────────────────────────────────────────────────

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Minimal HTTP/1.1: one request per connection, JSON in and out."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            code, result = self.route(method, path.split("?")[0], body)
        except (ValueError, KeyError, TypeError) as exc:
            code, result = 400, {"error": str(exc)}
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        data = json.dumps(result).encode()
        writer.write(
            f"HTTP/1.1 {code} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/stats":
            bound = sum(1 for s in self.sessions if s.bound)
            return 200, {**self.stats, "outstanding": self.outstanding, "bound_sessions": bound}
        if method == "GET" and path == "/messages":
            return 200, self.messages
        if method == "POST" and path == "/mo":
            parts = self.inject_mo(str(body["from"]), str(body["to"]), str(body["text"]))
            return 200, {"parts": parts}
        if method == "POST" and path == "/reset":
            self.reset()
            return 200, {}
        if method == "POST" and path == "/config":
            for key, value in body.items():
                if key not in Config.__dataclass_fields__:
                    raise KeyError(f"unknown setting {key}")
                setattr(self.config, key, type(getattr(self.config, key))(value))
            return 200, vars(self.config)
        return 404, {"error": f"no route {method} {path}"}


async def main(args: argparse.Namespace) -> None:
    config = Config(
        dlr_delay=args.dlr_delay,
        resp_delay=args.resp_delay,
        dlr_before_resp=args.dlr_before_resp,
        redeliver_delay=args.redeliver_delay,
        system_id=args.system_id,
        password=args.password,
    )
    smsc = Smsc(config)
    server = await asyncio.start_server(smsc.serve, args.host, args.port)
    servers = [server]
    if args.control_port:
        servers.append(await asyncio.start_server(smsc.control, args.host, args.control_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"smsc listening on {args.host}:{args.port}", flush=True)
    await stop.wait()
    for each in servers:
        each.close()


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2775)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--dlr-delay", type=float, default=0.05, help="seconds before a receipt")
    parser.add_argument("--resp-delay", type=float, default=0.0, help="hold submit_sm_resp")
    parser.add_argument("--dlr-before-resp", action="store_true")
    parser.add_argument("--redeliver-delay", type=float, default=0.2)
    parser.add_argument("--system-id", default="", help="require this system_id ('' = any)")
    parser.add_argument("--password", default="", help="require this password ('' = any)")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
