"""Per-request state, visible to services without threading it through every call."""

from __future__ import annotations

from contextvars import ContextVar

from switchboard.server.core.auth import Principal
from switchboard.server.core.errors import Unauthenticated

_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)
request_id: ContextVar[str] = ContextVar("request_id", default="-")
_response_headers: ContextVar[dict[str, str] | None] = ContextVar("response_headers", default=None)

HTTP_STATUS_HEADER = "x-switchboard-http-status"
# Names the repeated field of a list response that the REST edge turns into a bare JSON array
# (family B), moving next_page_token into the X-Next-Page-Token header.
BARE_LIST_HEADER = "x-switchboard-bare-list"


def set_principal(principal: Principal | None) -> None:
    _principal.set(principal)


def current_principal() -> Principal:
    """The verified caller of the current RPC (the gateway guarantees one on protected RPCs)."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("this operation needs a bearer token")
    return principal


def _set_response_header(name: str, value: str) -> None:
    headers = _response_headers.get()
    if headers is None:
        headers = {}
        _response_headers.set(headers)
    headers[name] = value


def set_http_status(status: int) -> None:
    """Ask the REST edge to answer with `status` instead of 200 (e.g. 202 Accepted)."""
    _set_response_header(HTTP_STATUS_HEADER, str(status))


def set_response_header(name: str, value: str) -> None:
    """Send `name: value` with the response (e.g. `location` of a redirect); REST clients get
    it as an HTTP header."""
    _set_response_header(name.lower(), value)


def set_bare_list(field: str) -> None:
    """Ask the REST edge to answer with the list response's `field` as a bare JSON array."""
    _set_response_header(BARE_LIST_HEADER, field)


def take_response_headers() -> dict[str, str]:
    """The headers set for the current RPC's response (sent as gRPC initial metadata)."""
    headers = _response_headers.get()
    _response_headers.set(None)
    return headers or {}
