"""Webhook management: the operations the API and the CLI share, over the subscription store.

Reads come from the in-memory ``SubscriptionTable``; writes go through ``SubscriptionStore``, which
returns only once this process's table has applied them (read-your-writes). Writes of one account
are serialized in this process, so the per-account URL uniqueness check and the write it guards
cannot interleave; two API instances creating the same URL at the same instant can both succeed
(there is no central lock, by design: Kafka is the only store).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from services.admin import validation
from services.admin.validation import Invalid
from services.contract.times import iso_time
from services.shared import logging as logs
from services.shared.errors import BlockedDestinationError, TransportError
from services.shared.netguard import NetworkGuard
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import SigningSecret, Webhook, new_secret, new_webhook_id

log = logs.get("admin")

DISABLED_BY_API = "disabled_by_api"
Clock = Callable[[], float]




def mask_secret(secret: str | None) -> str | None:
    """``whsec_…abcd``: enough to tell secrets apart, useless for signing."""
    return None if secret is None else f"whsec_…{secret[-4:]}"


def webhook_view(webhook: Webhook, now: float, *, reveal: bool = False) -> dict[str, Any]:
    """The API's JSON shape of a webhook; the current secret in clear only when ``reveal``."""
    secret = webhook.current_secret(now)
    view: dict[str, Any] = {
        "id": webhook.id, "name": webhook.name, "url": webhook.url, "account_id": webhook.account_id,
        "subscriptions": webhook.subscriptions, "enabled": webhook.enabled,
        "disabled_reason": webhook.disabled_reason, "created_at": webhook.created_at,
        "updated_at": webhook.updated_at, "secret": secret if reveal else mask_secret(secret),
    }
    for field in validation.TIMEOUT_FIELDS:
        if getattr(webhook, field) is not None:
            view[field] = getattr(webhook, field)
    return view


class _AccountLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # the holder and the waiters


class AccountLocks:
    """One ``asyncio.Lock`` per account, kept only while someone holds or waits for it.

    Each entry counts its holder and waiters; the last one out removes it, so the table holds only
    the accounts being written right now instead of every account ever written. A later arrival
    makes a fresh lock, which is safe: nobody holds or waits on the dropped one.
    """

    def __init__(self) -> None:
        self._locks: dict[int, _AccountLock] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, account_id: int) -> AsyncIterator[None]:
        entry = self._locks.get(account_id)
        if entry is None:
            entry = self._locks[account_id] = _AccountLock()
        entry.users += 1  # counted before waiting, so a waiter (even one cancelled) keeps the entry
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[account_id]


class WebhookService:
    """Create, update, delete and rotate webhooks of an account."""

    def __init__(self, table: SubscriptionTable, store: SubscriptionStore, guard: NetworkGuard, *,
                 secret_overlap_s: float, clock: Clock = time.time, max_webhooks: int = 100) -> None:
        self.table = table
        self.max_webhooks = max_webhooks
        self._store = store
        self._guard = guard
        self._overlap = secret_overlap_s
        self._clock = clock
        self._locks = AccountLocks()

    def now(self) -> float:
        return self._clock()

    def for_account(self, account_id: int) -> list[Webhook]:
        return self.table.for_account(account_id)

    def get(self, account_id: int, webhook_id: int) -> Webhook | None:
        webhook = self.table.get(webhook_id)
        return webhook if webhook is not None and webhook.account_id == account_id else None

    async def create(self, account_id: int, body: dict[str, Any]) -> Webhook:
        changes = validation.webhook_changes(body, creating=True)
        async with self._locks.hold(account_id):
            if len(self.table.for_account(account_id)) >= self.max_webhooks:
                raise Invalid([("base", validation.too_many_webhooks(self.max_webhooks))])
            await self._check_url(account_id, changes["url"], None)
            webhook_id = new_webhook_id()
            while self.table.get(webhook_id) is not None:
                webhook_id = new_webhook_id()
            now = iso_time(self.now())
            webhook = Webhook.new(id=webhook_id, account_id=account_id, created_at=now,
                                  **_fields(changes, enabled=changes.get("enabled", True)))
            await self._store.put(webhook)
        log.info("webhook.created", webhook_id=webhook.id, account_id=account_id,
                 host=validation.url_host(webhook.url), events=len(webhook.subscriptions))
        return webhook

    async def update(self, account_id: int, webhook_id: int, body: dict[str, Any]) -> Webhook | None:
        changes = validation.webhook_changes(body, creating=False)
        async with self._locks.hold(account_id):
            current = self.get(account_id, webhook_id)
            if current is None:
                return None
            if "url" in changes and changes["url"] != current.url:
                await self._check_url(account_id, changes["url"], webhook_id)
            update = _fields(changes, enabled=changes.get("enabled", current.enabled))
            update["updated_at"] = iso_time(self.now())
            webhook = await self._store.put(current.model_copy(update=update))
        log.info("webhook.updated", webhook_id=webhook_id, account_id=account_id, fields=sorted(changes),
                 enabled=webhook.enabled)
        return webhook

    async def delete(self, account_id: int, webhook_id: int) -> bool:
        async with self._locks.hold(account_id):
            if self.get(account_id, webhook_id) is None:
                return False
            await self._store.delete(webhook_id)
        log.info("webhook.deleted", webhook_id=webhook_id, account_id=account_id)
        return True

    async def rotate_secret(self, account_id: int, webhook_id: int,
                            overlap_s: float | None = None) -> Webhook | None:
        """A new signing secret; the current ones keep signing for the overlap, then expire."""
        overlap = self._overlap if overlap_s is None else overlap_s
        async with self._locks.hold(account_id):
            current = self.get(account_id, webhook_id)
            if current is None:
                return None
            webhook = await self._store.put(rotated(current, self.now(), overlap))
        log.info("webhook.secret_rotated", webhook_id=webhook_id, account_id=account_id, overlap_s=overlap)
        return webhook

    async def _check_url(self, account_id: int, url: str, webhook_id: int | None) -> None:
        errors: list[tuple[str, str]] = []
        key = validation.url_key(url)
        if any(w.id != webhook_id and validation.url_key(w.url) == key for w in self.table.for_account(account_id)):
            errors.append(("url", validation.URL_TAKEN))
        host = validation.url_host(url)
        try:
            await self._guard.check_host(host)
        except BlockedDestinationError:
            log.info("webhook.url_refused", account_id=account_id, host=host, reason="private_network")
            errors.append(("url", validation.URL_PRIVATE))
        except TransportError:
            pass  # a name that does not resolve yet: the delivery workers check again at connect time
        if errors:
            raise Invalid(errors)


def _fields(changes: dict[str, Any], *, enabled: bool) -> dict[str, Any]:
    """Record fields from validated changes; ``enabled`` decides ``disabled_reason``."""
    fields = {k: v for k, v in changes.items() if k not in ("enabled", "disabled_reason")}
    fields["enabled"] = enabled
    if "enabled" in changes:
        fields["disabled_reason"] = None if enabled else changes.get("disabled_reason") or DISABLED_BY_API
    return fields


def rotated(webhook: Webhook, now: float, overlap_s: float) -> Webhook:
    """``webhook`` with a new current secret; live older ones expire after ``overlap_s``, dead ones go."""
    expires = now + overlap_s
    kept = [s.model_copy(update={"expires_at": min(s.expires_at or expires, expires)})
            for s in webhook.secrets if s.expires_at is None or s.expires_at > now]
    fresh = SigningSecret(secret=new_secret(), created_at=iso_time(now))
    return webhook.model_copy(update={"secrets": [fresh, *kept], "updated_at": iso_time(now)})
