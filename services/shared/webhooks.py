"""The webhook record of the subscriptions topic: its model, its id and secret factories, its codec.

What a subscriptions record holds (``Webhook``, with its ``SigningSecret``s) and how it is
written and read (``encode_webhook``/``decode_webhook``). ``error_summary`` says what a bad
record's error may show in a log: never its values.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
import time
from typing import Any

import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_RANDOM_BITS = 11


_last_id = 0


def new_webhook_id() -> int:
    """Milliseconds since 2024 (41 bits) and 11 random bits: unique without a central counter, < 2**53.

    Strictly increasing within a process (a burst borrows the next milliseconds), so one process
    never draws the same id twice; two processes collide only when they draw the same random bits
    in the same millisecond (1 in 2048), which creating webhooks at human rates makes negligible.
    """
    global _last_id
    drawn = ((int(time.time() * 1000) - _EPOCH_MS) << _RANDOM_BITS) | random_secrets.randbits(_RANDOM_BITS)
    _last_id = max(drawn, _last_id + 1)
    return _last_id


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


class SigningSecret(BaseModel):
    secret: str = Field(description="whsec_ + base64 of 32 random bytes")
    created_at: str
    expires_at: float | None = Field(None, description="Unix time after which it no longer signs")


class Webhook(BaseModel):
    """A webhook as stored in the subscriptions topic (secrets included: that topic is private)."""

    id: int
    account_id: int
    name: str | None = None
    url: str
    subscriptions: list[str]
    enabled: bool = True
    disabled_reason: str | None = None
    created_at: str
    updated_at: str
    secrets: list[SigningSecret] = Field(default_factory=list)
    connect_timeout_s: float | None = None
    total_timeout_s: float | None = None

    @classmethod
    def new(cls, *, id: int, account_id: int, url: str, subscriptions: list[str], created_at: str,
            **fields: Any) -> Webhook:
        """A webhook as created: one fresh signing secret, created (and last updated) at ``created_at``."""
        return cls(id=id, account_id=account_id, url=url, subscriptions=subscriptions, created_at=created_at,
                   updated_at=created_at, secrets=[SigningSecret(secret=new_secret(), created_at=created_at)],
                   **fields)

    def active_secrets(self, now: float) -> list[str]:
        """Secrets that sign at ``now``, newest first."""
        live = [s for s in self.secrets if s.expires_at is None or s.expires_at > now]
        return [s.secret for s in sorted(live, key=lambda s: s.created_at, reverse=True)]

    def current_secret(self, now: float) -> str | None:
        active = self.active_secrets(now)
        return active[0] if active else None


_WEBHOOK = TypeAdapter(Webhook)


def error_summary(exc: Exception) -> list[dict[str, Any]] | str:
    """What a bad record's error may show in a log: where and which check failed, never the input.

    A pydantic error's text quotes the offending values (a signing secret, a URL with credentials);
    ``errors(include_input=False)`` keeps locations and types only. Any other error: its type name.
    """
    if isinstance(exc, ValidationError):
        return [{"loc": list(e["loc"]), "type": e["type"]}
                for e in exc.errors(include_input=False, include_url=False, include_context=False)][:20]
    if isinstance(exc, BadRecordError):
        return str(exc)
    return type(exc).__name__


class BadRecordError(ValueError):
    """A subscriptions record that is not a webhook record; its message never quotes the record."""


def encode_webhook(webhook: Webhook) -> bytes:
    return orjson.dumps(webhook.model_dump(mode="json"))


def decode_webhook(value: bytes) -> Webhook:
    return _WEBHOOK.validate_json(value)


__all__ = ["BadRecordError", "SigningSecret", "Webhook", "decode_webhook", "encode_webhook", "error_summary",
           "new_secret", "new_webhook_id"]
