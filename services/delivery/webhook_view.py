"""What one delivery worker knows of webhooks, and the only changes it makes to them.

``WebhookView`` reads the worker's subscription table. A verdict that would end a delivery (its webhook
deleted or disabled) is taken only once the table is current as of the record's fetch (``fresh``); a
table that cannot catch up within ``SYNC_TIMEOUT_S`` leaves the verdict unconfirmed, and the caller
retries instead of dead-lettering. ``disable`` writes an auto-disable (410 Gone, or failing for too
long) through the subscription store; ``forget_circuits`` drops the circuit state of webhooks deleted
or disabled since.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.contract.topics import Topics
from services.delivery.breaker import Circuits
from services.shared import kafka
from services.shared import logging as logs
from services.shared.metrics import Metrics
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import Webhook

log = logs.get("delivery")

SYNC_TIMEOUT_S = 5.0


class WebhookView:
    """``WebhookView(topics, table, store, metrics, circuits)``; ``bind(probe)`` (a consumer without a
    group, for the subscriptions topic's end offsets) before ``fresh``."""

    def __init__(self, topics: Topics, table: SubscriptionTable, store: SubscriptionStore, metrics: Metrics,
                 circuits: Circuits) -> None:
        self._topics = topics
        self._table = table
        self._store = store
        self._metrics = metrics
        self._circuits = circuits
        self._synced_at = 0.0
        self._sync: asyncio.Future[None] | None = None
        self._sync_started = 0.0
        self._probe: Any = None

    def bind(self, probe: Any) -> None:
        self._probe = probe

    def get(self, webhook_id: int) -> Webhook | None:
        return self._table.get(webhook_id)

    async def fresh(self, fetched_at: float) -> bool:
        """Whether the table is current as of no earlier than ``fetched_at`` (a record's fetch), so that a
        deleted/disabled verdict is never stale. False: it could not catch up in time."""
        if self._synced_at < fetched_at:
            if self._sync is None or self._sync.done() or self._sync_started < fetched_at:
                self._sync_started = time.time()
                self._sync = asyncio.ensure_future(self._sync_table(self._sync_started))
            await asyncio.shield(self._sync)
        return self._synced_at >= fetched_at

    async def _sync_table(self, started: float) -> None:
        assert self._probe is not None
        ends = await kafka.end_offsets(self._probe, self._topics.subscriptions)
        for tp, end in ends.items():
            if end <= 0:
                continue
            try:
                await self._table.wait_applied(tp.partition, end - 1, timeout=SYNC_TIMEOUT_S)
            except TimeoutError:
                log.warning("delivery.subscriptions_behind", partition=tp.partition, end=end,
                            waited_s=SYNC_TIMEOUT_S)
                return
        self._synced_at = max(self._synced_at, started)

    async def disable(self, webhook_id: int, reason: str, label: str) -> None:
        webhook = self._table.get(webhook_id)
        if webhook is None or not webhook.enabled:
            return
        try:
            await self._store.set_enabled(webhook_id, False, reason)
        except TimeoutError:
            log.warning("delivery.disable_unconfirmed", webhook_id=webhook_id)
        self._metrics.webhooks_auto_disabled.labels(label).inc()
        log.warning("webhook.disabled", webhook_id=webhook_id, account_id=webhook.account_id, reason=reason)

    def forget_circuits(self) -> None:
        """Drop the circuit state of webhooks deleted or disabled since: a webhook enabled again starts
        closed, with a fresh auto-disable clock."""
        for webhook_id in self._circuits.tracked():
            webhook = self._table.get(webhook_id)
            if webhook is None or not webhook.enabled:
                self._circuits.forget(webhook_id)
