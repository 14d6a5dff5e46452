"""A steady delivery load for the fault tests, and the figures they report.

The load is written to the deliveries topic as the router writes it (attempt 1, one delivery id
per record), spread over several webhooks of one receiver that answers 200. What the receiver saw
is then tallied against what was produced: expected / delivered / lost / duplicated, plus the
dead-letter topic's record count. Each test prints its row (``FAULT-ROW | ...``), the README's
Reliability table is made of them.
"""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

from services.shared import kafka
from services.shared.settings import Settings
from services.shared.subscriptions import Webhook
from services.shared.topics import Topics
from tests.delivery_support import Delivery, delivery
from tests.receiver import Receiver

BATCH = 50
ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def deliver_process(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real ``akece-webhooks deliver`` process, its output appended to ``log`` (a pipe nobody
    reads would fill up under a fault's log lines and stall the worker); killed on exit if still running."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "deliver", cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=out)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@dataclass
class Load:
    """``total`` deliveries over ``webhooks``, produced at about ``rate`` per second by ``run()``."""

    settings: Settings
    webhooks: list[Webhook]
    total: int
    rate: float
    items: list[Delivery] = field(init=False)
    produced: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.items = [delivery(self.webhooks[n % len(self.webhooks)], conversation=n % 500, seq=n)
                      for n in range(self.total)]

    @property
    def expected(self) -> set[str]:
        return {item.delivery_id for item in self.items}

    async def run(self) -> None:
        """Produce every record once, acknowledged (acks=all), at a steady pace."""
        topic = Topics.from_settings(self.settings).deliveries
        async with kafka.started(kafka.producer(self.settings)) as producer:
            began = time.monotonic()
            for start in range(0, self.total, BATCH):
                await self._send(producer, topic, self.items[start:start + BATCH])
                self.produced = min(self.total, start + BATCH)
                ahead = began + self.produced / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the load, not waiting for an event
        self.finished.set()

    @staticmethod
    async def _send(producer: AIOKafkaProducer, topic: str, batch: list[Delivery]) -> None:
        futures = [await producer.send(topic, value=d.value, key=d.key, headers=d.headers) for d in batch]
        await asyncio.wait_for(asyncio.gather(*futures), 120)


async def wait_all_arrived(receiver: Receiver, expected: set[str], timeout: float) -> None:
    """Until every expected delivery id reached the receiver (each arrival wakes the check)."""
    async with asyncio.timeout(timeout):
        while not expected <= arrived_ids(receiver):
            await receiver.next_request(timeout=timeout)


def arrived_ids(receiver: Receiver) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.requests}


async def dead_lettered(settings: Settings) -> int:
    """Records in the dead-letter topic (sum of its partitions' end offsets)."""
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, Topics.from_settings(settings).dlq)
    return sum(ends.values())


@dataclass(frozen=True)
class Tally:
    fault: str
    load: str
    expected: int
    delivered: int
    lost: int
    duplicated: int
    dead_lettered: int
    duplicate_bound: int

    def row(self) -> str:
        return (f"FAULT-ROW | {self.fault} | {self.load} | {self.expected} | {self.delivered} | {self.lost} | "
                f"{self.duplicated} (bound {self.duplicate_bound}) | {self.dead_lettered} | "
                f"{time.strftime('%Y-%m-%d')} | {platform.machine()}, {_cpus()} cores")


def tally(fault: str, load: str, receiver: Receiver, expected: set[str], dlq: int, bound: int) -> Tally:
    seen = Counter(r.headers["webhook-id"] for r in receiver.requests)
    delivered = len(expected & set(seen))
    duplicated = sum(count - 1 for count in seen.values())
    return Tally(fault, load, len(expected), delivered, len(expected) - delivered, duplicated, dlq, bound)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0
