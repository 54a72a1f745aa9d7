"""Standard Webhooks 1.0 signatures and `whsec_` secrets (verifiable with the maintained
`standardwebhooks` libraries), and the sealing of secrets at rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from switchboard.server.core.sealing import derive_fernet

PREFIX = "whsec_"
_SALT = b"switchboard.event_handlers"


def new_secret() -> str:
    """`whsec_` + base64 of 24 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per valid secret, space-separated."""
    return " ".join(signature(s, webhook_id, timestamp, body) for s in secrets_)


class SecretBox:
    """Seals secrets for the database and opens them for signing (Fernet, key from HKDF)."""

    def __init__(self, master: str) -> None:
        self._fernet = derive_fernet(master, salt=_SALT, purpose=b"signing-secret v1")

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        return self._fernet.decrypt(sealed.encode()).decode()
