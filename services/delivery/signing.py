"""Request headers of one attempt: Standard Webhooks and Chatwoot-compatible signatures.

Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id`` (the delivery id, stable across
attempts and replays), ``webhook-timestamp`` (this attempt, unix seconds) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`` for every active secret, space-separated
while a rotation overlaps. The key is the base64 part of ``whsec_<base64>``.

Chatwoot: ``<prefix>-Delivery`` (the same id), ``<prefix>-Timestamp`` and ``<prefix>-Signature:
sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with the current secret. Chatwoot's key is
the secret string as the receiver was given it, so the whole ``whsec_...`` text is the key there.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from functools import lru_cache

from services import __version__

SECRET_PREFIX = "whsec_"
USER_AGENT = f"Akece-Webhooks/{__version__}"


@lru_cache(maxsize=16384)
def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64); raw bytes if not base64."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "==", validate=False)
    except (binascii.Error, ValueError):
        key = b""
    return key or secret.encode()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.digest(standard_key(secret), f"{msg_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + base64.b64encode(digest).decode()


def chatwoot_signature(secret: str, timestamp: int, body: bytes) -> str:
    return "sha256=" + hmac.digest(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hex()


def request_headers(*, delivery_id: str, timestamp: int, body: bytes, secrets: list[str],
                    prefix: str = "X-Chatwoot") -> dict[str, str]:
    """Every header of one attempt. ``secrets``: the active ones, current first (none: unsigned)."""
    stamp = str(timestamp)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": stamp,
        f"{prefix}-Delivery": delivery_id,
        f"{prefix}-Timestamp": stamp,
    }
    if secrets:
        headers["webhook-signature"] = " ".join(
            standard_signature(s, delivery_id, timestamp, body) for s in secrets)
        headers[f"{prefix}-Signature"] = chatwoot_signature(secrets[0], timestamp, body)
    return headers
