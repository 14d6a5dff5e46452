"""The router's Kafka shell: consume events in batches, route them (pure core), produce, then commit.

One batch at a time, from one coroutine: ``getmany`` → ``route`` every record → ``send`` every
delivery and invalid record in a loop, then gather the futures (aiokafka #528) → await the acks,
bounded → commit the batch's next offsets. Offsets are never committed before the acks, so a crash
re-routes at most the batches in flight, with the same delivery ids (at-least-once). The commit runs
while the next batch is fetched, routed and produced (it is a broker round trip that would otherwise
add to every event's routing latency); the next commit, a rebalance, an idle check and shutdown each
wait for it first, so commits stay in batch order and none is lost.

A rebalance waits for the batch in flight (``on_partitions_revoked`` takes the batch lock); a batch
fetched before a rebalance and not yet started is dropped, and refetched from the committed offsets
by whoever owns its partitions now.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, MessageSizeTooLargeError

from services.contract import headers as h
from services.contract.times import iso_time
from services.contract.topics import Topics
from services.router.core import (
    IncomingEvent,
    Invalid,
    Routed,
    RoutePolicy,
    RouteResult,
    epoch_of,
    event_type_label,
    route,
)
from services.shared import kafka
from services.shared import logging as logs
from services.shared.errors import KafkaUnavailableError
from services.shared.metrics import Metrics
from services.shared.runtime import first_of
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable

log = logs.get("router")

Batch = Mapping[TopicPartition, Sequence[Any]]
IDLE_POLL_MS = 500
# Delivery headers on top of the largest routable body. Kept small: with the defaults (1,000,000-byte
# events) the client-side limit stays below the broker's 1,048,588-byte record limit, so most over-size
# invalid records already fail in the client (and are copied without their body). One the broker
# refuses anyway (a topic with a smaller max.message.bytes) is handled by ``_requarantine``.
HEADROOM_BYTES = kafka.RECORD_HEADROOM_BYTES


def default_group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}.router"



class _Producers(NamedTuple):
    deliveries: AIOKafkaProducer  # idempotent
    invalid: AIOKafkaProducer  # not idempotent (see ``RouterWorker.run``)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: RouterWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.assigned(assigned)


class RouterWorker:
    """Consumer group ``<prefix>.router`` on the events topic; many instances share its partitions.

    ``until_idle``: return once every assigned partition is routed to its end (tests, benchmarks).
    ``max_records``: return after routing that many events.
    """

    name = "router"

    def __init__(self, settings: Settings, table: SubscriptionTable, metrics: Metrics, *,
                 group_id: str | None = None, until_idle: bool = False, max_records: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._table = table
        self._metrics = metrics
        self._topics = Topics.from_settings(settings)
        self._policy = RoutePolicy.from_settings(settings.router)
        self.group_id = group_id or default_group_id(settings)
        self._until_idle = until_idle
        self._max_records = max_records
        self._clock = clock
        self._lock = asyncio.Lock()
        self._rebalancing = False
        self._generation = 0
        self._running = False
        self._joined = False  # had a first assignment from the group (possibly empty)
        self._has_partitions = asyncio.Event()
        self.partitions: frozenset[int] = frozenset()
        self.events_routed = 0  # events handled (routed, no subscriber or invalid) and committed
        self.deliveries_produced = 0
        self._committing: asyncio.Future[None] | None = None

    def ready(self) -> bool:
        """Running, in the consumer group, and given a first assignment (empty if more routers than partitions)."""
        return self._running and self._joined

    async def wait_assigned(self) -> None:
        """Return once this router owns at least one partition of the events topic."""
        await self._has_partitions.wait()

    # --- rebalance ------------------------------------------------------------------------------
    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Wait for the batch in flight (it commits), and start no other until the new assignment."""
        async with self._lock:
            self._rebalancing = True
            await self._settle()
        for tp in partitions:  # the new owner reports these partitions' lag
            self._metrics.consumer_lag.remove(self.group_id, tp.topic, str(tp.partition))
        log.info("router.partitions_revoked", partitions=len(partitions))

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self._rebalancing = False
        self._generation += 1
        self.partitions = frozenset(tp.partition for tp in partitions)
        self._joined = True
        if partitions:
            self._has_partitions.set()
        else:
            self._has_partitions.clear()
        log.info("router.partitions_assigned", partitions=sorted(self.partitions))

    # --- the loop -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        if not await first_of(self._table.wait_ready(), stop):
            return
        async with kafka.started(kafka.admin(self._settings)) as admin:
            await kafka.check_record_limits(admin, [self._topics.deliveries], self._policy.max_event_bytes)
        max_request = self._policy.max_event_bytes + HEADROOM_BYTES
        producer = kafka.producer(self._settings, max_request_size=max_request)
        # Invalid records go through their own producer, not idempotent: a record the broker refuses
        # as too large breaks an idempotent producer's sequence for the partition (every later send
        # fails with OutOfOrderSequenceNumber), so the copy without its body could never be written.
        quarantine = kafka.producer(self._settings, max_request_size=max_request, enable_idempotence=False)
        consumer = kafka.consumer(self._settings, group_id=self.group_id,
                                  max_poll_records=self._settings.router.batch_size)
        async with kafka.started(producer), kafka.started(quarantine), kafka.started(consumer):
            consumer.subscribe([self._topics.events], listener=_Rebalance(self))
            self._running = True
            log.info("router.started", group=self.group_id, topic=self._topics.events,
                     validation=self._policy.validation, webhooks=len(self._table))
            try:
                await self._loop(consumer, _Producers(producer, quarantine), stop)
            finally:
                self._running = self._joined = False
        log.info("router.stopped", events=self.events_routed, deliveries=self.deliveries_produced)

    async def _loop(self, consumer: AIOKafkaConsumer, producers: _Producers, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and not self._done():
                poll = consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=self._limit())
                fetch = asyncio.ensure_future(poll)
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    await asyncio.gather(fetch, return_exceptions=True)
                    return
                batch, generation = fetch.result(), self._generation
                if not batch:
                    await self._settle()
                    await self._refresh_lag(consumer)
                    if self._until_idle and await self._idle(consumer):
                        return
                    continue
                async with self._lock:
                    if self._rebalancing or generation != self._generation:
                        log.info("router.batch_dropped", reason="rebalance",
                                 records=sum(len(r) for r in batch.values()))
                        continue
                    await self._process(consumer, producers, batch)
        finally:
            stopping.cancel()
            await self._settle()

    def _done(self) -> bool:
        return self._max_records is not None and self.events_routed >= self._max_records

    def _limit(self) -> int:
        size = self._settings.router.batch_size
        if self._max_records is None:
            return size
        return max(1, min(size, self._max_records - self.events_routed))

    async def _idle(self, consumer: AIOKafkaConsumer) -> bool:
        """Every assigned partition is routed and committed up to its end offset."""
        assigned = consumer.assignment()
        if not assigned or self._rebalancing:
            return False
        ends = await consumer.end_offsets(list(assigned))
        for tp, end in ends.items():
            if (await consumer.committed(tp) or 0) < end:
                return False
        return True

    # --- one batch ------------------------------------------------------------------------------
    async def _process(self, consumer: AIOKafkaConsumer, producers: _Producers, batch: Batch) -> None:
        routed_time = iso_time(self._clock())
        lookup = self._table.matching
        policy = self._policy
        results = [
            route(IncomingEvent(r.topic, r.partition, r.offset, r.key, r.value, r.headers), lookup,
                  routed_time=routed_time, policy=policy)
            for records in batch.values() for r in records
        ]
        await self._produce(producers, results)
        acked = self._clock()
        await self._settle()  # the previous batch's commit first: commits stay in order
        conclude = self._conclude(consumer, batch, results, acked)
        if self._max_records is None:
            self._committing = asyncio.ensure_future(conclude)
        else:  # a bounded run counts committed events exactly before fetching more
            await conclude

    async def _conclude(self, consumer: AIOKafkaConsumer, batch: Batch, results: Sequence[RouteResult],
                        acked: float) -> None:
        """Commit an acknowledged batch, then count it (``events_routed`` counts committed events)."""
        await self._commit(consumer, {tp: records[-1].offset + 1 for tp, records in batch.items()})
        self._observe(results, acked)
        self._observe_lag(consumer, batch)

    async def _settle(self) -> None:
        """Wait for the commit in flight, if any (its errors are raised here)."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _produce(self, producers: _Producers, results: Iterable[RouteResult]) -> None:
        """Send every record of the batch from this coroutine, then await all acks (bounded)."""
        deliveries = self._topics.deliveries
        send = producers.deliveries.send
        quarantine = producers.invalid
        timeout = self._settings.kafka.send_timeout_s
        try:
            futures = []
            held: list[Invalid] = []
            for result in results:
                if isinstance(result, Routed):
                    for d in result.deliveries:
                        futures.append(await send(deliveries, value=d.value, key=d.key, headers=d.headers))
                else:
                    held.append(result)
            quarantined = [await self._quarantine(quarantine, result) for result in held]
            acks = await asyncio.wait_for(asyncio.gather(*futures, *quarantined, return_exceptions=True), timeout)
            refused = self._refused(acks, held)
            for result in refused:
                await asyncio.wait_for(self._requarantine(quarantine, result), timeout)
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailableError(f"router could not produce a batch within {timeout}s: "
                                        f"{type(exc).__name__}: {exc}") from exc

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

    async def _quarantine(self, producer: AIOKafkaProducer, result: Invalid) -> Any:
        """Send an invalid event to the invalid topic; without its body if that is too large to copy."""
        try:
            return await producer.send(self._topics.invalid, value=result.value, key=result.key,
                                       headers=result.headers)
        except MessageSizeTooLargeError:
            return await self._without_body(producer, result, "over the producer's max request size")

    async def _requarantine(self, producer: AIOKafkaProducer, result: Invalid) -> None:
        """The broker refused the batch holding this record: send it alone, then without its body.

        Records batched with an over-size one are refused with it; alone, they fit.
        """
        log.warning("router.invalid_batch_refused", event_id=result.event_id, reason=result.reason,
                    size=len(result.value or b""))
        try:
            await (await self._quarantine(producer, result))
        except MessageSizeTooLargeError:
            await (await self._without_body(producer, result, "refused by the broker as too large"))

    async def _without_body(self, producer: AIOKafkaProducer, result: Invalid, why: str) -> Any:
        size = len(result.value or b"")
        headers = h.replace(result.headers, {h.INVALID_DETAIL: f"{result.detail}; the {size}-byte body is not "
                                             f"copied ({why}): read it at the source offset"})
        return await producer.send(self._topics.invalid, value=None, key=result.key, headers=headers)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await kafka.commit(consumer, offsets)
        except (KafkaError, IllegalStateError) as exc:
            # The group rebalanced under us, or the broker is away: whoever owns the partitions next
            # re-routes from the last commit (same ids); a later batch's commit supersedes this one.
            log.warning("router.commit_failed", error=f"{type(exc).__name__}: {exc}",
                        partitions=sorted(tp.partition for tp in offsets))

    # --- observability --------------------------------------------------------------------------
    def _observe(self, results: Sequence[RouteResult], acked: float) -> None:
        m = self._metrics
        outcomes: Counter[tuple[str, str]] = Counter()
        reasons: Counter[str] = Counter()
        produced = 0
        for result in results:
            outcomes[event_type_label(result.event_type), result.outcome] += 1
            if isinstance(result, Invalid):
                reasons[result.reason] += 1
                log.info("event.invalid", event_id=result.event_id, event_type=result.event_type,
                         account_id=result.account_id, reason=result.reason, detail=result.detail)
                continue
            fanout = len(result.deliveries)
            produced += fanout
            m.fanout.observe(fanout)
            if fanout:
                started = epoch_of(result.event_time)
                if started is not None:
                    m.routing_latency.observe(max(0.0, acked - started))
            log.debug("event.routed", event_id=result.event_id, event_type=result.event_type,
                      account_id=result.account_id, fanout=fanout)
        for (event_type, outcome), count in outcomes.items():
            m.events_consumed.labels(event_type, outcome).inc(count)
        for reason, count in reasons.items():
            m.events_invalid.labels(reason).inc(count)
        m.deliveries_routed.inc(produced)
        m.router_batch.observe(len(results))
        self.events_routed += len(results)
        self.deliveries_produced += produced

    def _observe_lag(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        assigned = consumer.assignment()
        for tp, records in batch.items():
            highwater = consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                lag = max(0, highwater - (records[-1].offset + 1))
                self._metrics.consumer_lag.labels(self.group_id, tp.topic, str(tp.partition)).set(lag)


    async def _refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag of every assigned partition, also when no records arrive (an idle router reads 0)."""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - await consumer.position(tp))
                self._metrics.consumer_lag.labels(self.group_id, tp.topic, str(tp.partition)).set(lag)
