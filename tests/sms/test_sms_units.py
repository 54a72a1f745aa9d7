"""Rules that need no server: numbers, segments, token parsing."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from switchboard.server.core.auth import bearer_token
from switchboard.server.core.errors import Unauthenticated
from switchboard.server.telephony import phone
from switchboard.server.telephony.encoding import is_gsm7, segment_count
from tests.support.clock import TEST_CLOCK

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+27 82 123 4567", None, "+27821234567"),
        ("0027821234567", None, "+27821234567"),
        ("082 123 4567", "ZA", "+27821234567"),
        ("(020) 7946 0958", "GB", "+442079460958"),
    ],
)
def test_numbers_normalise_to_e164(raw: str, region: str | None, expected: str) -> None:
    assert phone.classify(raw, region).e164 == expected


@pytest.mark.parametrize("raw", ["", "abc", "+1", "082 123 4567", "+27 82 123 456 789 012"])
def test_bad_numbers_are_refused(raw: str) -> None:
    with pytest.raises(phone.InvalidNumber):
        phone.classify(raw)


def test_only_sms_capable_numbers_pass() -> None:
    def reason(number: str) -> str | None:
        return phone.sms_incapable_reason(phone.classify(number))

    assert reason("+27821234567") is None  # ZA mobile
    assert reason("+12015550123") is None  # US: fixed line or mobile
    assert reason("+27111234567") == "+27111234567 is a fixed line and cannot receive SMS"
    assert "toll-free" in (reason("+18005550123") or "")
    assert phone.classify("+27111234567").type == "FIXED_LINE"


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("ж" * 70, 1),
        ("ж" * 71, 2),
        ("😀" * 35, 1),  # outside the BMP: two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_segment_count(text: str, segments: int) -> None:
    assert segment_count(text) == segments


def test_gsm7_detection() -> None:
    assert is_gsm7("Hello @ £5 {ok}")
    assert not is_gsm7("Привет")


@pytest.mark.parametrize("value", [None, "", "Basic x", "Bearer ", "bearer"])
def test_bearer_header_is_required(value: str | None) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(value)


def test_a_path_org_must_be_the_tokens_own_unless_admin() -> None:
    from switchboard.server.core.auth import Principal, Role
    from switchboard.server.core.errors import PermissionDenied

    client = Principal(subject="app", org="acme", roles=frozenset({Role.CLIENT}), client_id=None)
    client.require_org("acme")
    with pytest.raises(PermissionDenied):
        client.require_org("globex")
    admin = Principal(subject="ops", org="ops", roles=frozenset({Role.ADMIN}), client_id=None)
    admin.require_org("globex")


def test_rs256_tokens_verify_against_the_configured_public_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from switchboard.server.core.auth import Role, TokenService

    def keypair() -> tuple[bytes, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return private, public

    (private, public), (stranger, _) = keypair(), keypair()
    (tmp_path / "issuer.pem").write_bytes(public)
    tokens = TokenService("hs-secret-" * 5, TEST_CLOCK, tmp_path / "issuer.pem")
    claims = {"sub": "idp-app", "org": "acme", "roles": ["Partner"], "exp": 4_000_000_000}
    principal = tokens.verify(jwt.encode(claims, private, algorithm="RS256"))
    assert principal.org == "acme" and principal.roles == {Role.PARTNER}
    with pytest.raises(Unauthenticated):
        tokens.verify(jwt.encode(claims, stranger, algorithm="RS256"))
