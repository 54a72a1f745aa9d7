"""Per-request state, visible to services without threading it through every call."""

from __future__ import annotations

from contextvars import ContextVar

from switchboard.server.core.auth import Principal
from switchboard.server.core.errors import Unauthenticated

_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)
request_id: ContextVar[str] = ContextVar("request_id", default="-")
_http_status: ContextVar[int | None] = ContextVar("http_status", default=None)


def set_principal(principal: Principal | None) -> None:
    _principal.set(principal)


def current_principal() -> Principal:
    """The verified caller of the current RPC (the gateway guarantees one on protected RPCs)."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("this operation needs a bearer token")
    return principal


def set_http_status(status: int) -> None:
    """Ask the REST edge to answer with `status` instead of 200 (e.g. 202 Accepted)."""
    _http_status.set(status)


def take_http_status() -> int | None:
    status = _http_status.get()
    _http_status.set(None)
    return status
