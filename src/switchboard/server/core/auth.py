"""Bearer tokens: JWTs with `sub` (application), `org`, `roles`, `aud` (client id) and `exp`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt

from switchboard.server.core.clock import Clock
from switchboard.server.core.errors import InvalidArgument, PermissionDenied, Unauthenticated

_LEEWAY_SECONDS = 5
#: The `scope` claim of a stream token: only Stream* RPCs accept it.
STREAM_SCOPE = "streams"
#: The longest a stream token lives.
MAX_STREAM_TOKEN_SECONDS = 300
_MAX_CACHED_TOKENS = 10_000


class Role(StrEnum):
    """Roles as spelled in tokens and on the command line."""

    CLIENT = "Client"
    PARTNER = "Partner"
    ADMIN = "Admin"

    @classmethod
    def parse_list(cls, text: str) -> frozenset[Role]:
        roles = set()
        for raw in text.split(","):
            name = raw.strip()
            match = next((r for r in cls if r.value.lower() == name.lower()), None)
            if match is None:
                allowed = ", ".join(r.value for r in cls)
                raise InvalidArgument(f"unknown role {name!r}; allowed: {allowed}")
            roles.add(match)
        return frozenset(roles)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified claims of the bearer token."""

    subject: str
    org: str
    roles: frozenset[Role]
    client_id: str | None
    # A stream token (CreateStreamToken): accepted only by Stream* RPCs.
    stream_only: bool = False

    def require_org(self, org: str) -> None:
        """A path's `{org}` must be the token's own, unless the caller operates the deployment."""
        if org != self.org and Role.ADMIN not in self.roles:
            raise PermissionDenied(f"token of org {self.org!r} may not act for org {org!r}")


class TokenService:
    """Issues and verifies tokens. HS256 with a shared secret; RS256 when a public key is set."""

    def __init__(self, secret: str, clock: Clock, public_key_file: Path | None = None) -> None:
        self._secret = secret
        self._clock = clock
        self._public_key = public_key_file.read_text() if public_key_file else None
        # Verified tokens by their text: clients send the same token with every request, and
        # checking its signature again costs more than the rest of a no-op RPC. Expiry is still
        # checked on every use.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(
        self,
        *,
        org: str,
        roles: Iterable[Role],
        subject: str,
        ttl: timedelta = timedelta(hours=24),
        client_id: str | None = None,
        now: datetime | None = None,
        scope: str | None = None,
    ) -> str:
        issued = now or self._clock.now()
        claims: dict[str, object] = {
            "sub": subject,
            "org": org,
            "roles": sorted(r.value for r in roles),
            "iat": int(issued.timestamp()),
            "exp": int((issued + ttl).timestamp()),
        }
        if client_id:
            claims["aud"] = client_id
        if scope:
            claims["scope"] = scope
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if self._clock.now().timestamp() < expires + _LEEWAY_SECONDS:
                return principal
            del self._verified[token]
        principal, expires = self._verify_signed(token)
        if len(self._verified) >= _MAX_CACHED_TOKENS:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _verify_signed(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") == "RS256" and self._public_key:
                key, algorithms = self._public_key, ["RS256"]
            else:
                key, algorithms = self._secret, ["HS256"]
            # PyJWT would judge exp/iat/nbf by the wall clock; they are judged by ours below.
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                options={
                    "require": ["exp", "sub", "org", "roles"],
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"bearer token is invalid: {exc}") from exc
        expires = self._check_lifetime(claims)
        roles_claim = claims["roles"]
        if not isinstance(roles_claim, list) or not isinstance(claims["org"], str):
            raise Unauthenticated("bearer token has malformed org or roles claims")
        roles = frozenset(r for r in Role if r.value in roles_claim)
        audience = claims.get("aud")
        principal = Principal(
            subject=str(claims["sub"]),
            org=claims["org"],
            roles=roles,
            client_id=audience if isinstance(audience, str) else None,
            stream_only=claims.get("scope") == STREAM_SCOPE,
        )
        if "scope" in claims and not principal.stream_only:
            # A scope restricts; one this server does not know must grant nothing.
            raise Unauthenticated("bearer token has a scope this server does not know")
        return principal, expires

    def _check_lifetime(self, claims: dict[str, Any]) -> float:
        """The expiry; raises unless iat <= now < exp (and nbf <= now), give or take the leeway."""
        now = self._clock.now().timestamp()
        times: dict[str, float] = {}
        for name in ("exp", "iat", "nbf"):
            if name in claims:
                value = claims[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise Unauthenticated(f"bearer token is invalid: {name} must be a number")
                times[name] = float(value)
        if times["exp"] <= now - _LEEWAY_SECONDS:
            raise Unauthenticated("bearer token has expired")
        for name in ("iat", "nbf"):
            if name in times and times[name] > now + _LEEWAY_SECONDS:
                raise Unauthenticated(f"bearer token is invalid: not yet valid ({name})")
        return times["exp"]


def is_stream_method(method: str) -> bool:
    """A gRPC method path (`/pkg.Service/StreamThings`) of a Stream* RPC: the only ones that
    accept a stream token."""
    return method.rpartition("/")[2].startswith("Stream")


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` value, or a 401 saying what is wrong."""
    if not authorization:
        raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must use the Bearer scheme")
    return token.strip()
