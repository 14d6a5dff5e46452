"""Helpers of the delivery tests (and the benchmark): webhooks, delivery records, a running stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from schemas.examples import example
from services.contract import headers as h
from services.contract.deliveries import delivery_key, first_attempt_headers
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.delivery.worker import DeliveryWorker
from services.shared import kafka
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import SigningSecret, Webhook, new_secret, new_webhook_id

READY_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


def make_webhook(url: str, *, account_id: int = 1, secrets: int = 1, enabled: bool = True,
                 total_timeout_s: float | None = None, connect_timeout_s: float | None = None) -> Webhook:
    stamp = now_iso()
    return Webhook(id=new_webhook_id(), account_id=account_id, url=url, subscriptions=["message_created"],
                   enabled=enabled, created_at=stamp, updated_at=stamp,
                   secrets=[SigningSecret(secret=new_secret(), created_at=f"2026-01-0{n + 1}T00:00:00.000Z")
                            for n in range(secrets)],
                   total_timeout_s=total_timeout_s, connect_timeout_s=connect_timeout_s)


@dataclass
class Delivery:
    webhook_id: int
    key: bytes
    value: bytes
    headers: h.Headers
    delivery_id: str = ""
    event_id: str = ""


def delivery(webhook: Webhook, *, conversation: int | None = 1, body: bytes | None = None, seq: int = 0,
             event_type: str = "message_created") -> Delivery:
    """A delivery record as the router writes it (attempt 1)."""
    event_id = str(uuid.uuid4())
    if body is None:
        payload: dict[str, Any] = example(event_type, account_id=webhook.account_id,
                                          conversation_id=1 if conversation is None else conversation)
        payload["content"] = f"olá ✓ {seq}"
        payload["akece_seq"] = seq
        body = orjson.dumps(payload)
    headers = first_attempt_headers(event_id=event_id, event_type=event_type, account_id=str(webhook.account_id),
                                    webhook_id=webhook.id, event_time=now_iso(), routed_time=now_iso())
    values = h.to_dict(headers)
    return Delivery(webhook.id, delivery_key(webhook.id, None if conversation is None else str(conversation)),
                    body, headers, values[h.DELIVERY_ID], event_id)


async def produce(settings: Settings, items: Sequence[Delivery], topic: str | None = None) -> None:
    topic = topic or Topics.from_settings(settings).deliveries
    max_request = kafka.max_record_bytes(settings.router.max_event_bytes)  # as the router's producer
    async with kafka.started(kafka.producer(settings, max_request_size=max_request)) as producer:
        for start in range(0, len(items), 5000):
            futures = [await producer.send(topic, value=d.value, key=d.key, headers=d.headers)
                       for d in items[start:start + 5000]]
            await asyncio.gather(*futures)


async def read_topic(settings: Settings, topic: str, count: int, timeout: float = 30.0,
                     where: Callable[[Any], bool] | None = None) -> list[Any]:
    """The first ``count`` records of ``topic`` (all partitions, no group), or of those ``where`` keeps;
    waits for them."""
    consumer = kafka.consumer(settings, group_id=None)
    found: list[Any] = []
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        async with asyncio.timeout(timeout):
            while len(found) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend(batch if where is None else filter(where, batch))
    return found


async def committed(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    consumer = kafka.consumer(settings, group_id=group_id)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        out = {}
        for tp in ends:
            out[tp.partition] = await consumer.committed(TopicPartition(topic, tp.partition)) or 0
        return out


@dataclass
class Stack:
    settings: Settings
    table: SubscriptionTable
    store: SubscriptionStore
    metrics: Metrics = field(default_factory=lambda: Metrics(CollectorRegistry()))

    @property
    def topics(self) -> Topics:
        return Topics.from_settings(self.settings)

    async def add(self, *webhooks: Webhook) -> None:
        for webhook in webhooks:
            await self.store.put(webhook)

    def worker(self, **kwargs: Any) -> DeliveryWorker:
        return DeliveryWorker(self.settings, self.table, self.store, self.metrics, **kwargs)

    async def until_idle(self, timeout: float = 60.0, **kwargs: Any) -> DeliveryWorker:
        worker = self.worker(until_idle=True, **kwargs)
        async with asyncio.timeout(timeout):
            await worker.run(asyncio.Event())
        return worker

    @asynccontextmanager
    async def running(self, **kwargs: Any) -> AsyncIterator[DeliveryWorker]:
        """A worker running in the background; stopped (drained) on exit, its errors re-raised."""
        worker = self.worker(**kwargs)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await task

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    """Topics ensured, a subscription table following, a store writing through it."""
    await kafka.ensure_topics(settings)
    table = SubscriptionTable(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(table.run(stop))
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await table.wait_ready()
        async with kafka.started(kafka.producer(settings)) as producer:
            yield Stack(settings, table, SubscriptionStore(settings, table, producer))
    finally:
        stop.set()
        await task


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of a real worker process for these settings (no AKECE_ variable of this shell)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AKECE_")}
    env.update({
        "AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "AKECE_TOPIC_PREFIX": settings.topic_prefix,
        "AKECE_ALLOWED_PRIVATE_CIDRS": ",".join(settings.allowed_private_cidrs),
        "AKECE_RETRY_SCHEDULE": ",".join(str(d) for d in settings.retry.schedule),
        "AKECE_RETRY_JITTER": "0",
        "AKECE_KAFKA_PARTITIONS": str(settings.kafka.partitions),
        "AKECE_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka.session_timeout_ms),
        "AKECE_KAFKA_REBALANCE_TIMEOUT_MS": str(settings.kafka.rebalance_timeout_ms),
        "AKECE_METRICS_HOST": "127.0.0.1",
        "AKECE_METRICS_PORT": "0",
        "AKECE_DELIVERY_PROCESSES": "1",  # one process, as before the CPU-count default
        "AKECE_LOG_LEVEL": "warning",
        "AKECE_LOG_FORMAT": "json",
    })
    env.update(extra)
    return env


@asynccontextmanager
async def deliver_process(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real ``akece-webhooks deliver`` process, its output appended to ``log`` (a pipe nobody
    reads would fill up under a fault's log lines and stall the worker); killed on exit if still running."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "deliver", cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
