"""Signatures verified by an independent implementation: the ``standardwebhooks`` package, and the
Chatwoot scheme recomputed here from its definition."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from services import __version__
from services.delivery.signing import chatwoot_signature, request_headers, standard_signature
from services.shared.webhooks import new_secret

BODY = b'{"event":"message_created","id":1,"content":"ol\xc3\xa1 \xe2\x9c\x93","account":{"id":1}}'
DELIVERY_ID = "0f8b1c3e-9a7e-5d4b-8c2a-1e2f3a4b5c6d"


def chatwoot_expected(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_standard_webhooks_library_verifies() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = request_headers(delivery_id=DELIVERY_ID, timestamp=now, body=BODY, secrets=[secret])
    payload = StandardWebhook(secret).verify(BODY, headers)
    assert payload["event"] == "message_created"
    assert headers["webhook-id"] == DELIVERY_ID
    assert headers["webhook-timestamp"] == str(now)


def test_every_active_secret_signs_during_rotation() -> None:
    new, old = new_secret(), new_secret()
    headers = request_headers(delivery_id=DELIVERY_ID, timestamp=int(time.time()), body=BODY, secrets=[new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    StandardWebhook(new).verify(BODY, headers)
    StandardWebhook(old).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(new_secret()).verify(BODY, headers)


def test_a_changed_body_does_not_verify() -> None:
    secret = new_secret()
    headers = request_headers(delivery_id=DELIVERY_ID, timestamp=int(time.time()), body=BODY, secrets=[secret])
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(BODY.replace(b"1", b"2"), headers)


def test_chatwoot_signature_with_current_secret() -> None:
    new, old = new_secret(), new_secret()
    headers = request_headers(delivery_id=DELIVERY_ID, timestamp=1_700_000_000, body=BODY, secrets=[new, old])
    assert headers["X-Chatwoot-Delivery"] == DELIVERY_ID
    assert headers["X-Chatwoot-Timestamp"] == "1700000000"
    assert headers["X-Chatwoot-Signature"] == chatwoot_expected(new, "1700000000", BODY)
    assert chatwoot_signature(new, 1_700_000_000, BODY) == chatwoot_expected(new, "1700000000", BODY)


def test_header_prefix_is_configurable() -> None:
    headers = request_headers(delivery_id=DELIVERY_ID, timestamp=5, body=BODY, secrets=[new_secret()],
                              prefix="X-Akece")
    assert {"X-Akece-Delivery", "X-Akece-Timestamp", "X-Akece-Signature"} <= set(headers)
    assert not any(name.startswith("X-Chatwoot") for name in headers)


def test_transport_headers() -> None:
    headers = request_headers(delivery_id=DELIVERY_ID, timestamp=5, body=BODY, secrets=[new_secret()])
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == f"Akece-Webhooks/{__version__}"


def test_known_vector() -> None:
    # Standard Webhooks' published test vector.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    body = b'{"test": 2432232314}'
    assert standard_signature(secret, msg_id, 1614265330, body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_no_secret_means_unsigned() -> None:
    headers = request_headers(delivery_id=DELIVERY_ID, timestamp=5, body=BODY, secrets=[])
    assert "webhook-signature" not in headers
    assert "X-Chatwoot-Signature" not in headers
