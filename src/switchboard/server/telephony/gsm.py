"""SMS payload encoding for SMPP: GSM 03.38 7-bit (unpacked septets, data_coding 0), UCS-2
(UTF-16-BE, data_coding 8), splitting into UDH-concatenated parts, and the reverse for MO.

Segment boundaries come from `sms.encoding.segment_ranges`, so the parts sent are exactly the
segments billed.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.server.telephony.encoding import (
    GSM7_BASIC_TABLE,
    GSM7_ESCAPE,
    GSM7_EXTENSION_TABLE,
    segment_ranges,
)

DC_GSM7 = 0
DC_LATIN1 = 3
DC_UCS2 = 8
ESM_UDHI = 0x40  # esm_class bit: short_message starts with a user data header
MAX_PARTS = 255  # an 8-bit concatenation header counts at most this many

_ENCODE = {c: bytes([i]) for i, c in enumerate(GSM7_BASIC_TABLE) if i != GSM7_ESCAPE}
_ENCODE.update({c: bytes([GSM7_ESCAPE, v]) for c, v in GSM7_EXTENSION_TABLE.items()})
_DECODE_EXTENSION = {v: c for c, v in GSM7_EXTENSION_TABLE.items()}


@dataclass(frozen=True)
class Encoded:
    """A text ready for submit_sm: one short_message per part (UDH included when split)."""

    data_coding: int
    parts: list[bytes]

    @property
    def esm_class(self) -> int:
        return ESM_UDHI if len(self.parts) > 1 else 0


@dataclass(frozen=True)
class Concatenation:
    reference: int
    total: int
    sequence: int


def encode_gsm7(text: str) -> bytes:
    """Unpacked septets, one byte each; extension characters as ESC + code. KeyError if `text`
    has a character outside GSM 03.38."""
    return b"".join([_ENCODE[c] for c in text])


def decode_gsm7(data: bytes) -> str:
    out = []
    escaped = False
    for byte in data:
        septet = byte & 0x7F
        if escaped:
            # An unknown extension code shows as the basic character (03.38's fallback).
            out.append(_DECODE_EXTENSION.get(septet, GSM7_BASIC_TABLE[septet]))
            escaped = False
        elif septet == GSM7_ESCAPE:
            escaped = True
        else:
            out.append(GSM7_BASIC_TABLE[septet])
    if escaped:
        out.append(" ")  # a trailing lone escape reads as a space
    return "".join(out)


def encode(text: str, reference: int) -> Encoded:
    """Encode and, if it needs more than one segment, split with an 8-bit-reference UDH
    (05 00 03 ref total seq). ValueError when it would take more than 255 parts."""
    gsm7, ranges = segment_ranges(text)
    chunks = [text[start:end] for start, end in ranges]
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"message too long: {len(chunks)} parts (at most {MAX_PARTS})")
    if gsm7:
        coding, bodies = DC_GSM7, [encode_gsm7(chunk) for chunk in chunks]
    else:
        coding, bodies = DC_UCS2, [chunk.encode("utf-16-be") for chunk in chunks]
    if len(bodies) == 1:
        return Encoded(coding, bodies)
    total = len(bodies)
    ref = reference & 0xFF
    return Encoded(
        coding, [bytes([5, 0, 3, ref, total, seq]) + body for seq, body in enumerate(bodies, 1)]
    )


def split_udh(short_message: bytes) -> tuple[Concatenation | None, bytes]:
    """The concatenation info (8- or 16-bit reference IE) of a UDHI payload, and its body."""
    if not short_message:
        return None, short_message
    length = short_message[0]
    header, body = short_message[1 : 1 + length], short_message[1 + length :]
    concat = None
    i = 0
    while i + 2 <= len(header):
        iei, iel = header[i], header[i + 1]
        value = header[i + 2 : i + 2 + iel]
        if iei == 0x00 and iel == 3 and len(value) == 3:
            concat = Concatenation(value[0], value[1], value[2])
        elif iei == 0x08 and iel == 4 and len(value) == 4:
            concat = Concatenation((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + iel
    return concat, body


def decode(data_coding: int, payload: bytes) -> str:
    """Decode a (UDH-stripped, possibly joined) payload: 0 GSM-7 septets, 8 UCS-2, 3 Latin-1;
    other codings are read as Latin-1 rather than dropped."""
    if data_coding == DC_GSM7:
        return decode_gsm7(payload)
    if data_coding == DC_UCS2:
        return payload.decode("utf-16-be", errors="replace")
    return payload.decode("latin-1")
