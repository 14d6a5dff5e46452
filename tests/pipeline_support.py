"""The whole pipeline in this event loop, for tests of what an integrator sees at both ends.

``running_pipeline(settings)``: this test's topics, the subscription table, a store, a router and a
delivery worker, all running against the real broker until the block exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from services.contract.topics import Topics
from services.delivery.worker import DeliveryWorker
from services.router.worker import RouterWorker
from services.shared import kafka
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable, Webhook

READY_TIMEOUT_S = 30.0


@dataclass
class Pipeline:
    settings: Settings
    table: SubscriptionTable
    store: SubscriptionStore

    @property
    def topics(self) -> Topics:
        return Topics.from_settings(self.settings)

    async def add(self, *webhooks: Webhook) -> None:
        for webhook in webhooks:
            await self.store.put(webhook)


@asynccontextmanager
async def running_pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    await kafka.ensure_topics(settings)
    metrics = Metrics(CollectorRegistry())
    table = SubscriptionTable(settings)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(table.run(stop))]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await table.wait_ready()
        async with kafka.started(kafka.producer(settings)) as producer:
            store = SubscriptionStore(settings, table, producer)
            router = RouterWorker(settings, table, metrics)
            worker = DeliveryWorker(settings, table, store, metrics)
            tasks += [asyncio.create_task(router.run(stop)), asyncio.create_task(worker.run(stop))]
            try:
                yield Pipeline(settings, table, store)
            finally:
                stop.set()
                async with asyncio.timeout(60):
                    await asyncio.gather(*tasks[1:])
    finally:
        stop.set()
        await tasks[0]
