"""The delivery worker's intake: what is fetched and held, and when fetching pauses.

Each fetched record becomes a ``Job`` (or, with headers that do not parse, a malformed record to
dead-letter) counted against two budgets: ``max_in_flight`` records and ``max_in_flight_bytes``. At
either, every assigned partition pauses (``backpressure``) until both fall below ``RESUME_AT`` of
their bound. A retry tier's head that is not due yet pauses its partition (``DueGate``) until a
timer resumes it; it is held at most its tier delay times (1 + jitter) past when it was written (or
past now, if its timestamp is ahead of this clock), whatever its due-time header says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.contract import headers as h
from services.contract.deliveries import DeliveryMeta
from services.contract.topics import Topics
from services.delivery.commits import Commits
from services.delivery.ledger import BACKPRESSURE, LOADING, PartitionLedger, Pauses
from services.delivery.tiers import DueGate
from services.shared import logging as logs
from services.shared.settings import DeliverySettings

log = logs.get("delivery")

RESUME_AT = 0.75  # of max_in_flight: backpressure lifts below this
SIZE_WEIGHT = 0.1  # of the newest record in the moving average of record sizes
HOLD_SLACK_S = 0.01  # due times travel with millisecond resolution: never cap a hold below its due time


@dataclass(slots=True, eq=False)
class Job:
    """One record held by the worker (not the whole ConsumerRecord: 10,000 of these may wait)."""

    tp: TopicPartition
    offset: int
    ledger: PartitionLedger
    key: bytes  # ordering key: the record's key, or ``<webhook>:-``
    record_key: bytes | None
    value: bytes
    header_names: tuple[str, ...]  # one tuple shared by the records with the same header names
    header_values: tuple[bytes | None, ...]
    webhook_id: int
    meta: DeliveryMeta
    fetched_at: float
    size: int  # bytes held: value, key and headers

    @property
    def headers(self) -> list[tuple[str, bytes | None]]:
        """The record's headers as fetched (a retry or dead letter starts from them)."""
        return list(zip(self.header_names, self.header_values, strict=True))


@dataclass(slots=True, eq=False)
class Malformed:
    """A record whose headers do not parse: dead-lettered as it is."""

    tp: TopicPartition
    ledger: PartitionLedger
    record: Any
    error: str
    size: int


def _size(record: Any) -> int:
    headers = sum(len(name) + len(value or b"") for name, value in record.headers or ())
    return len(record.value or b"") + len(record.key or b"") + headers


NAME_SEQUENCES = 1024  # distinct sequences of header names shared between records; past it, each keeps its own
_NAMES: dict[tuple[str, ...], tuple[tuple[str, ...], int]] = {}  # names -> (the shared tuple, their length)


def _split(headers: Any) -> tuple[tuple[str, ...], tuple[bytes | None, ...], int]:
    """Record headers as (names, values, size): the names one tuple shared by every record that has the same
    ones (records of one stage all do), the values a tuple (about 550 bytes less per held record than a list
    of pairs), and their size as ``_size`` counts it."""
    names, values = zip(*headers, strict=True)
    shared = _NAMES.get(names)
    if shared is None:
        shared = (names, sum(map(len, names)))
        if len(_NAMES) < NAME_SEQUENCES:
            _NAMES[names] = shared
    return shared[0], values, shared[1] + sum(map(len, filter(None, values)))


class Intake:
    """``Intake(settings, topics, jitter, commits)``: turns fetched records into jobs within the budgets."""

    def __init__(self, settings: DeliverySettings, topics: Topics, jitter: float, commits: Commits) -> None:
        self.max_in_flight = settings.max_in_flight
        self.max_in_flight_bytes = settings.max_in_flight_bytes
        self._commits = commits
        self._delays = topics.retry_topics
        # How long past its write a record of each input topic may be held: its tier's delay times (1 + jitter).
        longest = max(topics.retry_topics.values(), default=0.0)
        self._max_hold = {topic: topics.retry_topics.get(topic, longest) * (1 + jitter) + HOLD_SLACK_S
                          for topic in topics.delivery_inputs}
        self.in_flight = 0
        self.in_flight_bytes = 0
        self._record_size = 0.0  # moving average of the records taken in, to size fetches
        self.max_in_flight_seen = 0
        self.max_in_flight_bytes_seen = 0
        self._backpressured = False
        self._roomy: asyncio.Event | None = None  # set once there is room again (``hold``)
        self._consumer: AIOKafkaConsumer | None = None
        self.pauses: Pauses | None = None
        self.gate: DueGate | None = None

    def bind(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.pauses = Pauses(consumer)
        self.gate = DueGate(consumer, self.pauses, self._delays)

    def accept(self, tp: TopicPartition, batch: Iterable[Any], now: float,
               admit: Callable[[Job], None], reject: Callable[[Malformed], None]) -> None:
        """Take the records of ``batch`` in offset order while the budgets allow and none is held back."""
        assert self.gate is not None and self._consumer is not None
        for record in batch:
            if self.full():  # the rest is fetched again once backpressure lifts
                self._consumer.seek(tp, record.offset)
                break
            if self._commits.already_done(tp, record.offset):  # completed before a crash or rebalance
                continue
            try:
                meta = DeliveryMeta.from_headers(h.to_dict(record.headers))
            except Exception as exc:  # whatever the headers hold, the record is malformed
                size = _size(record)
                ledger = self._take(tp, record.offset, None, size)
                reject(Malformed(tp, ledger, record, f"{type(exc).__name__}: {exc}", size))
                continue
            if meta.due_at is not None and meta.due_at > now:
                due = min(meta.due_at, self._latest_due(tp.topic, record.timestamp, now))
                if due > now:
                    self.gate.hold(tp, record.offset, due, now)
                    break
            names, values, headers_size = _split(record.headers)
            size = len(record.value or b"") + len(record.key or b"") + headers_size
            ledger = self._take(tp, record.offset, meta.due_at, size)
            key = record.key or f"{meta.webhook_id}:-".encode()
            admit(Job(tp, record.offset, ledger, key, record.key, record.value, names, values,
                      meta.webhook_id, meta, now, size))

    def room(self) -> int:
        """Records to fetch at most: what fits under both budgets (bytes estimated from the records seen)."""
        room = self.max_in_flight - self.in_flight
        if self._record_size:
            room = min(room, int((self.max_in_flight_bytes - self.in_flight_bytes) // self._record_size))
        return max(1, room)

    def _latest_due(self, topic: str, timestamp_ms: int | None, now: float) -> float:
        """The latest a record of ``topic`` written at ``timestamp_ms`` can be due: a producer whose clock
        is ahead (in the due-time header or the timestamp) cannot hold a tier's partition longer."""
        written = min(timestamp_ms / 1000, now) if timestamp_ms and timestamp_ms > 0 else now
        return written + self._max_hold.get(topic, 0.0)

    def _take(self, tp: TopicPartition, offset: int, due_at: float | None, size: int) -> PartitionLedger:
        ledger = self._commits.add(tp, offset, due_at)
        self.in_flight += 1
        self.in_flight_bytes += size
        self._record_size += (size - self._record_size) * SIZE_WEIGHT
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        self.max_in_flight_bytes_seen = max(self.max_in_flight_bytes_seen, self.in_flight_bytes)
        return ledger

    def let_go(self, jobs: list[Job]) -> None:
        """Queued jobs dropped (not done, not committed: redone by whoever reads them next)."""
        self.in_flight -= len(jobs)
        self.in_flight_bytes -= sum(job.size for job in jobs)

    def finish(self, ledger: PartitionLedger, offset: int, size: int) -> None:
        """The record at ``offset`` is done: its budget is free, its offset may be committed."""
        self._commits.done(ledger, offset)
        self.in_flight -= 1
        self.in_flight_bytes -= size
        self.relieve()

    # --- backpressure and pauses ---------------------------------------------------------------
    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight or self.in_flight_bytes >= self.max_in_flight_bytes

    @property
    def backpressured(self) -> bool:
        return self._backpressured

    async def hold(self, within_s: float) -> None:
        """Full: wait until the budgets fall below ``RESUME_AT``, pausing nothing (what the consumer fetched
        ahead stays buffered: a paused partition's is dropped, and fetched and decoded again after its
        resume); still full after ``within_s``, pause every partition (``check_backpressure``)."""
        self._roomy = asyncio.Event()
        try:
            async with asyncio.timeout(within_s):
                await self._roomy.wait()
        except TimeoutError:
            self.check_backpressure()
        finally:
            self._roomy = None

    def check_backpressure(self) -> None:
        """Full: pause every partition, so that polling goes on (the group's poll interval) without taking."""
        if self._backpressured or not self.full():
            return
        assert self._consumer is not None and self.pauses is not None
        self._backpressured = True
        for tp in self._consumer.assignment():
            self.pauses.add(tp, BACKPRESSURE)
        log.info("delivery.backpressure", in_flight=self.in_flight, in_flight_bytes=self.in_flight_bytes)

    def relieve(self) -> None:
        if not (self._backpressured or self._roomy) or self.in_flight > self.max_in_flight * RESUME_AT \
                or self.in_flight_bytes > self.max_in_flight_bytes * RESUME_AT:
            return
        if self._roomy is not None:
            self._roomy.set()
        if self._backpressured:
            assert self.pauses is not None
            self._backpressured = False
            for tp in self.pauses.partitions(BACKPRESSURE):
                self.pauses.discard(tp, BACKPRESSURE)

    def loading(self, assigned: set[TopicPartition]) -> None:
        """New partitions: fetch nothing until ``loaded`` (and while backpressure holds)."""
        assert self.pauses is not None
        for tp in assigned:
            self.pauses.add(tp, LOADING)
            if self._backpressured:
                self.pauses.add(tp, BACKPRESSURE)

    def loaded(self, assigned: set[TopicPartition]) -> None:
        assert self.pauses is not None
        for tp in assigned:
            self.pauses.discard(tp, LOADING)

    def forget(self, revoked: set[TopicPartition]) -> None:
        """Partitions taken away: no hold or pause of theirs remains."""
        assert self.gate is not None and self.pauses is not None
        self.gate.forget(revoked)
        self.pauses.forget(revoked)

    def close(self) -> None:
        if self.gate is not None:
            self.gate.close()

    def held(self) -> int:
        """Records held: in flight, or waiting for a due time."""
        return self.in_flight + (len(self.gate) if self.gate is not None else 0)
