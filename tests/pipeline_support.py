"""The whole pipeline in this event loop, for tests of what an integrator sees at both ends.

``running_pipeline(settings)``: ``delivery_support.stack`` (this test's topics, the subscription table,
a store) with a router and a delivery worker running against the real broker until the block exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.delivery.worker import DeliveryWorker
from services.router.worker import RouterWorker
from services.shared.settings import Settings
from tests.delivery_support import Stack, stack

Pipeline = Stack


@asynccontextmanager
async def running_pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    async with stack(settings) as s:
        stop = asyncio.Event()
        router = RouterWorker(settings, s.table, s.metrics)
        worker = DeliveryWorker(settings, s.table, s.store, s.metrics)
        tasks = [asyncio.create_task(router.run(stop)), asyncio.create_task(worker.run(stop))]
        try:
            yield s
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await asyncio.gather(*tasks)
