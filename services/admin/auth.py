"""API tokens: who may act on which account.

``AKECE_API_ADMIN_TOKEN`` acts on every account. ``AKECE_API_ACCOUNT_TOKENS`` holds
``account_id:token`` pairs, comma-separated, or ``@/path/to/file`` with pairs separated by commas or
new lines (``#`` starts a comment); an account may have several tokens (for rotation). Clients send
the token in Chatwoot's ``api_access_token`` header or as ``Authorization: Bearer <token>``.

Tokens are kept only as SHA-256 digests; the presented token's digest is compared with every
known one by ``hmac.compare_digest``, without an early exit, so timing tells nothing about which
token matched or how much of one did. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.shared.errors import ConfigError
from services.shared.settings import Settings


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to: the admin (``account_id is None``) or one account."""

    account_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.account_id is None

    def may_access(self, account_id: int) -> bool:
        return self.account_id is None or self.account_id == account_id


ADMIN = Principal(None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_account_tokens(spec: str) -> dict[str, int]:
    """``"1:tok,2:tok2"`` (or ``@file``) -> token -> account id. Raises ``ConfigError``."""
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            spec = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read account tokens file {path}: {exc.strerror}") from exc
    tokens: dict[str, int] = {}
    lines = (line.split("#", 1)[0] for line in spec.splitlines())
    for number, pair in enumerate((p.strip() for line in lines for p in line.split(",")), 1):
        if not pair:
            continue
        account, sep, token = pair.partition(":")
        if not sep or not account.strip().isdigit() or not token.strip():
            raise ConfigError(f"account token entry {number} is not `account_id:token`")
        tokens[token.strip()] = int(account)
    return tokens


class TokenAuthenticator:
    """Maps a presented token to its ``Principal``, or ``None``."""

    def __init__(self, admin_token: str | None, account_tokens: Mapping[str, int]) -> None:
        self._principals: dict[bytes, Principal] = {}
        for token, account in account_tokens.items():
            self._principals[_digest(token)] = Principal(account)
        if admin_token:
            self._principals[_digest(admin_token)] = ADMIN

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuthenticator:
        admin = settings.api.admin_token.get_secret_value() if settings.api.admin_token else None
        spec = settings.api.account_tokens.get_secret_value() if settings.api.account_tokens else ""
        return cls(admin, parse_account_tokens(spec))

    @property
    def configured(self) -> bool:
        return bool(self._principals)

    def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        presented = _digest(token)
        found: Principal | None = None
        for known, principal in self._principals.items():  # no early exit: same work whichever matches
            if hmac.compare_digest(known, presented):
                found = principal
        return found


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """The token of a request: ``api_access_token`` header, else ``Authorization: Bearer``."""
    token = headers.get("api_access_token") or headers.get("api-access-token")
    if token:
        return token.strip()
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
