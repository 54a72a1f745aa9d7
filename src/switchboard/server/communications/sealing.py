"""Secrets of the communications domain: sealed renderings and QR tokens.

Both are Fernet tokens (AES-128-CBC + HMAC-SHA256: encrypted and authenticated, with their
creation time inside). Each purpose has its own key, derived with HKDF-SHA256 from one configured
secret (`SWITCHBOARD_COMMUNICATIONS_SECRET`, else the JWT secret), so a QR token can never be
replayed as a sealed rendering or the other way round.

- A **sealed rendering** is what a provider receives (the content rendered with the real values
  of sensitive arguments). It is stored only sealed, and dropped once handed over.
- A **QR token** carries the text of a communication's QR argument, so the public QR image
  endpoint needs no database read and reveals nothing without the key. It expires after
  `SWITCHBOARD_QR_TOKEN_TTL_SECONDS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from switchboard.server.core.errors import FieldViolation, InvalidArgument
from switchboard.server.core.sealing import derive_fernet

_SALT = b"switchboard.communications"
QR_TOKEN_MAX = 4096


def _derive(secret: str, purpose: bytes) -> Fernet:
    return derive_fernet(secret, salt=_SALT, purpose=purpose)


@dataclass(frozen=True)
class QrPayload:
    communication_id: str
    org_id: str
    text: str


class Sealer:
    def __init__(self, secret: str, qr_ttl_seconds: int) -> None:
        self._sealed = _derive(secret, b"sealed-rendering v1")
        self._qr = _derive(secret, b"qr-token v1")
        self._qr_ttl = qr_ttl_seconds

    def seal(self, value: dict[str, Any], now: datetime) -> str:
        data = json.dumps(value, separators=(",", ":")).encode()
        return self._sealed.encrypt_at_time(data, int(now.timestamp())).decode()

    def unseal(self, token: str) -> dict[str, Any]:
        """The sealed value (raises InvalidToken if the key changed or the data was altered)."""
        value: dict[str, Any] = json.loads(self._sealed.decrypt(token.encode()))
        return value

    def qr_token(self, payload: QrPayload, now: datetime) -> str:
        data = json.dumps(
            {"c": payload.communication_id, "o": payload.org_id, "t": payload.text},
            separators=(",", ":"),
        ).encode()
        return self._qr.encrypt_at_time(data, int(now.timestamp())).decode()

    def open_qr_token(self, token: str, now: datetime) -> QrPayload:
        """The payload of a valid, unexpired token; a 400 naming `qrToken` otherwise."""
        problem = "is missing"
        if token:
            problem = "is not a valid QR token"
            if len(token) <= QR_TOKEN_MAX:
                try:
                    data = self._qr.decrypt_at_time(
                        token.encode(), self._qr_ttl, int(now.timestamp())
                    )
                    raw = json.loads(data)
                    return QrPayload(str(raw["c"]), str(raw["o"]), str(raw["t"]))
                except InvalidToken:
                    problem = _why_invalid(self._qr, token, self._qr_ttl)
                except (ValueError, KeyError, TypeError):
                    pass
        raise InvalidArgument(
            f"qrToken {problem}",
            violations=[FieldViolation("qrToken", problem, "Invalid")],
        )


def _why_invalid(fernet: Fernet, token: str, ttl: int) -> str:
    """`expired` when the token is authentic but too old; else invalid (tampered or foreign)."""
    try:
        fernet.decrypt(token.encode())  # no ttl: authenticity only
    except InvalidToken:
        return "is not a valid QR token"
    return f"has expired (QR tokens are valid for {ttl} seconds)"
