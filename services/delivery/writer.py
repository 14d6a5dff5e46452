"""The delivery worker's writes to Kafka, produced in batches: attempt records, retry-tier and
dead-letter records.

Every attempt writes one record to the attempt log (``Topics.attempts``, keyed by webhook id), and a
failed one its record to a retry tier or the DLQ. Sent with one ``producer.send`` each as deliveries
finish, nearly every record became its own small produce request: about 45 µs of CPU per attempt
record at 2,000 records/s, against about 12 µs when gathered; and a failing webhook's retries (say 600
records a second at 3,700 deliveries/s with 5% of the webhooks hanging) cost the worker a produce
request each, 6% of its CPU. So ``append`` gathers them for ``WINDOW_S`` and hands them to the
producer as one batch per topic and partition, the partition the producer itself would pick for the
key (murmur2; a record without a key goes to a random partition, as the producer's would).

``append`` returns the future of the record's window: set once the broker acknowledged every batch of
it, failed with the producer's error, or with ``KafkaUnavailableError`` when no acknowledgement came
within ``timeout_s``. An attempt is finished (its offset may be committed) only once that future is
set, as when each record was sent alone. Windows go out one at a time, in order, so the records of one
key keep their order within a topic. A record the producer would refuse as too large raises
``MessageSizeTooLargeError`` from ``append`` itself (that record's failure, not its window's).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from services.shared.errors import KafkaUnavailableError

WINDOW_S = 0.05  # how long the first record of a window waits for others
MAX_RECORD_BYTES = 1024 * 1024  # the producer's default max_request_size
PARTITION_CACHE = 65536  # (topic, key) pairs whose partition is remembered
RECORD_KAFKA_ERRORS = (MessageSizeTooLargeError,)  # Kafka errors about the record itself, not the broker


Headers = Sequence[tuple[str, bytes | None]]
# topic, key, value, headers, timestamp (ms)
Pending = tuple[str, bytes | None, bytes, list[tuple[str, bytes | None]], int]


class Window(asyncio.Future[None]):
    """The acknowledgement of one window of records: set, or failed, within the writer's ``timeout_s``."""


class BatchedWriter:
    """``BatchedWriter(timeout_s, max_record_bytes)``; ``bind(producer)``, then ``append(topic, key, value,
    headers)`` -> acknowledgement. ``max_record_bytes``: the producer's ``max_request_size``."""

    def __init__(self, timeout_s: float, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self._timeout_s = timeout_s
        self._max_record_bytes = max_record_bytes
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[Pending] = []
        self._window: Window | None = None
        self._opened_at = 0.0  # when the waiting window's first record came
        self._sender: asyncio.Task[None] | None = None
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._partitions: dict[str, list[int]] = {}

    def bind(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    def append(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> Window:
        """Queue one record; the future of its acknowledgement."""
        headers = headers if isinstance(headers, list) else list(headers or ())  # as the batch builder takes them
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) > self._max_record_bytes:
            raise MessageSizeTooLargeError(f"record of {len(value)} bytes for {topic} is over "
                                           f"{self._max_record_bytes} with its key and headers")
        self._pending.append((topic, key, value, headers, int(time.time() * 1000)))
        window = self._window
        if window is None:
            loop = asyncio.get_running_loop()
            window = self._window = Window(loop=loop)
            self._opened_at = time.monotonic()
            if self._sender is None:
                self._sender = loop.create_task(self._send_windows())
        return window

    def close(self) -> None:
        """Send nothing more: what waits fails (its attempts are redone by whoever reads them next)."""
        window, self._window, self._pending = self._window, None, []
        if window is not None and not window.done():
            window.set_exception(KafkaUnavailableError("the writer closed before this record was sent"))
            window.exception()  # retrieved: nobody may be left to await it

    async def _send_windows(self) -> None:
        """Each window ``WINDOW_S`` after its first record; while one is on its way the next one fills, and
        goes out once the first is acknowledged (one in flight: batches grow with the broker's latency)."""
        try:
            while self._window is not None:
                await asyncio.sleep(self._opened_at + WINDOW_S - time.monotonic())
                records, window = self._pending, self._window
                self._pending, self._window = [], None
                if window is not None:
                    await self._send(records, window)
        finally:
            self._sender = None

    async def _send(self, records: list[Pending], window: Window) -> None:
        assert self._producer is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                for topic in {record[0] for record in records}:
                    partitions = list(await self._producer.partitions_for(topic))  # as the producer lists them
                    if partitions != self._partitions.get(topic):  # new, or grown: the keys move
                        self._partitions[topic] = partitions
                        self._partition_of.clear()
                acks = [await self._producer.send_batch(batch, topic, partition=partition)
                        for (topic, partition), batch in self._batches(records)]
                for ack in acks:
                    await ack
        except TimeoutError:
            window.set_exception(KafkaUnavailableError(f"no produce acknowledgement within {self._timeout_s}s"))
        except Exception as exc:  # the producer's error: the broker's, for every record of the window
            window.set_exception(exc)
        except asyncio.CancelledError:
            window.cancel()
            raise
        else:
            window.set_result(None)
        if not window.cancelled():
            window.exception()  # retrieved here: its attempts may have been cancelled meanwhile

    def _batches(self, records: list[Pending]) -> list[tuple[tuple[str, int], Any]]:
        """The records as batches, each for the partition of its topic the producer would choose for its key."""
        assert self._producer is not None
        if len(self._partition_of) >= PARTITION_CACHE:
            self._partition_of.clear()
        open_: dict[tuple[str, int], Any] = {}  # (topic, partition) -> its batch being filled (a BatchBuilder)
        batches: list[tuple[tuple[str, int], Any]] = []
        for topic, key, value, headers, timestamp in records:
            partitions = self._partitions[topic]
            if key is None:
                place = (topic, random.choice(partitions))
            else:
                partition = self._partition_of.get((topic, key))
                if partition is None:
                    partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
                    self._partition_of[(topic, key)] = partition
                place = (topic, partition)
            batch = open_.get(place)
            if batch is None or batch.append(timestamp=timestamp, key=key, value=value, headers=headers) is None:
                batch = open_[place] = self._producer.create_batch()  # none yet, or full
                batch.append(timestamp=timestamp, key=key, value=value, headers=headers)
                batches.append((place, batch))
        return batches


def broker_side(exc: BaseException) -> bool:
    """Whether an error while concluding a record is the broker's (the worker stops and is run again once
    it answers; the record is redone) rather than the record's own (its ``internal`` failure). aiokafka
    raises ``KafkaTimeoutError`` from ``send()`` when its buffer stays full because the broker is away:
    taken for the record's, an unreachable broker dead-lettered deliveries the receivers had accepted."""
    if isinstance(exc, KafkaUnavailableError):
        return True
    return isinstance(exc, KafkaError) and not isinstance(exc, RECORD_KAFKA_ERRORS)
