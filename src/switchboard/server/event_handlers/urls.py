"""Which receiver URLs an event handler may have: https, and a host that is not (and does not
resolve to) a loopback, private, link-local, metadata, unspecified, multicast or otherwise
non-global address — unless the deployment allows private URLs (tests, local sandboxes).

The check runs when a handler is created or updated and again before attempts: the dispatcher
resolves the name, checks every address and connects to a checked one, so a DNS answer that
changes after the check cannot point a delivery inside the network. It reuses a URL's checked
address for 30 s (dispatcher.RESOLVE_TTL) rather than resolving per attempt; a refusal is not
cached.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints (link-local already covers 169.254.169.254; the AWS IPv6 one is ULA).
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class RefusedUrl(ValueError):
    """A receiver URL the deployment may not call; the message says why (never secret)."""


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: the URL as given, and the checked address to dial."""

    url: str
    parts: SplitResult
    host: str
    port: int
    address: str


def parse(url: str, *, allow_private: bool) -> SplitResult:
    """The URL's parts, or RefusedUrl: a scheme other than https (http too when private URLs
    are allowed), no host, credentials in the URL, or a literal address that is refused."""
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise RefusedUrl("is not a valid URL") from exc
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        raise RefusedUrl("must be an https URL" if not allow_private else "must be http(s)")
    if not parts.hostname:
        raise RefusedUrl("has no host")
    if parts.username or parts.password:
        raise RefusedUrl("must not carry credentials")
    if parts.fragment:
        raise RefusedUrl("must not have a fragment")
    literal = _literal(parts.hostname)
    if literal is not None and not allow_private:
        _require_public(literal)
    return parts


def refused_reason(address: IpAddress) -> str | None:
    """Why `address` may not be called, or None for a global unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refused_reason(address.ipv4_mapped)
    if address in _METADATA:
        return "is a cloud metadata address"
    if address.is_loopback:
        return "is a loopback address"
    if address.is_unspecified:
        return "is an unspecified address"
    if address.is_link_local:
        return "is a link-local address"
    if address.is_multicast:
        return "is a multicast address"
    if address.is_private or not address.is_global:
        return "is a private or reserved address"
    return None


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _require_public(address: IpAddress) -> None:
    reason = refused_reason(address)
    if reason is not None:
        raise RefusedUrl(f"host {reason} ({address})")


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Parse, resolve the host once and check every address it resolves to; the target dials the
    first one. RefusedUrl when any address is refused or the name does not resolve."""
    parts = parse(url, allow_private=allow_private)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        return Target(url, parts, host, port, str(literal))
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedUrl(f"host {host!r} does not resolve") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise RefusedUrl(f"host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refused_reason(address)
            if reason is not None:
                raise RefusedUrl(f"host {host!r} resolves to an address that {reason}")
    return Target(url, parts, host, port, str(addresses[0]))
