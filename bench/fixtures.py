"""Realistic dead letters and webhooks for tests and benchmarks (no delivery worker needed).

A dead letter built here is what the delivery worker writes: the routed delivery record (body,
key ``<webhook>:<conversation>``, first-attempt headers) plus the DLQ story headers, stamped with
the time it was dead-lettered, so windows in the past can be built without waiting.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer

from schemas.examples import example
from services.contract import headers as h
from services.contract.deliveries import delivery_id, delivery_key, first_attempt_headers
from services.contract.times import iso
from services.contract.topics import topic_specs
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable, caught_up_table
from services.shared.webhooks import Webhook, new_webhook_id


@dataclass(frozen=True)
class DeadSpec:
    """One dead letter to produce."""

    webhook_id: int
    account_id: int
    at: float  # Unix seconds it was dead-lettered
    event_type: str = "message_created"
    conversation: int = 42
    reason: str = "exhausted"
    attempts: int = 8
    last_status: int | None = 503
    event_id: str = ""

    @property
    def event(self) -> str:
        return self.event_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.webhook_id}/{self.at}/{self.conversation}"))

    @property
    def delivery_id(self) -> str:
        return delivery_id(self.event, self.webhook_id)


def body_of(spec: DeadSpec) -> bytes:
    return orjson.dumps(example(spec.event_type, account_id=spec.account_id, conversation_id=spec.conversation))


def dead_letter(spec: DeadSpec, body: bytes | None = None) -> tuple[bytes, bytes, h.Headers]:
    """Key, value and headers of the DLQ record the delivery worker would write."""
    first = spec.at - 27 * 3600 if spec.attempts > 1 else spec.at
    headers = first_attempt_headers(event_id=spec.event, event_type=spec.event_type, account_id=str(spec.account_id),
                                    webhook_id=spec.webhook_id, event_time=iso(first - 0.2),
                                    routed_time=iso(first - 0.1) or "")
    story: dict[str, str | int | float | None] = {
        h.ATTEMPT: spec.attempts, h.ATTEMPTS: spec.attempts, h.DLQ_REASON: spec.reason,
        h.FIRST_ATTEMPT_AT: f"{first:.3f}", h.LAST_ATTEMPT_AT: f"{spec.at - 0.05:.3f}",
        h.LAST_STATUS: spec.last_status, h.LAST_ERROR: None if spec.last_status else "connection refused",
        h.LAST_ERROR_CLASS: "http_status" if spec.last_status else "connect",
        h.LAST_RESPONSE: '{"error":"unavailable"}' if spec.last_status else None, h.DLQ_AT: f"{spec.at:.3f}",
    }
    key = delivery_key(spec.webhook_id, str(spec.conversation))
    return key, body if body is not None else body_of(spec), h.replace(headers, story)


async def produce_dead_letters(producer: AIOKafkaProducer, topic: str, specs: Iterable[DeadSpec],
                               *, timeout: float = 60.0) -> int:
    """Produce dead letters stamped with their ``at`` time; returns how many."""
    futures = []
    bodies: dict[tuple[str, int, int], bytes] = {}
    for spec in specs:
        shape = (spec.event_type, spec.account_id, spec.conversation)
        body = bodies.get(shape)
        if body is None:
            body = bodies[shape] = body_of(spec)
        key, value, headers = dead_letter(spec, body)
        futures.append(await producer.send(topic, value, key=key, headers=headers, timestamp_ms=int(spec.at * 1000)))
    await asyncio.wait_for(asyncio.gather(*futures), timeout)
    return len(futures)


def webhook(account_id: int, *, url: str = "http://127.0.0.1:9/hook", subscriptions: Iterable[str] | None = None,
            enabled: bool = True, created_days_ago: float = 30.0, webhook_id: int | None = None) -> Webhook:
    created = iso(datetime.now(UTC) - timedelta(days=created_days_ago)) or ""
    return Webhook.new(id=webhook_id or new_webhook_id(), account_id=account_id, url=url,
                       subscriptions=list(subscriptions or ["message_created", "conversation_created"]),
                       enabled=enabled, disabled_reason=None if enabled else "HTTP 410 Gone", created_at=created)


async def put_webhooks(store: SubscriptionStore, hooks: Iterable[Webhook]) -> list[Webhook]:
    return [await store.put(w) for w in hooks]


class Store(SubscriptionStore):
    """A subscription store that also exposes its (started) producer and table."""

    def __init__(self, settings: Settings, table: SubscriptionTable, producer: AIOKafkaProducer) -> None:
        super().__init__(settings, table, producer)
        self.producer = producer
        self.table = table


@asynccontextmanager
async def running_store(settings: Settings) -> AsyncIterator[Store]:
    """A caught-up subscription table with a store writing through a started producer."""
    async with caught_up_table(settings, timeout=30.0) as table, kafka.started(kafka.producer(settings)) as producer:
        yield Store(settings, table, producer)


async def delete_topics(settings: Settings) -> None:
    """Every topic of ``settings``' prefix (the events, the deliveries, the retry tiers, ...), deleted."""
    client = kafka.admin(settings)
    async with kafka.started(client):
        await client.delete_topics([spec.name for spec in topic_specs(settings)])


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for running ``python -m services ...`` against these settings."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AKECE_TOPIC_PREFIX": settings.topic_prefix,
            "AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "AKECE_RETRY_SCHEDULE": ",".join(str(d) for d in settings.retry.schedule),
            "AKECE_KAFKA_PARTITIONS": str(settings.kafka.partitions), "AKECE_KAFKA_LINGER_MS": "1",
            "AKECE_LOG_FORMAT": "json"}
