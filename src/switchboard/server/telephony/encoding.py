"""How many SMS segments a text needs: GSM 03.38 7-bit when it fits, else UCS-2.

The tables here are the single source for both billing (`segment_count`) and the SMPP encoder
(`providers/gsm.py`), so what we count is what we send.
"""

from __future__ import annotations

# The GSM 03.38 default alphabet in code order: a character's index is its septet.
# 0x1B is the escape to the extension table, not a character of its own.
GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_ESCAPE = 0x1B
# The extension table: character -> septet sent after the escape (so each costs two septets).
GSM7_EXTENSION_TABLE = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
# A raw ESC in a text would swallow the character after it on the handset: not GSM-7.
_GSM7_BASIC = frozenset(GSM7_BASIC_TABLE) - {"\x1b"}
_GSM7_EXTENSION = frozenset(GSM7_EXTENSION_TABLE)


def is_gsm7(text: str) -> bool:
    return all(c in _GSM7_BASIC or c in _GSM7_EXTENSION for c in text)


def segment_ranges(text: str) -> tuple[bool, list[tuple[int, int]]]:
    """Whether `text` goes as GSM-7, and the [start, end) character ranges of its segments:
    160/153 septets (GSM-7) or 70/67 UTF-16 units (UCS-2), never splitting an escape pair or
    a surrogate pair (which is why a boundary can move one unit earlier than a plain split)."""
    gsm7 = is_gsm7(text)
    if gsm7:
        sizes = [2 if c in _GSM7_EXTENSION else 1 for c in text]
        single, multi = 160, 153
    else:
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, multi = 70, 67
    if sum(sizes) <= single:
        return gsm7, [(0, len(text))]
    ranges = []
    start = used = 0
    for index, size in enumerate(sizes):
        if used + size > multi:
            ranges.append((start, index))
            start, used = index, 0
        used += size
    ranges.append((start, len(text)))
    return gsm7, ranges


def segment_count(text: str) -> int:
    """Segments as a handset bills them (see `segment_ranges`)."""
    return len(segment_ranges(text)[1])
