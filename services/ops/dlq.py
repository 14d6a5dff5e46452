"""Reading the dead-letter topic: a ``DeadLetter`` per record matching a ``DlqFilter`` (both in
``services.contract.dead_letters``), listing a time window.

The DLQ is read by time window with a group-less consumer: listing
never moves a committed offset and reads only the window's offsets.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from services.contract import headers as h
from services.contract.dead_letters import DeadLetter, DlqFilter
from services.contract.topics import Topics
from services.replay.window import ReadStats, Window, offset_ranges, read_ranges, reader
from services.shared import kafka
from services.shared.settings import Settings


@dataclass
class Listing:
    items: list[DeadLetter]
    matched: int  # distinct deliveries
    stats: ReadStats
    ranges: dict[int, tuple[int, int]]
    superseded: int = 0  # matching records of a delivery that has a later dead letter (not listed)


Entry = tuple[float, int, int, DeadLetter]


class _Newest:
    """The newest ``limit`` (0: all) dead letters, one per delivery id: a later one replaces an earlier one.

    A crash between a retry record's acknowledgement and the commit can start two retry chains for one
    delivery, so one delivery id may have several dead letters; they are one delivery. An earlier
    duplicate of an entry already evicted is older than everything kept, so it never comes back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.heap: list[Entry] = []
        self.kept: dict[str, Entry] = {}

    def add(self, dead: DeadLetter) -> None:
        entry = (dead.dead_lettered_at, dead.partition, dead.offset, dead)
        current = self.kept.get(dead.delivery_id)
        if current is not None:
            if entry[:3] > current[:3]:
                self.heap[self.heap.index(current)] = entry  # rare: a duplicate chain
                heapq.heapify(self.heap)
                self.kept[dead.delivery_id] = entry
            return
        if self.limit <= 0 or len(self.heap) < self.limit:
            heapq.heappush(self.heap, entry)
        elif entry[:3] > self.heap[0][:3]:
            evicted = heapq.heapreplace(self.heap, entry)
            del self.kept[evicted[3].delivery_id]
        else:
            return
        self.kept[dead.delivery_id] = entry

    def items(self) -> list[DeadLetter]:
        return [entry[3] for entry in sorted(self.heap, key=lambda e: e[:3])]


async def list_dead_letters(settings: Settings, filters: DlqFilter, window: Window, *, limit: int = 100,
                            ) -> Listing:
    """The newest ``limit`` (0: all) matching deliveries of the window, oldest first: one per delivery id,
    its latest dead letter. ``matched`` counts distinct delivery ids."""
    topic = Topics.from_settings(settings).dlq
    stats = ReadStats()
    newest = _Newest(limit)
    seen: set[int] = set()  # hashes of matching delivery ids: 8 bytes of entropy each, not the strings
    records = 0
    async with kafka.started(reader(settings)) as consumer:
        ranges = await offset_ranges(consumer, topic, window)
        async for batch in read_ranges(consumer, topic, ranges, stats):
            for record in batch:
                dead = DeadLetter.from_record(record)
                if not filters.matches(dead):
                    continue
                records += 1
                seen.add(hash(dead.delivery_id))
                newest.add(dead)
    return Listing(newest.items(), len(seen), stats, ranges, superseded=records - len(seen))


async def find_dead_letters(settings: Settings, delivery_id: str, window: Window) -> list[DeadLetter]:
    """Every DLQ record of one delivery in the window, oldest first."""
    topic = Topics.from_settings(settings).dlq
    wanted = delivery_id.encode()
    found: list[DeadLetter] = []
    async with kafka.started(reader(settings)) as consumer:
        ranges = await offset_ranges(consumer, topic, window)
        async for records in read_ranges(consumer, topic, ranges):
            for record in records:
                if any(k == h.DELIVERY_ID and v == wanted for k, v in record.headers or ()):
                    found.append(DeadLetter.from_record(record))
    return sorted(found, key=lambda d: (d.dead_lettered_at, d.partition, d.offset))
