"""The webhooks of the subscriptions topic, indexed in memory: a pure core, no Kafka.

``apply(key, value)`` takes one record of the topic (a webhook, or a tombstone deleting it);
``matching(account, event)`` answers the router in O(1) in the number of accounts.
``subscriptions.SubscriptionTable`` feeds it from the topic.
"""

from __future__ import annotations

from collections import defaultdict

from services.shared.digits import ascii_int
from services.shared.webhooks import BadRecordError, Webhook, decode_webhook


class WebhookIndex:
    """Every webhook by id, by account, and (enabled ones) by account and event."""

    def __init__(self) -> None:
        self._by_id: dict[int, Webhook] = {}
        self._by_account: dict[int, dict[int, Webhook]] = defaultdict(dict)
        self._index: dict[str, dict[str, tuple[Webhook, ...]]] = {}  # account -> event -> webhooks

    # --- reads -----------------------------------------------------------------------------
    def get(self, webhook_id: int) -> Webhook | None:
        return self._by_id.get(webhook_id)

    def all(self) -> list[Webhook]:
        return list(self._by_id.values())

    def for_account(self, account_id: int) -> list[Webhook]:
        return sorted(self._by_account.get(account_id, {}).values(), key=lambda w: w.id)

    def matching(self, account_id: str | int, event: str) -> tuple[Webhook, ...]:
        """Enabled webhooks of ``account_id`` subscribed to ``event``."""
        return self._index.get(str(account_id), {}).get(event, ())

    def __len__(self) -> int:
        return len(self._by_id)

    # --- applying the log --------------------------------------------------------------------
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the topic: a webhook record, or a tombstone (``None``) deleting it."""
        for account_id in self._apply(key, value):
            self._reindex(account_id)

    def _apply(self, key: bytes | None, value: bytes | None) -> set[int]:
        """Apply one record without reindexing; returns the accounts whose index is now stale."""
        if key is None:
            return set()
        webhook_id = ascii_int(key)
        if webhook_id is None:
            raise BadRecordError("the key is not a webhook id")
        webhook = None if value is None else decode_webhook(value)  # a bad record changes nothing
        if webhook is not None and webhook.id != webhook_id:
            raise BadRecordError("the key is not the record's webhook id")
        touched: set[int] = set()
        old = self._by_id.pop(webhook_id, None)
        if old is not None:
            self._by_account[old.account_id].pop(webhook_id, None)
            if not self._by_account[old.account_id]:
                del self._by_account[old.account_id]
            touched.add(old.account_id)
        if webhook is not None:
            self._by_id[webhook_id] = webhook
            self._by_account[webhook.account_id][webhook_id] = webhook
            touched.add(webhook.account_id)
        return touched

    def _reindex(self, account_id: int) -> None:
        hooks = sorted(self._by_account.get(account_id, {}).values(), key=lambda w: w.id)
        by_event: dict[str, list[Webhook]] = {}
        for webhook in hooks:  # one pass over the account's subscriptions, in id order
            if webhook.enabled:
                for event in dict.fromkeys(webhook.subscriptions):
                    by_event.setdefault(event, []).append(webhook)
        if by_event:
            self._index[str(account_id)] = {event: tuple(found) for event, found in by_event.items()}
        else:
            self._index.pop(str(account_id), None)


__all__ = ["WebhookIndex"]
