"""QR code images (segno): PNG bytes for a text."""

from __future__ import annotations

import functools
import io

import segno

SCALE = 6  # pixels per module: about 200 px across for a short URL, readable from a screen
BORDER = 4  # quiet-zone modules, as the standard asks


@functools.lru_cache(maxsize=256)
def png(text: str) -> bytes:
    """`text` as a QR code PNG (error correction M, or higher when it fits in the same size)."""
    code = segno.make(text, error="m", micro=False)
    out = io.BytesIO()
    code.save(out, kind="png", scale=SCALE, border=BORDER)
    return out.getvalue()
