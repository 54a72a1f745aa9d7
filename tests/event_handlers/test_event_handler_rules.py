"""The pure rules of event handlers: which URLs are refused, which events a handler matches,
and signatures that the `standardwebhooks` library verifies."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from cryptography.fernet import InvalidToken
from standardwebhooks.webhooks import Webhook

from switchboard.server.event_handlers import patterns, signing
from switchboard.server.event_handlers.urls import RefusedUrl, parse, refused_reason
from switchboard.server.messaging.senders.channels import about_channel

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("169.254.169.254", True),
        ("169.254.10.10", True),
        ("0.0.0.0", True),
        ("224.0.0.251", True),
        ("100.64.0.1", True),  # carrier-grade NAT: not global
        ("::1", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("fd00:ec2::254", True),
        ("::ffff:10.0.0.1", True),
        ("::", True),
        ("ff02::1", True),
        ("93.184.215.14", False),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False),
    ],
)
def test_non_global_addresses_are_refused(address: str, refused: bool) -> None:
    assert (refused_reason(ipaddress.ip_address(address)) is not None) is refused


def test_url_shapes() -> None:
    assert parse("https://hooks.example.com:8443/a?b=c", allow_private=False).port == 8443
    for url, why in (
        ("http://hooks.example.com/", "https"),
        ("ftp://hooks.example.com/", "https"),
        ("https:///nohost", "no host"),
        ("https://u:p@hooks.example.com/", "credentials"),
        ("https://10.1.2.3/", "private"),
        ("https://[fe80::1]/", "link-local"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
    ):
        with pytest.raises(RefusedUrl, match=why):
            parse(url, allow_private=False)
    # the deployment's allowance: http and private hosts
    assert parse("http://127.0.0.1:9000/x", allow_private=True).hostname == "127.0.0.1"
    with pytest.raises(RefusedUrl):
        parse("ftp://127.0.0.1/", allow_private=True)


def test_type_patterns_and_scopes() -> None:
    assert patterns.type_matches(["message.*"], "message.delivered")
    assert patterns.type_matches(["*"], "call.ended")
    assert patterns.type_matches(["message.delivered"], "message.delivered")
    assert not patterns.type_matches(["message.*"], "message_request.created")
    assert not patterns.type_matches(["message.delivered"], "message.failed")
    for ok in ("*", "message.*", "message.delivered", "message_request.*", "sms.accepted"):
        assert patterns.valid_pattern(ok), ok
    for bad in ("", "message.", ".*", "Message.*", "message.**", "a b", "*.delivered"):
        assert not patterns.valid_pattern(bad), bad
    assert patterns.split(patterns.join(["a.*", "b.c"])) == ["a.*", "b.c"]
    data = {"application_id": "app-1", "customer_sender_id": "snd-1"}
    ch1 = about_channel("ch-1", frozenset({"snd-1"}))
    ch2 = about_channel("ch-2", frozenset({"snd-2"}))
    assert patterns.scope_matches(None, "", "message.sent", "m1", data)
    assert patterns.scope_matches(ch1, "app-1", "message.sent", "m1", data)
    assert not patterns.scope_matches(ch2, "", "message.sent", "m1", data)
    assert not patterns.scope_matches(None, "app-2", "message.sent", "m1", data)
    request = {"from": "channel-ch-2"}
    assert patterns.scope_matches(ch2, "", "message_request.created", "r1", request)
    assert not patterns.scope_matches(ch1, "", "message_request.created", "r1", request)
    assert patterns.scope_matches(ch1, "", "message_request.created", "r1", {"from": "snd-1"})
    assert patterns.scope_matches(ch1, "", "keyword.matched", "k1", {"sender_id": "snd-1"})
    assert patterns.scope_matches(ch1, "", "channel.updated", "ch-1", {})
    assert not patterns.scope_matches(ch1, "", "channel.updated", "ch-9", {})
    own = patterns.own_events_only("ch-9")
    assert patterns.scope_matches(own, "", "channel.updated", "ch-9", {})
    assert not patterns.scope_matches(own, "", "message.sent", "m1", data)


def test_signatures_verify_with_standardwebhooks() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(signing._key(secret)) == 24
    other = signing.new_secret()
    now = datetime.now(UTC)  # the library checks the timestamp against the machine's clock
    timestamp = int(now.timestamp())
    body = b'{"type":"message.delivered","id":"7"}'
    header = signing.signature_header([secret, other], "msg_evd_1", timestamp, body)
    headers = {"webhook-id": "msg_evd_1", "webhook-timestamp": str(timestamp)}
    for key in (secret, other):
        Webhook(key).verify(body, headers | {"webhook-signature": header})
    # the library's own signature is ours
    assert Webhook(secret).sign("msg_evd_1", now, body.decode()) == signing.signature(
        secret, "msg_evd_1", timestamp, body
    )


def test_secrets_are_sealed() -> None:
    box = signing.SecretBox("a-master-secret")
    secret = signing.new_secret()
    sealed = box.seal(secret)
    assert secret not in sealed and box.open(sealed) == secret
    with pytest.raises(InvalidToken):
        signing.SecretBox("another-master").open(sealed)
