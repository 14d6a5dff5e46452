"""Reading the attempt log (``<prefix>.webhooks.attempts``): one JSON record per delivery attempt.

Records are keyed by webhook id, so one webhook's attempts live in one partition (the producer's
default murmur2 partitioner): a lookup reads that partition only, by time window, group-less.
Fields (written by the delivery worker): delivery_id, event_id, webhook_id, account_id, event_type,
attempt, status, error_class, error, duration_ms, outcome, next_delay_ms, time, response excerpt.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from services.replay.dlq import epoch
from services.replay.window import read_ranges, topic_ends

CHUNK = 2000
DEFAULT_MAX_SCAN = 500_000


def partition_of(webhook_id: int, partitions: int) -> int:
    """The partition a record keyed by this webhook id lands in (Kafka's default partitioner)."""
    return int(DefaultPartitioner()(str(webhook_id).encode(), list(range(partitions)), list(range(partitions))))


def parse(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def attempt_time(attempt: dict[str, Any]) -> float | None:
    value = attempt.get("time")
    return epoch(str(value)) if value is not None else None


def _webhook_of(attempt: dict[str, Any]) -> int | None:
    try:
        return int(attempt.get("webhook_id"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


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
                            max_scan: int = DEFAULT_MAX_SCAN) -> tuple[list[dict[str, Any]], bool]:
    """Attempts of one delivery in a window, oldest first, and whether ``max_scan`` cut the read short."""
    partition, start, end = await _partition_bounds(consumer, topic, webhook_id, since_ms, until_ms)
    truncated = end - start > max_scan
    found: list[dict[str, Any]] = []
    async for records in read_ranges(consumer, topic, {partition: (max(start, end - max_scan), end)}):
        for record in records:
            attempt = parse(record.value)
            if attempt is not None and attempt.get("delivery_id") == delivery_id:
                found.append(attempt)
    return sorted(found, key=lambda a: (attempt_time(a) or 0, a.get("attempt") or 0)), truncated


async def recent_attempts(consumer: AIOKafkaConsumer, topic: str, webhook_id: int, *, since_ms: int | None,
                          limit: int = 100, max_scan: int = DEFAULT_MAX_SCAN) -> list[dict[str, Any]]:
    """The newest ``limit`` attempts of one webhook since ``since_ms``, newest first.

    Reads its partition backwards in chunks, so the cost follows ``limit``, not the window.
    """
    partition, low, end = await _partition_bounds(consumer, topic, webhook_id, since_ms, None)
    found: list[dict[str, Any]] = []
    scanned = 0
    while end > low and len(found) < limit and scanned < max_scan:
        start = max(low, end - CHUNK)
        chunk: list[dict[str, Any]] = []
        async for records in read_ranges(consumer, topic, {partition: (start, end)}):
            for record in records:
                attempt = parse(record.value)
                if attempt is not None and _webhook_of(attempt) == webhook_id:
                    chunk.append(attempt)
        found.extend(reversed(chunk))
        scanned += end - start
        end = start
    return found[:limit]
