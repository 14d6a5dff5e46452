"""Webhook subscriptions: records in a compacted Kafka topic, replayed into an in-memory table.

Every process that needs subscriptions (API, router, delivery workers, CLI) builds the same
``SubscriptionTable``: it reads ``akece.webhooks.subscriptions`` from the beginning to the end
offsets taken at start (no consumer group), marks itself ready, then follows updates, applying each
record to its ``webhook_index.WebhookIndex``. Writes go through ``SubscriptionStore``:
produce (idempotent, acks=all), then wait until this process's table has applied that offset, so a
read right after a write sees it (read-your-writes). The record itself, ``Webhook``, is defined in
``webhooks``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.contract.times import now_iso
from services.contract.topics import Topics
from services.shared import kafka
from services.shared import logging as logs
from services.shared.errors import BrokerUnreachableError, KafkaUnavailableError
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.webhook_index import WebhookIndex
from services.shared.webhooks import Webhook, encode_webhook, error_summary

log = logs.get("subscriptions")

TOPIC_WAIT_S = 10.0  # how long a starting table waits for its topic to appear in the metadata
APPLY_TIMEOUT_S = 10.0  # how long a write waits for this process's table to apply it


class SubscriptionTable(WebhookIndex):
    """The ``WebhookIndex`` of the subscriptions topic, read to its end and then followed."""

    OnChange = Callable[["SubscriptionTable"], None]

    def __init__(self, settings: Settings, *, on_change: OnChange | None = None,
                 metrics: Metrics | None = None) -> None:
        super().__init__()
        self._settings = settings
        self._metrics = metrics  # counts skipped records (internal_errors, stage subscriptions)
        self._topic = Topics.from_settings(settings).subscriptions
        self._applied: dict[int, int] = {}  # partition -> next offset to apply (the consumer's position)
        self._progress = asyncio.Condition()
        self._ready = asyncio.Event()
        self._stopped = False  # set when run() returns: writers stop waiting for it
        self._on_change = on_change
        self.name = "subscriptions"

    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    # --- applying the log --------------------------------------------------------------------
    async def _apply_batch(self, records: Iterable[Any]) -> None:
        stale: set[int] = set()  # reindex each touched account once per batch, not once per record
        for record in records:
            try:
                stale |= self._apply(record.key, record.value)
            except Exception as exc:  # a record that is not a webhook, or a bug: skip it, loudly (but no values)
                key = None if record.key is None else record.key[:64].decode(errors="replace")
                log.error("subscriptions.bad_record", partition=record.partition, offset=record.offset,
                          key=key, error_class="internal", errors=error_summary(exc))
                if self._metrics is not None:
                    self._metrics.internal_errors.labels(stage="subscriptions").inc()
            self._applied[record.partition] = record.offset + 1
        for account_id in stale:
            self._reindex(account_id)
        async with self._progress:
            self._progress.notify_all()
        if self._on_change is not None:
            self._on_change(self)

    async def _advance(self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
        """Move each partition's mark up to the consumer's position once its records are applied.

        The position passes offsets that hold no record for the table: transaction markers, and
        records compaction removed (at a partition's tail too). Without this, a table whose last
        offsets are such gaps would never count as caught up, and a wait for them never ends.
        """
        moved = False
        for tp in partitions:
            position = await consumer.position(tp)
            if position > self._applied.get(tp.partition, 0):
                self._applied[tp.partition] = position
                moved = True
        if moved:
            async with self._progress:
                self._progress.notify_all()

    # The bound is part of the read-your-writes contract (a write never waits forever), hence the parameter.
    async def wait_applied(self, partition: int, offset: int, timeout: float = 10.0) -> None:
        """Wait until the record at ``offset`` of ``partition`` has been applied.

        Returns early once the table has stopped following (shutdown): the write is durable in
        Kafka, and a request still in flight during shutdown should finish rather than time out.
        """
        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(
                lambda: self._stopped or self._applied.get(partition, 0) > offset), timeout)

    # --- following the topic -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Catch up with the topic, mark ready, then follow it until ``stop``.

        Run again (after a Kafka outage), it resumes from what it applied instead of the beginning.
        """
        self._stopped = False
        consumer = kafka.consumer(self._settings, group_id=None, auto_offset_reset="earliest",
                                  max_poll_records=5000, fetch_max_wait_ms=100)
        async with kafka.started(consumer):
            targets = await self._assign(consumer)
            started = time.monotonic()
            stop_task = asyncio.ensure_future(stop.wait())
            try:
                while not stop.is_set():
                    if not self._ready.is_set() and self._caught_up(targets):
                        self._ready.set()
                        log.info("subscriptions.ready", webhooks=len(self._by_id),
                                 seconds=round(time.monotonic() - started, 3))
                    fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=500))
                    await asyncio.wait({fetch, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                    if not fetch.done():
                        fetch.cancel()
                        break
                    for records in fetch.result().values():
                        await self._apply_batch(records)
                    await self._advance(consumer, consumer.assignment())
            finally:
                stop_task.cancel()
                self._stopped = True
                async with self._progress:
                    self._progress.notify_all()

    async def _assign(self, consumer: AIOKafkaConsumer) -> dict[int, int]:
        ends = await kafka.end_offsets(consumer, self._topic)
        deadline = time.monotonic() + TOPIC_WAIT_S
        while not ends and time.monotonic() < deadline:  # a just-created topic reaches metadata late
            await asyncio.sleep(0.2)
            ends = await kafka.end_offsets(consumer, self._topic)
        if not ends:
            raise KafkaUnavailableError(
                f"topic {self._topic} does not exist: run `akece-webhooks topics ensure`")
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        for tp in ends:  # a restarted run: what was applied stays applied
            if self._applied.get(tp.partition):
                consumer.seek(tp, self._applied[tp.partition])
        return {tp.partition: offset for tp, offset in ends.items()}

    def _caught_up(self, targets: dict[int, int]) -> bool:
        """Every partition's position has reached its end offset taken at start."""
        return all(self._applied.get(p, 0) >= end for p, end in targets.items() if end > 0)


class NotYetVisibleError(TimeoutError):
    """A write is durable in Kafka, but this process's table did not apply it within the bound."""

    def __init__(self, key: bytes, partition: int, offset: int, timeout: float) -> None:
        super().__init__(f"record {offset} of partition {partition} stored, not applied within {timeout:g}s")
        self.key = key
        self.partition = partition
        self.offset = offset


class SubscriptionStore:
    """Writes webhook records to the compacted topic and waits until the local table has them."""

    def __init__(self, settings: Settings, table: SubscriptionTable, producer: AIOKafkaProducer, *,
                 apply_timeout_s: float = APPLY_TIMEOUT_S, available: Callable[[], bool] | None = None) -> None:
        """``available``: whether the broker answers now (``BrokerLink.ready``); while it does not,
        writes fail at once instead of waiting ``send_timeout_s`` for an acknowledgement."""
        self._available = available
        self._settings = settings
        self._table = table
        self._producer = producer
        self._apply_timeout_s = apply_timeout_s
        self._topic = Topics.from_settings(settings).subscriptions

    def available(self) -> bool:
        """False while the broker is known to be away: a write would be refused at once."""
        return self._available is None or self._available()

    async def put(self, webhook: Webhook) -> Webhook:
        await self._write(str(webhook.id).encode(), encode_webhook(webhook))
        return webhook

    async def delete(self, webhook_id: int) -> None:
        await self._write(str(webhook_id).encode(), None)

    async def _write(self, key: bytes, value: bytes | None) -> None:
        if not self.available():
            raise BrokerUnreachableError("Kafka is unreachable: the change was not stored; try again later")
        meta = await kafka.send(self._producer, self._topic, value, key=key, headers=[],
                                timeout=self._settings.kafka.send_timeout_s)
        try:
            await self._table.wait_applied(meta.partition, meta.offset, timeout=self._apply_timeout_s)
        except TimeoutError as exc:  # the write is durable; only this process's view lags
            raise NotYetVisibleError(key, meta.partition, meta.offset, self._apply_timeout_s) from exc

    async def set_enabled(self, webhook_id: int, enabled: bool, reason: str | None) -> Webhook | None:
        """Enable or disable a webhook, recording why. ``None`` if it no longer exists."""
        current = self._table.get(webhook_id)
        if current is None:
            return None
        updated = current.model_copy(update={
            "enabled": enabled, "disabled_reason": None if enabled else reason, "updated_at": now_iso()})
        return await self.put(updated)


@asynccontextmanager
async def caught_up_table(settings: Settings, *, timeout: float) -> AsyncIterator[SubscriptionTable]:
    """The subscription table, read to the end of the topic within ``timeout`` and followed until the
    block ends: one command's view. A table that fails (a missing topic) raises its error."""
    stop = asyncio.Event()
    table = SubscriptionTable(settings)
    following = asyncio.create_task(table.run(stop))
    ready = asyncio.create_task(table.wait_ready())
    try:
        await asyncio.wait({following, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if following.done():
            following.result()  # raises what stopped it
        if not ready.done():
            raise TimeoutError(f"the subscription table did not catch up within {timeout:g}s")
        yield table
    finally:
        ready.cancel()
        stop.set()
        if not following.done():
            await following


__all__ = ["APPLY_TIMEOUT_S", "TOPIC_WAIT_S", "NotYetVisibleError", "SubscriptionStore", "SubscriptionTable",
           "caught_up_table"]
