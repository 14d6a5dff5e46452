"""A steady delivery load for the fault tests, and the figures they report.

The load is written to the deliveries topic as the router writes it (attempt 1, one delivery id
per record), spread over several webhooks of one receiver that answers 200. What the receiver saw
is then tallied against what was produced: expected / delivered / lost / duplicated, plus the
dead-letter topic's record count. Each test prints its row (``FAULT-ROW | ...``), the
Reliability table of docs/reliability.md is made of them.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

from services.contract.topics import Topics
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import Webhook
from tests.delivery_support import Delivery, delivery
from tests.receiver import Receiver

BATCH = 50
PROGRESS = 150  # deliveries that must arrive to call the pipeline moving


@dataclass
class Load:
    """Deliveries over ``webhooks`` at about ``rate`` per second, from ``run(stop)`` until ``stop`` is set
    and at least ``minimum`` were produced: the load spans every fault by construction."""

    settings: Settings
    webhooks: list[Webhook]
    minimum: int
    rate: float
    items: list[Delivery] = field(default_factory=list)

    @property
    def produced(self) -> int:
        return len(self.items)

    @property
    def expected(self) -> set[str]:
        return {item.delivery_id for item in self.items}

    async def run(self, stop: asyncio.Event) -> None:
        """Produce every record once, acknowledged (acks=all), at a steady pace."""
        topic = Topics.from_settings(self.settings).deliveries
        async with kafka.started(kafka.producer(self.settings)) as producer:
            began = time.monotonic()
            while self.produced < self.minimum or not stop.is_set():
                n = self.produced
                batch = [delivery(self.webhooks[(n + i) % len(self.webhooks)], conversation=(n + i) % 500, seq=n + i)
                         for i in range(BATCH)]
                await self._send(producer, topic, batch)
                self.items.extend(batch)
                ahead = began + self.produced / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the load, not waiting for an event

    @staticmethod
    async def _send(producer: AIOKafkaProducer, topic: str, batch: list[Delivery]) -> None:
        futures = [await producer.send(topic, value=d.value, key=d.key, headers=d.headers) for d in batch]
        await asyncio.wait_for(asyncio.gather(*futures), 120)


async def committed_total(settings: Settings, group: str, topic: str) -> int:
    """What a consumer group committed on ``topic``, summed over its partitions."""
    async with kafka.started(kafka.admin(settings)) as admin:
        offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


class Campaign:
    """Faults one after another under a load; adds up the records in flight at each: produced but not
    committed when the fault began, plus those produced until the system was whole again."""

    def __init__(self, settings: Settings, load: Load, receiver: Receiver, logs: Path,
                 whole: Callable[[], Awaitable[None]] | None = None) -> None:
        self.settings, self.load, self.receiver, self.logs = settings, load, receiver, logs
        self.workers: list[asyncio.subprocess.Process] = []  # the delivery processes that must stay up
        self._whole = whole
        self.topics = Topics.from_settings(settings)
        self.group = f"{settings.topic_prefix}.delivery"
        self.bound = 0
        self.log: list[str] = []

    @asynccontextmanager
    async def fault(self, name: str) -> AsyncIterator[None]:
        committed = await committed_total(self.settings, self.group, self.topics.deliveries)
        began = time.monotonic()
        yield
        if self._whole is not None:
            await self._whole()
        in_flight = self.load.produced - committed
        self.bound += in_flight
        self.log.append(f"{name}: {in_flight} records in flight, over after {time.monotonic() - began:.1f} s")

    async def progress(self, count: int = PROGRESS, timeout: float = 120.0) -> None:
        """Until ``count`` more deliveries reached the receiver; fails at once if a watched worker exits."""
        arrived = asyncio.ensure_future(self.receiver.wait_for(len(self.receiver.requests) + count, timeout=timeout))
        exits = [asyncio.ensure_future(process.wait()) for process in self.workers]
        try:
            await asyncio.wait([arrived, *exits], return_when=asyncio.FIRST_COMPLETED)
            assert arrived.done(), f"a delivery worker exited during the faults\n{log_tails(self.logs)}"
            arrived.result()
        finally:
            for waiting in (arrived, *exits):
                waiting.cancel()

    def print_log(self) -> None:
        for line in self.log:
            print(f"\n  {line}", end="")


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


def assert_nothing_lost(result: Tally) -> None:
    assert result.lost == 0, result
    assert result.dead_lettered == 0, result
    assert result.duplicated <= result.duplicate_bound, result


def log_tails(logs: Path) -> str:
    """The end of every worker log in ``logs`` (for an assertion message)."""
    return "\n".join(f"{log.name}: ...{log.read_text(errors='replace')[-1500:]}" for log in sorted(logs.glob("*.log")))


def assert_clean_logs(logs: Path) -> None:
    """No worker took the faults for a record's failure, nor blamed them on the security settings."""
    for log in sorted(logs.glob("worker*.log")):
        text = log.read_text(errors="replace")
        assert '"delivery.internal_error"' not in text, f"{log.name}: a broker fault was a record's internal error"
        assert "TLS listener does that" not in text, f"{log.name}: a network fault was blamed on the security settings"
