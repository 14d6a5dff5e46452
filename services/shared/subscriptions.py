"""Webhook subscriptions: records in a compacted Kafka topic, replayed into an in-memory table.

Every process that needs subscriptions (API, router, delivery workers, CLI) builds the same
``SubscriptionTable``: it reads ``akece.webhooks.subscriptions`` from the beginning to the end
offsets taken at start (no consumer group), marks itself ready, then follows updates. Writes go
through ``SubscriptionStore``: produce (idempotent, acks=all), then wait until this process's table
has applied that offset, so a read right after a write sees it (read-your-writes).
"""

from __future__ import annotations

import asyncio
import base64
import secrets as random_secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.contract.times import now_iso
from services.contract.topics import Topics
from services.shared import kafka
from services.shared import logging as logs
from services.shared.digits import ascii_int
from services.shared.errors import BrokerUnreachableError, KafkaUnavailableError
from services.shared.metrics import Metrics
from services.shared.settings import Settings

log = logs.get("subscriptions")

TOPIC_WAIT_S = 10.0  # how long a starting table waits for its topic to appear in the metadata
APPLY_TIMEOUT_S = 10.0  # how long a write waits for this process's table to apply it
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


class NotYetVisibleError(TimeoutError):
    """A write is durable in Kafka, but this process's table did not apply it within the bound."""

    def __init__(self, key: bytes, partition: int, offset: int, timeout: float) -> None:
        super().__init__(f"record {offset} of partition {partition} stored, not applied within {timeout:g}s")
        self.key = key
        self.partition = partition
        self.offset = offset


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


class SubscriptionTable:
    """In-memory view of the subscriptions topic. ``matching()`` is O(1) in the number of accounts."""

    OnChange = Callable[["SubscriptionTable"], None]

    def __init__(self, settings: Settings, *, on_change: OnChange | None = None,
                 metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics  # counts skipped records (internal_errors, stage subscriptions)
        self._topic = Topics.from_settings(settings).subscriptions
        self._by_id: dict[int, Webhook] = {}
        self._by_account: dict[int, dict[int, Webhook]] = defaultdict(dict)
        self._index: dict[str, dict[str, tuple[Webhook, ...]]] = {}  # account -> event -> webhooks
        self._applied: dict[int, int] = {}  # partition -> next offset to apply (the consumer's position)
        self._progress = asyncio.Condition()
        self._ready = asyncio.Event()
        self._stopped = False  # set when run() returns: writers stop waiting for it
        self._on_change = on_change
        self.name = "subscriptions"

    # --- reads -----------------------------------------------------------------------------
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

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
