"""The router's produce side: one routed batch's records out, and one awaitable for all their acks.

Deliveries are written in record batches built here, one per deliveries partition and up to the
producer's batch size, each handed to ``send_batch``: one future per record batch instead of one
per record, and no per-record ``send`` coroutine. The partition of a key is the producer's own
(``DefaultPartitioner``: murmur2 of the key over the topic's partitions), so a delivery key lands on
the same partition as when any other writer (replay) sends it; one key's records keep their order
because each partition's records are appended in batch order and submitted one batch at a time.

Invalid events go to the invalid topic through their own producer (not idempotent: a record the
broker refuses as too large breaks an idempotent producer's sequence for the partition), without
their body when it is too large to copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from services.contract import headers as h
from services.router.core import Delivery, Invalid, Routed, RouteResult
from services.shared import logging as logs
from services.shared.errors import KafkaUnavailableError

log = logs.get("router")

PARTITION_CACHE = 100_000  # delivery keys whose partition is remembered (one per webhook and conversation)


class Producers(NamedTuple):
    deliveries: AIOKafkaProducer  # idempotent
    invalid: AIOKafkaProducer  # not idempotent


class Outbox:
    """Writes routed batches: ``await send(results)`` hands every record to the producers and returns
    an awaitable that completes once all of them are acknowledged (bounded by ``timeout``), or raises
    ``KafkaUnavailableError``."""

    def __init__(self, producers: Producers, *, deliveries: str, invalid: str, timeout: float) -> None:
        self._producers = producers
        self._deliveries = deliveries
        self._invalid = invalid
        self._timeout = timeout
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}

    async def send(self, results: Iterable[RouteResult]) -> Awaitable[None]:
        try:
            held: list[Invalid] = []
            deliveries: list[Delivery] = []
            for result in results:
                if isinstance(result, Routed):
                    deliveries.extend(result.deliveries)
                else:
                    held.append(result)
            futures = await self._send_deliveries(deliveries)
            futures += [await self._quarantine(result) for result in held]
        except KafkaError as exc:
            raise self._unavailable(exc) from exc
        return self._acknowledged(futures, held)

    async def _send_deliveries(self, deliveries: Sequence[Delivery]) -> list[Any]:
        """One record batch per partition and producer batch size, submitted round-robin over the
        partitions (a partition whose previous batch is not yet drained holds up only its turn)."""
        if not deliveries:
            return []
        producer = self._producers.deliveries
        partition_of = await self._partition_function(producer)
        open_: dict[int, Any] = {}
        queues: dict[int, list[Any]] = {}
        for d in deliveries:
            partition = partition_of(d.key)
            batch = open_.get(partition)
            if batch is None or batch.append(key=d.key, value=d.value, timestamp=None, headers=d.headers) is None:
                batch = open_[partition] = producer.create_batch()
                queues.setdefault(partition, []).append(batch)
                batch.append(key=d.key, value=d.value, timestamp=None, headers=d.headers)  # a first record fits
        futures = []
        for turn in range(max(len(q) for q in queues.values())):
            for partition, queue in queues.items():
                if turn < len(queue):
                    queue[turn].close()
                    futures.append(await producer.send_batch(queue[turn], self._deliveries, partition=partition))
        return futures

    async def _partition_function(self, producer: AIOKafkaProducer) -> Any:
        partitions = sorted(await producer.partitions_for(self._deliveries))
        if partitions != self._partitions or len(self._partition_of) > PARTITION_CACHE:
            self._partitions, self._partition_of = partitions, {}
        cache, choose = self._partition_of, self._partitioner

        def partition_of(key: bytes) -> int:
            partition = cache.get(key)
            if partition is None:
                partition = cache[key] = choose(key, partitions, partitions)
            return partition
        return partition_of

    async def _acknowledged(self, futures: Sequence[Any], held: Sequence[Invalid]) -> None:
        try:
            acks = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), self._timeout)
            for result in self._refused(acks, held):
                await asyncio.wait_for(self._requarantine(result), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> KafkaUnavailableError:
        return KafkaUnavailableError(f"router could not produce a batch within {self._timeout}s: "
                                     f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _refused(acks: Sequence[object], held: Sequence[Invalid]) -> list[Invalid]:
        """Invalid records the broker refused as too large; any other failure is raised."""
        first = len(acks) - len(held)
        refused = []
        for i, ack in enumerate(acks):
            if not isinstance(ack, BaseException):
                continue
            if i >= first and isinstance(ack, MessageSizeTooLargeError):
                refused.append(held[i - first])
            else:
                raise ack
        return refused

    async def _quarantine(self, result: Invalid) -> Any:
        """Send an invalid event to the invalid topic; without its body if that is too large to copy."""
        try:
            return await self._producers.invalid.send(self._invalid, value=result.value, key=result.key,
                                                      headers=result.headers)
        except MessageSizeTooLargeError:
            return await self._without_body(result, "over the producer's max request size")

    async def _requarantine(self, result: Invalid) -> None:
        """The broker refused the batch holding this record: send it alone, then without its body.

        Records batched with an over-size one are refused with it; alone, they fit.
        """
        log.warning("router.invalid_batch_refused", event_id=result.event_id, reason=result.reason,
                    size=len(result.value or b""))
        try:
            await (await self._quarantine(result))
        except MessageSizeTooLargeError:
            await (await self._without_body(result, "refused by the broker as too large"))

    async def _without_body(self, result: Invalid, why: str) -> Any:
        size = len(result.value or b"")
        headers = h.replace(result.headers, {h.INVALID_DETAIL: f"{result.detail}; the {size}-byte body is not "
                                             f"copied ({why}): read it at the source offset"})
        return await self._producers.invalid.send(self._invalid, value=None, key=result.key, headers=headers)
