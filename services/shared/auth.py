"""API tokens: who may act on which account.

``AKECE_API_ADMIN_TOKEN`` acts on every account. ``AKECE_API_ACCOUNT_TOKENS`` holds
``account_id:token`` pairs, comma-separated, or ``@/path/to/file`` with pairs separated by commas or
new lines (a line starting with ``#`` is a comment; elsewhere ``#`` is part of a token); an account
may have several tokens (for rotation). Tokens are at least 16 characters, each unique, and none
equals the admin token: anything else is refused at start, naming the entry, never the token. Clients send
the token in Chatwoot's ``api_access_token`` header or as ``Authorization: Bearer <token>``.

Tokens are kept only as SHA-256 digests; the presented token's digest is compared with every
known one by ``hmac.compare_digest``, without an early exit, so timing tells nothing about which
token matched or how much of one did. Tokens are never logged.

The management API (``services.admin``), the operations API (``services.ops.api``) and the console
share this module: ``PRINCIPAL`` is where the auth middleware leaves the caller on a request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

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
PRINCIPAL = web.RequestKey("principal", Principal)  # set by the auth middleware
NOT_FOUND = "Resource could not be found"  # Chatwoot's body of a 404


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


MIN_TOKEN_LENGTH = 16


def _entries(spec: str) -> list[tuple[str, str]]:
    """``(where, pair)`` for every non-empty entry: ``where`` names it without its token."""
    if not spec.startswith("@"):
        inline = (p.strip() for p in re.split(r"[,\n]", spec))
        return [(f"entry {n}", pair) for n, pair in enumerate(inline, 1) if pair]
    path = Path(spec[1:])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read account tokens file {path}: {exc.strerror}") from exc
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("#"):  # a comment only at the start of a line; elsewhere `#` is token text
            continue
        pairs = [p.strip() for p in line.split(",")]
        entries += [(f"{path} line {number}" + (f" entry {i}" if len(pairs) > 1 else ""), pair)
                    for i, pair in enumerate(pairs, 1) if pair]
    return entries


def parse_account_tokens(spec: str, admin_token: str | None = None) -> dict[str, int]:
    """``"1:tok,2:tok2"`` (or ``@file``) -> token -> account id.

    Raises ``ConfigError`` naming the first bad entry (never its token): not ``account_id:token``,
    a token shorter than ``MIN_TOKEN_LENGTH``, a token listed twice (for one account or two), or
    the admin token.
    """
    tokens: dict[str, int] = {}
    seen: dict[str, str] = {}
    for where, pair in _entries(spec):
        account, sep, token = (part.strip() for part in pair.partition(":"))
        if not sep or not account.isascii() or not account.isdigit() or not token:
            raise ConfigError(f"AKECE_API_ACCOUNT_TOKENS {where} is not `account_id:token`")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"AKECE_API_ACCOUNT_TOKENS {where} (account {int(account)}): token shorter "
                              f"than {MIN_TOKEN_LENGTH} characters")
        if token in seen:
            raise ConfigError(f"AKECE_API_ACCOUNT_TOKENS {where} (account {int(account)}): token already "
                              f"given in {seen[token]} (account {tokens[token]}); every token must be unique")
        if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
            raise ConfigError(f"AKECE_API_ACCOUNT_TOKENS {where} (account {int(account)}): token equals "
                              "AKECE_API_ADMIN_TOKEN")
        tokens[token] = int(account)
        seen[token] = where
    return tokens


def check_admin_token(token: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"AKECE_API_ADMIN_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters")


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
        if admin:
            check_admin_token(admin)
        return cls(admin, parse_account_tokens(spec, admin or None))

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
    token = (headers.get("api_access_token") or headers.get("api-access-token") or "").strip()
    if token:  # a blank one is no token: the Authorization header may still carry one
        return token
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
