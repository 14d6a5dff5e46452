"""Time windows over a topic, resolved to offsets, and reading exactly those offsets.

A window (``--since``/``--until``: ISO-8601 or relative like ``2h``, ``30m``, ``7d``) becomes one
half-open offset range per partition through ``offsets_for_times``: the first offset stamped at or
after ``since`` up to the first offset stamped at or after ``until`` (or the end offset taken now).
Everything inside the range is in the window; nothing outside it is read. Readers are group-less
consumers (``assign`` + ``seek``): they never commit, so nothing is ever consumed away.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.contract.times import iso
from services.shared import kafka
from services.shared.errors import KafkaUnavailableError, ValidationError
from services.shared.settings import Settings

Ranges = dict[int, tuple[int, int]]
"""partition -> (first offset, end offset), end exclusive."""

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
STALL_FETCHES = 20  # consecutive empty fetches (of FETCH_MS each) before a range read gives up


def parse_time(text: str, now: datetime, *, field_name: str = "since") -> datetime:
    """``2h`` (before ``now``), ``now``, or ISO-8601 (UTC when it names no zone)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        try:
            return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        except (OverflowError, ValueError):  # beyond what a date can hold (year 1 to 9999)
            raise ValidationError(f"--{field_name}: {text[:40]!r} reaches before the year 1", field_name) from None
    if text == "now":
        return now
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"--{field_name}: {text[:40]!r} is neither ISO-8601 nor relative like 2h, 30m, 7d",
                              field_name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, since: str | None, until: str | None, now: datetime | None = None) -> Window:
        now = now or datetime.now(UTC)
        window = cls(parse_time(since, now) if since else None,
                     parse_time(until, now, field_name="until") if until else None)
        if window.since and window.until and window.until <= window.since:
            raise ValidationError("--until must be after --since", "until")
        return window

    @property
    def since_ms(self) -> int | None:
        return int(self.since.timestamp() * 1000) if self.since else None

    @property
    def until_ms(self) -> int | None:
        return int(self.until.timestamp() * 1000) if self.until else None

    def describe(self) -> dict[str, str | None]:
        return {"since": iso(self.since), "until": iso(self.until)}


def reader(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """A group-less consumer: assign/seek only, no commits."""
    options: dict[str, Any] = {"max_poll_records": 5000, "fetch_max_wait_ms": 100,
                               "max_partition_fetch_bytes": 8 * 1024 * 1024}
    options.update(overrides)
    return kafka.consumer(settings, group_id=None, **options)


topic_ends = kafka.end_offsets  # works before and after an assignment


async def offset_ranges(consumer: AIOKafkaConsumer, topic: str, window: Window) -> Ranges:
    """The window as one offset range per partition of ``topic``."""
    ends = await topic_ends(consumer, topic)
    if not ends:
        raise KafkaUnavailableError(f"topic {topic} does not exist: run `akece-webhooks topics ensure`")
    tps = list(ends)
    low = dict(await consumer.beginning_offsets(tps))
    high = dict(ends)
    if window.since_ms is not None:
        low = await _offsets_at(consumer, tps, window.since_ms, ends)
    if window.until_ms is not None:
        high = await _offsets_at(consumer, tps, window.until_ms, ends)
    return {tp.partition: (min(low[tp], ends[tp]), max(min(low[tp], ends[tp]), min(high[tp], ends[tp])))
            for tp in tps}


async def _offsets_at(consumer: AIOKafkaConsumer, tps: list[TopicPartition], at_ms: int,
                      ends: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    found = await consumer.offsets_for_times({tp: max(0, at_ms) for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}


@dataclass
class ReadStats:
    records: int = 0
    partitions: dict[int, int] = field(default_factory=dict)


async def read_ranges(consumer: AIOKafkaConsumer, topic: str, ranges: Mapping[int, tuple[int, int]],
                      stats: ReadStats | None = None, *, fetch_ms: int = 500) -> AsyncIterator[list[Any]]:
    """Yield the records of each range, partition by partition chunks, in offset order per partition.

    Only ``[start, end)`` of each partition is returned. A partition is done when the consumer's
    position reaches ``end``; one that stops short of it (a range whose tail was deleted, or a
    transaction marker at the end) ends after ``STALL_FETCHES`` empty fetches with the end re-read.
    """
    todo = {TopicPartition(topic, p): end for p, (start, end) in ranges.items() if end > start}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, ranges[tp.partition][0])
    empty = 0
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=fetch_ms)
        empty = 0 if any(batches.values()) else empty + 1
        for tp, records in batches.items():
            end = todo.get(tp)
            if end is None:
                continue
            kept = records if records[-1].offset < end else [r for r in records if r.offset < end]
            if kept:
                if stats is not None:
                    stats.records += len(kept)
                    stats.partitions[tp.partition] = stats.partitions.get(tp.partition, 0) + len(kept)
                yield kept
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp]:
                consumer.pause(tp)
                del todo[tp]
        if empty >= STALL_FETCHES and todo:
            await _give_up_stalled(consumer, todo)
            empty = 0


async def _give_up_stalled(consumer: AIOKafkaConsumer, todo: dict[TopicPartition, int]) -> None:
    """Drop partitions whose log no longer reaches their end (or stops one short: a marker)."""
    now_ends = await consumer.end_offsets(list(todo))
    for tp in list(todo):
        position = await consumer.position(tp)
        if position >= min(todo[tp], now_ends[tp]) - 1:
            consumer.pause(tp)
            del todo[tp]
    if todo:
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in todo)
        raise KafkaUnavailableError(f"reading {names} made no progress: is the broker healthy?")
