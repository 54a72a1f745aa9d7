"""Credentials as the tests hold them: the servers' signing secret, the `make_token` fixture's
type, and gRPC call metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
#: The `make_token` fixture: make_token(org, roles=…, ttl=…, subject=…) -> a signed JWT.
TokenFactory = Callable[..., str]
Metadata = Sequence[tuple[str, str]]
