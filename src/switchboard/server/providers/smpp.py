"""An SMPP 3.4 provider: one bind_transceiver session to an SMSC, windowed submit_sm, delivery
receipts matched back to our message ids, and MO messages.

The session runs on our own asyncio code; the PDU codec is smpp34's (Rust, ~300k encodes/s).
smpp34's own client is not used: it acknowledges deliver_sm before the application has seen it
(we must ack only once receipts/MO are durable), its window does not bound anything, its timers
are fixed, and a process that started its tokio runtime crashes at exit in ~1 of 6 runs.

Acknowledgement rule: the deliver_sm that completes a message (its last receipt or MO part) is
answered after the sink returned, with ESME_RX_T_APPN if the sink raised so the SMSC re-sends;
the parts before it are answered at once and kept in memory, so an SMSC that sends one
deliver_sm at a time never stalls (a crash loses such partial state: see the report).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import smpp34

from switchboard.server.providers.base import (
    InboundSink,
    InboundSms,
    OutboundSms,
    Receipt,
    ReceiptSink,
    SubmitResult,
)
from switchboard.server.telephony import gsm

log = logging.getLogger(__name__)

# Command ids (SMPP 3.4 §5.1.2.1).
GENERIC_NACK = 0x80000000
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
RESPONSE_BIT = 0x80000000

# Command status values we send or interpret.
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RBINDFAIL = 0x0D
ESME_RMSGQFUL = 0x14
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x66
ESME_RUNKNOWNERR = 0xFF
STATUS_NAMES = {
    0x01: "ESME_RINVMSGLEN",
    0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS",
    0x08: "ESME_RSYSERR",
    0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR",
    0x0D: "ESME_RBINDFAIL",
    0x0E: "ESME_RINVPASWD",
    0x14: "ESME_RMSGQFUL",
    0x45: "ESME_RSUBMITFAIL",
    0x48: "ESME_RINVSRCTON",
    0x49: "ESME_RINVSRCNPI",
    0x50: "ESME_RINVDSTTON",
    0x51: "ESME_RINVDSTNPI",
    0x58: "ESME_RTHROTTLED",
    0x64: "ESME_RX_T_APPN",
    0x66: "ESME_RX_P_APPN",
    0x67: "ESME_RX_R_APPN",
    0xFF: "ESME_RUNKNOWNERR",
}
# Worth retrying: the SMSC is busy or broken, not the message. Everything else is permanent.
TRANSIENT_STATUSES = frozenset(
    {
        ESME_RINVBNDSTS,
        ESME_RSYSERR,
        ESME_RMSGQFUL,
        ESME_RSUBMITFAIL,
        ESME_RTHROTTLED,
        ESME_RX_T_APPN,
        ESME_RUNKNOWNERR,
    }
)

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_MESSAGE_PAYLOAD = 0x0424
ESM_TYPE_MASK = 0x3C  # esm_class bits 2-5: message type
ESM_RECEIPT = 0x04  # SMSC delivery receipt
MESSAGE_STATES = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
NON_FINAL_STATES = frozenset({"ENROUTE", "ACCEPTD", "BUFFRED", "SCHEDULED"})
_RECEIPT_FIELDS = re.compile(r"(id|stat|err):(\S*)", re.IGNORECASE)
_HEADER = struct.Struct(">IIII")
MAX_PDU = 64 * 1024


def pdu(command_id: int, status: int, sequence: int, body: bytes = b"") -> bytes:
    return _HEADER.pack(16 + len(body), command_id, status, sequence) + body


def status_name(status: int) -> str:
    return f"{STATUS_NAMES.get(status, 'status')} (0x{status:02X})"


def cstring(body: bytes, start: int = 0) -> tuple[str, int]:
    """A C-octet string at `start` and the offset after its NUL."""
    end = body.find(b"\0", start)
    if end < 0:
        end = len(body)
    return body[start:end].decode("latin-1"), end + 1


class Framer:
    """Splits a TCP byte stream into whole PDUs."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        out = []
        offset = 0
        while len(buffer) - offset >= 16:
            length = int.from_bytes(buffer[offset : offset + 4], "big")
            if length < 16 or length > MAX_PDU:
                raise ConnectionError(f"bad PDU length {length}")
            if len(buffer) - offset < length:
                break
            out.append(bytes(buffer[offset : offset + length]))
            offset += length
        if offset:
            del buffer[:offset]
        return out


def source_address(sender: str) -> tuple[str, int, int]:
    """(address, TON, NPI): E.164 → 1/1, short code (≤ 8 digits) → 3/0, alphanumeric → 5/0."""
    if sender.startswith("+") and sender[1:].isdigit():
        return sender[1:], 1, 1
    if sender.isdigit():
        return (sender, 3, 0) if len(sender) <= 8 else (sender, 1, 1)
    if not sender:
        return "", 0, 0
    if len(sender) > 11 or not sender.isascii():
        raise ValueError(f"alphanumeric sender {sender!r} must be at most 11 ASCII characters")
    return sender, 5, 0


def parse_receipt(message: smpp34.DeliverSm) -> tuple[str, str, str] | None:
    """(SMSC message id, stat, err) from the receipt TLVs, else the standard receipt text."""
    receipt_id = state = None
    text = message.short_message
    for tlv in message.tlvs:
        if tlv.tag == TLV_RECEIPTED_MESSAGE_ID:
            receipt_id = tlv.value.rstrip(b"\0").decode("latin-1")
        elif tlv.tag == TLV_MESSAGE_STATE and tlv.value:
            state = MESSAGE_STATES.get(tlv.value[0], "UNKNOWN")
        elif tlv.tag == TLV_MESSAGE_PAYLOAD and not text:
            text = tlv.value
    fields: dict[str, str] = {}
    for key, value in _RECEIPT_FIELDS.findall(text.decode("latin-1")):
        fields.setdefault(key.lower(), value)
    receipt_id = receipt_id or fields.get("id")
    state = state or (fields.get("stat") or "").upper() or None
    if not receipt_id or not state:
        return None
    return receipt_id, state, fields.get("err", "000")


def _address(address: str, ton: int) -> str:
    return "+" + address if ton == 1 and address.isdigit() else address


@dataclass
class _Tracker:
    """Receipt state of one accepted message; message_id None for parts of a message whose
    submit failed part-way (their receipts are acknowledged and dropped)."""

    message_id: str | None
    parts: tuple[str, ...]
    states: dict[str, tuple[str, str]] = field(default_factory=dict)
    held: list[tuple[int, int]] = field(default_factory=list)  # (connection, sequence) to ack
    queued: bool = False


@dataclass
class _Early:
    """A receipt whose submit_sm_resp has not been seen yet; its ack waits for the match."""

    connection: int
    sequence: int
    state: str
    error: str
    expires: float


@dataclass
class _Assembly:
    """MO parts received so far, by sequence number."""

    data_coding: int
    total: int
    expires: float
    parts: dict[int, bytes] = field(default_factory=dict)
    held: list[tuple[int, int]] = field(default_factory=list)
    queued: bool = False


@dataclass
class _Inbound:
    message: InboundSms
    held: list[tuple[int, int]]
    assembly_key: tuple[str, str, int, int] | None = None


class SmppProvider:
    """An `SmsProvider` over one SMPP 3.4 transceiver bind."""

    def __init__(
        self,
        *,
        name: str = "smpp",
        host: str,
        port: int,
        system_id: str,
        password: str,
        system_type: str = "",
        default_source: str = "",
        service_type: str = "",
        window: int = 32,
        submit_timeout: float = 10.0,
        bind_timeout: float = 10.0,
        enquire_link_interval: float = 30.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        early_receipt_ttl: float = 30.0,
        reassembly_timeout: float = 300.0,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.name = name
        self._host, self._port = host, port
        self._system_id, self._password, self._system_type = system_id, password, system_type
        self._default_source = default_source
        self._service_type = service_type
        self._window_size = window
        self._window = asyncio.Semaphore(window)
        self._submit_timeout = submit_timeout
        self._bind_timeout = bind_timeout
        self._enquire_interval = enquire_link_interval
        self._reconnect_min, self._reconnect_max = reconnect_min, reconnect_max
        self._early_ttl = early_receipt_ttl
        self._reassembly_timeout = reassembly_timeout

        self._receipt_sink: ReceiptSink | None = None
        self._inbound_sink: InboundSink | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connection = 0  # bumped per TCP connection: acks go only to the one they came on
        self._bound = False
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._sequence = itertools.count(1)
        self._reference = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._tasks: list[asyncio.Task[None]] = []

        self._by_part: dict[str, _Tracker] = {}
        self._early: dict[str, list[_Early]] = {}
        self._done_parts: OrderedDict[str, None] = OrderedDict()  # recent, to ack repeats
        self._receipt_queue: list[_Tracker] = []
        self._receipt_wakeup = asyncio.Event()
        self._assemblies: dict[tuple[str, str, int, int], _Assembly] = {}
        self._inbound_queue: list[_Inbound] = []
        self._inbound_wakeup = asyncio.Event()

    # ── SmsProvider ──────────────────────────────────────────────────────────────────────

    async def start(self, receipts: ReceiptSink, inbound: InboundSink | None = None) -> None:
        self._receipt_sink, self._inbound_sink = receipts, inbound
        self._stopping = False
        self._stop_event.clear()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"smpp-{self.name}-session"),
            asyncio.create_task(self._flush_receipts(), name=f"smpp-{self.name}-receipts"),
            asyncio.create_task(self._flush_inbound(), name=f"smpp-{self.name}-inbound"),
            asyncio.create_task(self._sweep(), name=f"smpp-{self.name}-sweep"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        if self._bound and self._writer is not None:
            with contextlib.suppress(Exception):
                await self._request(UNBIND, b"", min(self._bind_timeout, 2.0))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def healthy(self) -> bool:
        return self._bound

    def resume(self, pending: Sequence[OutboundSms]) -> None:
        for message in pending:
            parts = message.provider_message_id.split()
            if parts:
                self._track(_Tracker(message.message_id, tuple(parts)))

    async def submit_many(self, messages: Sequence[OutboundSms]) -> list[SubmitResult]:
        return list(await asyncio.gather(*(self._submit(message) for message in messages)))

    # ── submitting ───────────────────────────────────────────────────────────────────────

    async def _submit(self, message: OutboundSms) -> SubmitResult:
        try:
            if not self._bound:
                return SubmitResult(error="SMPP session not bound", permanent=False)
            try:
                source, ton, npi = source_address(message.sender or self._default_source)
                encoded = gsm.encode(message.content, next(self._reference))
            except ValueError as exc:
                return SubmitResult(error=str(exc), permanent=True)
            destination = message.to.e164.lstrip("+")
            parts = [
                smpp34.SubmitSm(
                    source,
                    destination,
                    short_message,
                    service_type=self._service_type,
                    source_addr_ton=ton,
                    source_addr_npi=npi,
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    esm_class=encoded.esm_class,
                    registered_delivery=1,
                    data_coding=encoded.data_coding,
                )
                for short_message in encoded.parts
            ]
            if len(parts) == 1:
                answers = [await self._submit_part(parts[0])]
            else:  # all parts go out back to back (the window is FIFO), answers in any order
                answers = list(await asyncio.gather(*(self._submit_part(p) for p in parts)))
            ids = [ident for ident, _, _ in answers if ident is not None]
            for ident, error, permanent in answers:
                if ident is None:
                    if ids:  # the accepted parts' receipts are expected but mean nothing now
                        self._track(_Tracker(None, tuple(ids)))
                    return SubmitResult(error=error, permanent=permanent)
            self._track(_Tracker(message.message_id, tuple(ids)))
            return SubmitResult(provider_message_id=" ".join(ids))
        except Exception as exc:  # one bad message must not fail its batch
            log.exception("SMPP submit of %s failed", message.message_id)
            return SubmitResult(error=f"SMPP submit failed: {exc!r}", permanent=False)

    async def _submit_part(self, part: smpp34.SubmitSm) -> tuple[str | None, str, bool]:
        """(SMSC message id, or None with the error and whether it is permanent)."""
        async with self._window:
            if not self._bound:
                return None, "SMPP session not bound", False
            sequence = self._next_sequence()
            body = _submit_body(part)
            try:
                status, resp = await self._request(
                    SUBMIT_SM, body, self._submit_timeout, sequence=sequence
                )
            except TimeoutError:
                return None, f"no submit_sm_resp within {self._submit_timeout:g}s", False
            except ConnectionError as exc:
                return None, f"SMPP connection lost: {exc}", False
        if status != ESME_ROK:
            return None, status_name(status), status not in TRANSIENT_STATUSES
        message_id, _ = cstring(resp)
        if not message_id:
            return None, "submit_sm_resp without a message id", False
        return message_id, "", False

    # ── the session ──────────────────────────────────────────────────────────────────────

    def _next_sequence(self) -> int:
        sequence = next(self._sequence)
        if sequence > 0x7FFFFFFF:
            self._sequence = itertools.count(2)
            sequence = 1
        return sequence

    def _send(self, data: bytes) -> None:
        """Queue a PDU; everything queued in one loop turn goes out in one write."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        self._flush_scheduled = False
        data, self._out = b"".join(self._out), []
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(data)

    async def _request(
        self, command: int, body: bytes, wait: float, sequence: int | None = None
    ) -> tuple[int, bytes]:
        if self._writer is None:
            raise ConnectionError("not connected")
        sequence = sequence or self._next_sequence()
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[sequence] = future
        self._send(pdu(command, 0, sequence, body))
        try:
            return await asyncio.wait_for(future, wait)
        finally:
            self._pending.pop(sequence, None)

    def _ack(self, held: tuple[int, int], command: int, status: int) -> None:
        connection, sequence = held
        if connection == self._connection and self._writer is not None:
            self._send(pdu(command, status, sequence, b"\0" if command == DELIVER_SM_RESP else b""))

    async def _run(self) -> None:
        """Connect, bind, serve; after a disconnect or a failed bind, back off and again."""
        backoff = self._reconnect_min
        while not self._stopping:
            reader_task: asyncio.Task[None] | None = None
            keepalive: asyncio.Task[None] | None = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port), self._bind_timeout
                )
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._connection += 1
                self._writer = writer
                reader_task = asyncio.create_task(self._read(reader))
                status, _ = await self._request(
                    BIND_TRANSCEIVER, self._bind_body(), self._bind_timeout
                )
                if status != ESME_ROK:
                    raise ConnectionError(f"bind refused: {status_name(status)}")
                self._bound = True
                backoff = self._reconnect_min
                log.info("SMPP %s bound to %s:%s", self.name, self._host, self._port)
                keepalive = asyncio.create_task(self._keepalive())
                await asyncio.wait({reader_task, keepalive}, return_when=asyncio.FIRST_COMPLETED)
                for task in (reader_task, keepalive):
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.warning("SMPP %s session ended: %r", self.name, task.exception())
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning(
                    "SMPP %s connect/bind to %s:%s failed: %r",
                    self.name,
                    self._host,
                    self._port,
                    exc,
                )
            finally:
                self._bound = False
                for ending in (reader_task, keepalive):
                    if ending is not None:
                        ending.cancel()
                if self._writer is not None:
                    self._flush_out()
                    self._writer.close()
                    self._writer = None
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(ConnectionError("session closed"))
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), backoff)
            backoff = min(backoff * 2, self._reconnect_max)

    def _bind_body(self) -> bytes:
        fields = (self._system_id, self._password, self._system_type)
        body = b"".join(value.encode("latin-1") + b"\0" for value in fields)
        return body + bytes([0x34, 0, 0]) + b"\0"  # interface 3.4, addr TON/NPI, address_range

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._enquire_interval)
            # A missing enquire_link_resp raises TimeoutError and so ends the session.
            await self._request(ENQUIRE_LINK, b"", self._bind_timeout)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = Framer()
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("SMSC closed the connection")
            for raw in framer.feed(data):
                self._dispatch(raw)

    def _dispatch(self, raw: bytes) -> None:
        _, command, status, sequence = _HEADER.unpack_from(raw)
        if command & RESPONSE_BIT:
            future = self._pending.get(sequence)
            if future is not None and not future.done():
                future.set_result((status, raw[16:]))
        elif command == DELIVER_SM:
            self._on_deliver((self._connection, sequence), raw)
        elif command == ENQUIRE_LINK:
            self._send(pdu(ENQUIRE_LINK_RESP, ESME_ROK, sequence))
        elif command == UNBIND:
            self._send(pdu(UNBIND_RESP, ESME_ROK, sequence))
            self._bound = False  # the SMSC closes next; no more submits meanwhile
        else:
            self._send(pdu(GENERIC_NACK, ESME_RINVCMDID, sequence))

    # ── receipts and MO ──────────────────────────────────────────────────────────────────

    def _on_deliver(self, held: tuple[int, int], raw: bytes) -> None:
        try:
            message = smpp34.decode(raw)
            if not isinstance(message, smpp34.DeliverSm):
                raise ValueError("not a deliver_sm")
            kind = message.esm_class & ESM_TYPE_MASK
            if kind == ESM_RECEIPT:
                self._on_receipt(held, message)
            elif kind == 0:
                self._on_mo(held, message)
            else:  # SME/intermediate notifications: nothing for us
                self._ack(held, DELIVER_SM_RESP, ESME_ROK)
        except Exception:
            log.exception("SMPP %s: unreadable deliver_sm", self.name)
            self._ack(held, DELIVER_SM_RESP, ESME_RX_P_APPN)

    def _on_receipt(self, held: tuple[int, int], message: smpp34.DeliverSm) -> None:
        parsed = parse_receipt(message)
        if parsed is None:
            log.warning(
                "SMPP %s: receipt without id or state: %r", self.name, message.short_message
            )
            self._ack(held, DELIVER_SM_RESP, ESME_ROK)
            return
        part, state, error = parsed
        if state in NON_FINAL_STATES:
            self._ack(held, DELIVER_SM_RESP, ESME_ROK)
            return
        tracker = self._by_part.get(part)
        if tracker is not None:
            self._apply(tracker, part, held, state, error)
        elif part in self._done_parts:
            self._ack(held, DELIVER_SM_RESP, ESME_ROK)  # a repeat of one already reported
        else:  # early: its submit_sm_resp is still on its way (or it is not ours)
            early = _Early(held[0], held[1], state, error, time.monotonic() + self._early_ttl)
            self._early.setdefault(part, []).append(early)

    def _track(self, tracker: _Tracker) -> None:
        for part in tracker.parts:
            self._by_part[part] = tracker
        for part in tracker.parts:
            for early in self._early.pop(part, ()):
                self._apply(
                    tracker, part, (early.connection, early.sequence), early.state, early.error
                )

    def _apply(
        self, tracker: _Tracker, part: str, held: tuple[int, int], state: str, error: str
    ) -> None:
        tracker.states[part] = (state, error)
        if tracker.message_id is None or len(tracker.states) < len(tracker.parts):
            self._ack(held, DELIVER_SM_RESP, ESME_ROK)
            if tracker.message_id is None and len(tracker.states) == len(tracker.parts):
                self._forget(tracker)
            return
        tracker.held.append(held)
        if not tracker.queued:
            tracker.queued = True
            self._receipt_queue.append(tracker)
            self._receipt_wakeup.set()

    def _forget(self, tracker: _Tracker) -> None:
        for part in tracker.parts:
            self._by_part.pop(part, None)
            self._done_parts[part] = None
        while len(self._done_parts) > 100_000:
            self._done_parts.popitem(last=False)

    @staticmethod
    def _receipt_of(tracker: _Tracker) -> Receipt:
        assert tracker.message_id is not None
        for part in tracker.parts:
            state, error = tracker.states[part]
            if state != "DELIVRD":
                return Receipt(tracker.message_id, delivered=False, error=f"{state} err:{error}")
        return Receipt(tracker.message_id, delivered=True)

    async def _flush_receipts(self) -> None:
        while True:
            await self._receipt_wakeup.wait()
            self._receipt_wakeup.clear()
            batch, self._receipt_queue = self._receipt_queue, []
            if not batch or self._receipt_sink is None:
                continue
            try:
                await self._receipt_sink([self._receipt_of(tracker) for tracker in batch])
            except Exception:
                log.exception("SMPP %s: receipt sink failed; the SMSC will re-send", self.name)
                for tracker in batch:  # keep the part states: a re-sent receipt completes again
                    held, tracker.held, tracker.queued = tracker.held, [], False
                    for item in held:
                        self._ack(item, DELIVER_SM_RESP, ESME_RX_T_APPN)
                continue
            for tracker in batch:
                self._forget(tracker)
                for item in tracker.held:
                    self._ack(item, DELIVER_SM_RESP, ESME_ROK)

    def _on_mo(self, held: tuple[int, int], message: smpp34.DeliverSm) -> None:
        if self._inbound_sink is None:
            self._ack(held, DELIVER_SM_RESP, ESME_RX_P_APPN)
            return
        payload = message.short_message
        if not payload:
            for tlv in message.tlvs:
                if tlv.tag == TLV_MESSAGE_PAYLOAD:
                    payload = tlv.value
        concat = None
        if message.esm_class & gsm.ESM_UDHI:
            concat, payload = gsm.split_udh(payload)
        source = _address(message.source_addr, message.source_addr_ton)
        destination = _address(message.destination_addr, message.dest_addr_ton)
        if concat is None or concat.total <= 1:
            text = gsm.decode(message.data_coding, payload)
            self._queue_inbound(_Inbound(InboundSms(source, destination, text, self.name), [held]))
            return
        key = (source, destination, concat.reference, concat.total)
        assembly = self._assemblies.get(key)
        if assembly is None:
            expires = time.monotonic() + self._reassembly_timeout
            assembly = _Assembly(message.data_coding, concat.total, expires)
            self._assemblies[key] = assembly
        assembly.parts[concat.sequence] = payload
        if len(assembly.parts) < assembly.total or assembly.queued:
            if assembly.queued:
                assembly.held.append(held)
            else:
                self._ack(held, DELIVER_SM_RESP, ESME_ROK)
            return
        joined = b"".join(assembly.parts[i] for i in sorted(assembly.parts))
        text = gsm.decode(assembly.data_coding, joined)
        assembly.queued = True
        assembly.held = [held]
        inbound = InboundSms(source, destination, text, self.name)
        self._queue_inbound(_Inbound(inbound, assembly.held, key))

    def _queue_inbound(self, item: _Inbound) -> None:
        self._inbound_queue.append(item)
        self._inbound_wakeup.set()

    async def _flush_inbound(self) -> None:
        while True:
            await self._inbound_wakeup.wait()
            self._inbound_wakeup.clear()
            batch, self._inbound_queue = self._inbound_queue, []
            if not batch or self._inbound_sink is None:
                continue
            try:
                await self._inbound_sink([item.message for item in batch])
            except Exception:
                log.exception("SMPP %s: inbound sink failed; the SMSC will re-send", self.name)
                status = ESME_RX_T_APPN
                for item in batch:
                    assembly = (
                        self._assemblies.get(item.assembly_key) if item.assembly_key else None
                    )
                    if assembly is not None:  # parts stay: the re-sent last part completes it
                        assembly.queued = False
            else:
                status = ESME_ROK
                for item in batch:
                    if item.assembly_key is not None:
                        self._assemblies.pop(item.assembly_key, None)
            for item in batch:
                for held in item.held:
                    self._ack(held, DELIVER_SM_RESP, status)
                item.held.clear()

    async def _sweep(self) -> None:
        """Expire receipts nobody claimed and MO that never completed."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for part, earlies in list(self._early.items()):
                alive = [early for early in earlies if early.expires > now]
                for early in earlies:
                    if early.expires <= now:
                        log.warning("SMPP %s: receipt for unknown message id %s", self.name, part)
                        self._ack((early.connection, early.sequence), DELIVER_SM_RESP, ESME_ROK)
                if alive:
                    self._early[part] = alive
                else:
                    del self._early[part]
            for key, assembly in list(self._assemblies.items()):
                if assembly.expires <= now and not assembly.queued:
                    log.warning("SMPP %s: MO from %s incomplete, dropped", self.name, key[0])
                    del self._assemblies[key]


def _submit_body(part: smpp34.SubmitSm) -> bytes:
    """The body of an encoded submit_sm (its header is written with our sequence number)."""
    return part.encode()[16:]
