"""Reading the attempt log (``<prefix>.webhooks.attempts``): one JSON record per delivery attempt.

Records are keyed by webhook id, so one webhook's attempts live in one partition (the producer's
default murmur2 partitioner): a lookup reads that partition only, by time window, group-less.
Each record is an ``AttemptRecord`` (``services.contract.attempts``: the one module the writer and
every reader take their field names from).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from services.contract.attempts import AttemptRecord, decode
from services.replay.window import read_ranges, topic_ends

CHUNK = 2000
DEFAULT_MAX_SCAN = 500_000


def partition_of(webhook_id: int, partitions: int) -> int:
    """The partition a record keyed by this webhook id lands in (Kafka's default partitioner)."""
    return int(DefaultPartitioner()(str(webhook_id).encode(), list(range(partitions)), list(range(partitions))))


async def _partition_bounds(consumer: AIOKafkaConsumer, topic: str, webhook_id: int, since_ms: int | None,
                            until_ms: int | None) -> tuple[int, int, int]:
    ends = await topic_ends(consumer, topic)
    tp = next(t for t in ends if t.partition == partition_of(webhook_id, len(ends)))
    start = (await consumer.beginning_offsets([tp]))[tp]
    end = ends[tp]
    for at_ms, is_start in ((since_ms, True), (until_ms, False)):
        if at_ms is None:
            continue
        found = (await consumer.offsets_for_times({tp: max(0, at_ms)}))[tp]
        offset = found.offset if found is not None else end
        start, end = (max(start, offset), end) if is_start else (start, min(end, offset))
    return tp.partition, start, max(start, end)


async def delivery_attempts(consumer: AIOKafkaConsumer, topic: str, webhook_id: int, delivery_id: str, *,
                            since_ms: int | None, until_ms: int | None = None,
                            max_scan: int = DEFAULT_MAX_SCAN) -> tuple[list[AttemptRecord], bool]:
    """Attempts of one delivery in a window, oldest first, and whether ``max_scan`` cut the read short."""
    partition, start, end = await _partition_bounds(consumer, topic, webhook_id, since_ms, until_ms)
    truncated = end - start > max_scan
    found: list[AttemptRecord] = []
    async for records in read_ranges(consumer, topic, {partition: (max(start, end - max_scan), end)}):
        for record in records:
            attempt = decode(record.value)
            if attempt is not None and attempt.delivery_id == delivery_id:
                found.append(attempt)
    return sorted(found, key=lambda a: (a.at or 0, a.attempt)), truncated


async def recent_attempts(consumer: AIOKafkaConsumer, topic: str, webhook_id: int, *, since_ms: int | None,
                          limit: int = 100, max_scan: int = DEFAULT_MAX_SCAN) -> list[AttemptRecord]:
    """The newest ``limit`` attempts of one webhook since ``since_ms``, newest first.

    Reads its partition backwards in chunks, so the cost follows ``limit``, not the window.
    """
    partition, low, end = await _partition_bounds(consumer, topic, webhook_id, since_ms, None)
    found: list[AttemptRecord] = []
    scanned = 0
    while end > low and len(found) < limit and scanned < max_scan:
        start = max(low, end - CHUNK)
        chunk: list[AttemptRecord] = []
        async for records in read_ranges(consumer, topic, {partition: (start, end)}):
            for record in records:
                attempt = decode(record.value)
                if attempt is not None and attempt.webhook_id == webhook_id:
                    chunk.append(attempt)
        found.extend(reversed(chunk))
        scanned += end - start
        end = start
    return found[:limit]
