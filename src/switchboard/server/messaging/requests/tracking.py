"""Link tracking for message requests (`track_links`): which URLs a body has, whether each can be
tracked, and each message's copy of the body with its own short links.

A URL is `http://` or `https://` up to the next whitespace, quote or angle bracket, without the
sentence punctuation that usually follows a link (`.`, `,`, `;`, `:`, `!`, `?`, `)`). It can be
tracked when it has a host, a valid port and at most 2048 characters. A `track_links` request
whose body has no URL, or any URL that cannot be tracked, is refused (400 / 1020): sending it
untracked would silently lose the conversions the client asked for.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from switchboard.server.core.errors import FieldViolation, InvalidTrackingUrl

MAX_URL = 2048
_URL = re.compile(r"""https?://[^\s<>"']*""", re.IGNORECASE)
_TRAILING = ".,;:!?)"
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")


def urls(body: str) -> list[str]:
    """The URLs of `body`, in order (repeats included)."""
    return [match.rstrip(_TRAILING) for match in _URL.findall(body)]


def problem(url: str) -> str | None:
    """Why `url` cannot be tracked, or None."""
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    host = parts.hostname
    if not host:
        return "has no host"
    if port == 0:
        return "has port 0"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return "has no valid host"
    if not _HOST.fullmatch(ascii_host):
        return "has no valid host"
    return None


def check(body: str) -> list[str]:
    """The body's URLs, all trackable; else InvalidTrackingUrl (1020) naming the first bad one."""
    found = urls(body)
    if not found:
        raise InvalidTrackingUrl(
            "track_links is set but the body has no http(s) URL to track",
            violations=[FieldViolation("body", "has no URL to track", "Format")],
        )
    for url in found:
        reason = problem(url)
        if reason is not None:
            raise InvalidTrackingUrl(
                f"invalid tracking URL {url!r}: it {reason}",
                violations=[FieldViolation("body", f"URL {url!r} {reason}", "Format")],
            )
    return found


def personalise(body: str, shorten: Callable[[str], str]) -> str:
    """`body` with each URL replaced by `shorten(url)` (called once per occurrence)."""

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        url = text.rstrip(_TRAILING)
        return shorten(url) + text[len(url) :]

    return _URL.sub(replace, body)


__all__ = ["MAX_URL", "check", "personalise", "problem", "urls"]
