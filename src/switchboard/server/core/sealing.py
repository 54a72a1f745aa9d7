"""Keys for sealing secrets at rest: one Fernet key per purpose, derived with HKDF-SHA256 from
one configured secret, so a token sealed for one purpose never opens as another's.

Fernet is AES-128-CBC + HMAC-SHA256 (encrypted and authenticated, with its creation time
inside). Communications seal renderings and QR tokens with it; event handlers their signing
secrets.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_fernet(secret: str, *, salt: bytes, purpose: bytes) -> Fernet:
    """The Fernet of `purpose` under `secret` (the same inputs always give the same key)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=purpose).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))
