"""The stream contract's pure parts: type patterns, which methods a stream token opens, and the
token's scope and lifetime as the token service judges them (clock pinned)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchboard.server.core.auth import STREAM_SCOPE, Role, TokenService, is_stream_method
from switchboard.server.core.clock import Clock
from switchboard.server.core.errors import Unauthenticated
from switchboard.server.core.events import type_matcher
from switchboard.server.core.streams import type_patterns
from switchboard.server.core.validation import Checks

pytestmark = pytest.mark.unit

PREFIXES = ("message.", "message_request.", "keyword.")


class PinnedClock(Clock):
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def test_type_patterns_exact_prefix_and_star() -> None:
    checks = Checks()
    exact, prefixes = type_patterns(["message.delivered", "keyword.*"], PREFIXES, checks)
    assert not checks.violations
    assert exact == ["message.delivered"] and prefixes == ("keyword.",)
    matches = type_matcher(exact, prefixes)
    assert matches("message.delivered") and matches("keyword.matched")
    assert not matches("message.sent") and not matches("message_request.accepted")
    assert type_patterns(["*"], PREFIXES, checks)[1] == PREFIXES
    assert type_patterns([], PREFIXES, checks)[1] == PREFIXES


@pytest.mark.parametrize("bad", ["call.*", "sms.delivered", "message*", "mess*.x", ""])
def test_type_patterns_refuse_other_domains_and_odd_globs(bad: str) -> None:
    checks = Checks()
    type_patterns([bad], PREFIXES, checks)
    assert [v.field for v in checks.violations] == ["types[0]"]


def test_stream_methods() -> None:
    assert is_stream_method("/switchboard.messaging.v1.MessagingService/StreamMessagingEvents")
    assert not is_stream_method("/switchboard.contacts.v1.ContactsService/ListContacts")
    assert not is_stream_method("/switchboard.common.v1.StreamTokensService/CreateStreamToken")


def test_stream_token_scope_and_expiry_by_the_services_clock() -> None:
    at = datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)  # any instant: the clock is pinned
    clock = PinnedClock(at)
    tokens = TokenService("s" * 40, clock)
    token = tokens.issue(
        org="o", roles=[Role.CLIENT], subject="a", ttl=timedelta(minutes=5), scope=STREAM_SCOPE
    )
    principal = tokens.verify(token)
    assert principal.stream_only and principal.org == "o"
    assert not tokens.verify(tokens.issue(org="o", roles=[Role.CLIENT], subject="a")).stream_only
    clock.at = at + timedelta(minutes=6)
    with pytest.raises(Unauthenticated):
        tokens.verify(token)
    clock.at = at
    odd = tokens.issue(org="o", roles=[Role.CLIENT], subject="a", scope="everything")
    with pytest.raises(Unauthenticated):
        tokens.verify(odd)
