"""The router's Kafka shell: consume events in batches, route them (pure core), produce, commit.

One coroutine runs the loop: ``getmany`` → ``core.route`` every record → ``outbox.Outbox.send`` hands
every record to the producer → ``commits.InFlight.add``, and on to the next batch while the
acknowledgements come in (at most ``AKECE_ROUTER_BATCHES_IN_FLIGHT`` batches waiting for them). A
batch's offsets are committed only after its acknowledgements and the previous batch's commit, so a
crash re-routes at most the batches in flight, with the same delivery ids (at-least-once), and one
delivery key's records keep their order (one producer, records appended in batch order).
``gauges.RouterGauges`` counts each batch once it is committed.

A rebalance waits for every batch in flight (``on_partitions_revoked`` takes the batch lock and
settles); a batch fetched before a rebalance and not yet started is dropped, and refetched from the
committed offsets by whoever owns its partitions now.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.contract.times import iso_time
from services.contract.topics import Topics
from services.router.commits import InFlight
from services.router.core import IncomingEvent, RoutePolicy, route
from services.router.fetch_pacing import FetchPacing
from services.router.gauges import RouterGauges
from services.router.outbox import Outbox, Producers
from services.shared import kafka
from services.shared import logging as logs
from services.shared.gc_tuning import tune_gc
from services.shared.memory import Trimmer
from services.shared.metrics import Metrics
from services.shared.runtime import first_of
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable

log = logs.get("router")

Batch = Mapping[TopicPartition, Sequence[Any]]
IDLE_POLL_MS = 500
# The producers' request size is the largest routable body plus delivery headers
# (``kafka.max_record_bytes``). Kept small: with the defaults (1,000,000-byte events) the client-side
# limit stays below the broker's 1,048,588-byte record limit, so most over-size invalid records
# already fail in the client (and are copied without their body). One the broker refuses anyway (a
# topic with a smaller max.message.bytes) is handled by ``Outbox._requarantine``.


def default_group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}.router"


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
        self._topics = Topics.from_settings(settings)
        self._policy = RoutePolicy.from_settings(settings.router)
        self.group_id = group_id or default_group_id(settings)
        self._gauges = RouterGauges(metrics, self.group_id)
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
        self._taken = 0  # events routed and produced, committed or still in flight
        self._in_flight: InFlight | None = None
        self._trimmer = Trimmer()  # full batches in a catch-up, then small ones: give the pages back
        self._pacing = FetchPacing(None, 0)  # the consumer's, once it is started

    @property
    def events_routed(self) -> int:
        """Events handled (routed, no subscriber or invalid) and committed."""
        return self._gauges.events

    @property
    def deliveries_produced(self) -> int:
        return self._gauges.deliveries

    def ready(self) -> bool:
        """Running, in the consumer group, and given a first assignment (empty if more routers than partitions)."""
        return self._running and self._joined

    async def wait_assigned(self) -> None:
        """Return once this router owns at least one partition of the events topic."""
        await self._has_partitions.wait()

    # --- rebalance ------------------------------------------------------------------------------
    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Wait for the batches in flight (they commit), and start no other until the new assignment."""
        async with self._lock:
            self._rebalancing = True
            if self._in_flight is not None:
                await self._in_flight.settle()
        self._gauges.forget(partitions)
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
        max_request = kafka.max_record_bytes(self._policy.max_event_bytes)
        producer = kafka.producer(self._settings, max_request_size=max_request)
        # Invalid records go through their own producer, not idempotent (see ``outbox``).
        quarantine = kafka.producer(self._settings, max_request_size=max_request, enable_idempotence=False)
        consumer = kafka.consumer(self._settings, group_id=self.group_id,
                                  max_poll_records=self._settings.router.batch_size)
        async with kafka.started(producer), kafka.started(quarantine), kafka.started(consumer):
            outbox = Outbox(Producers(producer, quarantine), deliveries=self._topics.deliveries,
                            invalid=self._topics.invalid, timeout=self._settings.kafka.send_timeout_s)
            self._in_flight = InFlight(consumer, self._settings.router.batches_in_flight, self._clock)
            self._pacing = FetchPacing(consumer, self._settings.router.fetch_wait_ms)
            tune_gc()
            consumer.subscribe([self._topics.events], listener=_Rebalance(self))
            self._running = True
            log.info("router.started", group=self.group_id, topic=self._topics.events,
                     validation=self._policy.validation, webhooks=len(self._table))
            try:
                await self._loop(consumer, outbox, self._in_flight, stop)
            finally:
                self._running = self._joined = False
        log.info("router.stopped", events=self.events_routed, deliveries=self.deliveries_produced)

    async def _loop(self, consumer: AIOKafkaConsumer, outbox: Outbox, in_flight: InFlight,
                    stop: asyncio.Event) -> None:
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
                taken = sum(len(records) for records in batch.values())
                self._trimmer.observe(taken)
                self._pacing.observe(taken, batch)
                if not batch:
                    await in_flight.settle()
                    await self._gauges.refresh_lag(consumer)
                    if self._until_idle and await self._idle(consumer):
                        return
                    continue
                async with self._lock:
                    if self._rebalancing or generation != self._generation:
                        log.info("router.batch_dropped", reason="rebalance",
                                 records=sum(len(r) for r in batch.values()))
                        continue
                    await self._process(consumer, outbox, in_flight, batch)
                await in_flight.room()
        finally:
            stopping.cancel()
            await in_flight.settle()

    def _done(self) -> bool:
        return self._max_records is not None and self._taken >= self._max_records

    def _limit(self) -> int:
        size = self._settings.router.batch_size
        if self._max_records is None:
            return size
        return max(1, min(size, self._max_records - self._taken))

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

    async def _process(self, consumer: AIOKafkaConsumer, outbox: Outbox, in_flight: InFlight,
                       batch: Batch) -> None:
        """Route and produce one batch; its acknowledgements, commit and counts follow in ``in_flight``."""
        routed_time = iso_time(self._clock())
        lookup = self._table.matching
        policy = self._policy
        results = [
            route(IncomingEvent(r.topic, r.partition, r.offset, r.key, r.value, r.headers), lookup,
                  routed_time=routed_time, policy=policy)
            for records in batch.values() for r in records
        ]
        acks = await outbox.send(results)
        self._taken += len(results)
        gauges = self._gauges

        def concluded(acked: float) -> None:
            gauges.observe(results, acked)
            gauges.batch_lag(consumer, batch)

        in_flight.add(acks, {tp: records[-1].offset + 1 for tp, records in batch.items()}, concluded)
