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

import _hashlib
import base64
import binascii
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from services import __version__

if TYPE_CHECKING:
    from services.shared.webhooks import Webhook

SECRET_PREFIX = "whsec_"
USER_AGENT = f"Akece-Webhooks/{__version__}"
SECRETS_CACHED = 16384


@lru_cache(maxsize=SECRETS_CACHED)
def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64); raw bytes if not base64."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "==", validate=False)
    except (binascii.Error, ValueError):
        key = b""
    return key or secret.encode()


@lru_cache(maxsize=SECRETS_CACHED)
def _keyed(secret: str) -> tuple[Any, Any]:
    """HMAC-SHA256 states with the key of each scheme already absorbed; each signature starts from a copy
    (half the cost of ``hmac.digest`` over a concatenated message)."""
    return (_hashlib.hmac_new(standard_key(secret), digestmod="sha256"),
            _hashlib.hmac_new(secret.encode(), digestmod="sha256"))


def _hmac(state: Any, prefix: bytes, body: bytes) -> Any:
    mac = state.copy()
    mac.update(prefix)
    mac.update(body)
    return mac


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = _hmac(_keyed(secret)[0], f"{msg_id}.{timestamp}.".encode(), body).digest()
    return "v1," + binascii.b2a_base64(digest, newline=False).decode()


def chatwoot_signature(secret: str, timestamp: int, body: bytes) -> str:
    hexdigest: str = _hmac(_keyed(secret)[1], f"{timestamp}.".encode(), body).hexdigest()
    return "sha256=" + hexdigest


@lru_cache(maxsize=64)
def _names(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}-Delivery", f"{prefix}-Timestamp", f"{prefix}-Signature"


def request_headers(*, delivery_id: str, timestamp: int, body: bytes, secrets: list[str],
                    prefix: str = "X-Chatwoot") -> dict[str, str]:
    """Every header of one attempt. ``secrets``: the active ones, current first (none: unsigned)."""
    stamp = str(timestamp)
    delivery, stamped, signature = _names(prefix)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": stamp,
        delivery: delivery_id,
        stamped: stamp,
    }
    if secrets:
        headers["webhook-signature"] = " ".join(
            standard_signature(s, delivery_id, timestamp, body) for s in secrets)
        headers[signature] = chatwoot_signature(secrets[0], timestamp, body)
    return headers


class ActiveSecrets:
    """``Webhook.active_secrets(now)`` remembered per webhook until its next secret expires (a webhook
    changed in the table is a new object, and looked up afresh)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Webhook, list[str], float]] = {}

    def active(self, webhook: Webhook, now: float) -> list[str]:
        known = self._known.get(webhook.id)
        if known is not None and known[0] is webhook and now < known[2]:
            return known[1]
        secrets = webhook.active_secrets(now)
        until = min((s.expires_at for s in webhook.secrets if s.expires_at is not None and s.expires_at > now),
                    default=float("inf"))
        if len(self._known) >= SECRETS_CACHED:
            self._known.clear()
        self._known[webhook.id] = (webhook, secrets, until)
        return secrets
