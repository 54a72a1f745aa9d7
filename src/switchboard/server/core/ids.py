"""Time-ordered, URL-safe ids: 48-bit milliseconds + 80 random bits, in base32 (26 characters)."""

from __future__ import annotations

import base64
import os
import time

# RFC 4648 base32 re-spelt in Crockford's alphabet, whose ASCII order is its numeric order, so
# ids sort by creation time. Encoding in C matters: ids are minted on every hot path.
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def new_id(prefix: str) -> str:
    """`prefix` + 26 characters that sort by creation time, e.g. `sms_01JD…`."""
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)
    return prefix + base64.b32encode(raw)[:26].translate(_TO_CROCKFORD).decode()
