"""The delivery worker: the Kafka shell around ``policy.next_step``, wiring its three parts.

One consumer group (``<prefix>.delivery``) over the deliveries topic and every retry tier:

    fetch -> intake (budgets, pauses, due holds) -> commits' ledger + dispatcher (per key, bulkheads)
          -> attempt: precheck, signed POST, next_step, attempt log + retry tier / DLQ (acknowledged)
          -> commits: every COMMIT_INTERVAL_S, each partition's lowest contiguous completed offset

``intake.Intake`` holds what is fetched within ``max_in_flight`` records and ``max_in_flight_bytes``;
``attempt.Attempts`` runs one record's attempt to its end; ``commits.Commits`` keeps the offset
ledger and commits. This module owns the consumer loop, the tasks, rebalances and the gauges.

The poll loop never waits on HTTP. On stop (and on revocation of partitions) queued records are
dropped (uncommitted: redone later), running attempts get ``shutdown_grace_s`` to finish, only what
completed is committed, and the producer closes last. What breaks the loop itself, or a broker that
does not acknowledge, stops the worker.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from services.contract.topics import Topics
from services.delivery.attempt import Attempts
from services.delivery.commits import Commits
from services.delivery.dispatch import Dispatcher
from services.delivery.gauges import DeliveryGauges
from services.delivery.http import HttpSender
from services.delivery.intake import Intake, Job, Malformed
from services.shared import kafka
from services.shared import logging as logs
from services.shared.errors import KafkaUnavailableError
from services.shared.gc_tuning import tune_gc
from services.shared.memory import Trimmer
from services.shared.metrics import Metrics
from services.shared.netguard import NetworkGuard
from services.shared.runtime import first_of
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable

log = logs.get("delivery")

POLL_MS = 500
FETCH_BYTES = 1024 * 1024  # per partition and fetch: bounds what the consumer buffers beside max_in_flight
FULL_WAIT_S = 5.0  # at max_in_flight, hold what is fetched this long before pausing the partitions


class DeliveryWorker:
    """``DeliveryWorker(settings, table, store, metrics)``: the Worker protocol (``name``, ``run``, ``ready``)."""

    name = "delivery"

    def __init__(self, settings: Settings, table: SubscriptionTable, store: SubscriptionStore, metrics: Metrics,
                 *, group_id: str | None = None, until_idle: bool = False, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._table = table
        self._metrics = metrics
        self._topics = Topics.from_settings(settings)
        self.group_id = group_id or f"{settings.topic_prefix}.delivery"
        self._until_idle = until_idle
        d = settings.delivery
        self._backlog_s = d.per_webhook_backlog_s
        self._commits = Commits(self.group_id, settings.kafka.unavailable_log_s)
        self._trimmer = Trimmer()
        self._gauges = DeliveryGauges(metrics, self.group_id, self._topics, self._commits.offsets)
        self._intake = Intake(d, self._topics, settings.retry.jitter, self._commits)
        self._dispatcher: Dispatcher[Job] = Dispatcher(d.max_concurrency, d.per_webhook_concurrency, self._start,
                                                       backlog=d.per_webhook_backlog,
                                                       slow_s=d.per_webhook_slow_s)
        # Retry and dead-letter records carry the event's body: as large as the router may route, with headers.
        self._max_request = kafka.max_record_bytes(settings.router.max_event_bytes)
        self._attempts = Attempts(settings, table, store, metrics, self._dispatcher, self._intake.finish,
                                  rng or random.Random(), max_record_bytes=self._max_request)
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._ready = False
        self._fatal: BaseException | None = None
        self._failed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._sender: HttpSender | None = None

    def ready(self) -> bool:
        return self._ready

    @property
    def skipped(self) -> int:
        """Records not redone: complete above the commit when their partition was assigned."""
        return self._commits.skipped

    @property
    def max_in_flight_seen(self) -> int:
        return self._intake.max_in_flight_seen

    @property
    def max_in_flight_bytes_seen(self) -> int:
        return self._intake.max_in_flight_bytes_seen

    # --- lifecycle -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        if not await first_of(self._table.wait_ready(), stop):
            return
        settings = self._settings
        producer = kafka.producer(settings, max_request_size=self._max_request)
        consumer = kafka.consumer(settings, group_id=self.group_id, max_partition_fetch_bytes=FETCH_BYTES)
        probe = kafka.consumer(settings, group_id=None)
        admin = kafka.admin(settings)
        sender = HttpSender(settings.http, NetworkGuard(settings.allowed_private_cidrs))
        async with (kafka.started(producer), sender, kafka.started(admin), kafka.started(consumer),
                    kafka.started(probe)):
            self._consumer, self._sender = consumer, sender
            self._attempts.bind(producer, sender, probe)
            self._commits.bind(consumer, admin)
            await self._check_topics(probe, admin)
            self._intake.bind(consumer)
            tune_gc()
            consumer.subscribe(self._topics.delivery_inputs, listener=_Rebalance(self))
            log.info("delivery.started", group=self.group_id, topics=len(self._topics.delivery_inputs),
                     max_in_flight=self._intake.max_in_flight, max_in_flight_bytes=self._intake.max_in_flight_bytes,
                     max_concurrency=settings.delivery.max_concurrency)
            ticker = asyncio.create_task(self._commits.tick_loop(self._update_gauges))
            ticker.add_done_callback(self._task_done)  # if it fails, the worker fails
            try:
                await self._poll(stop)
            finally:
                self._ready = False
                ticker.cancel()
                await asyncio.wait([ticker])
                await self._drain()
        if self._fatal is not None:
            raise self._fatal

    async def _check_topics(self, probe: AIOKafkaConsumer, admin: Any) -> None:
        """Every topic read or written exists (a missing retry tier would otherwise block a send for 30 s),
        and the ones a delivery moves through can hold the largest event routed."""
        topics = self._topics
        for topic in (*topics.delivery_inputs, topics.dlq, topics.attempts):
            if not await kafka.end_offsets(probe, topic):
                raise KafkaUnavailableError(f"topic {topic} does not exist: run `akece-webhooks topics ensure`")
        await kafka.check_record_limits(admin, (*topics.delivery_inputs, topics.dlq),
                                        self._settings.router.max_event_bytes)

    async def _poll(self, stop: asyncio.Event) -> None:
        consumer, intake = self._consumer, self._intake
        assert consumer is not None
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(self._failed.wait())
        try:
            while not stop.is_set() and self._fatal is None:
                if intake.full() and not intake.backpressured:  # hold what the consumer fetched ahead
                    held = asyncio.ensure_future(intake.hold(FULL_WAIT_S))
                    await asyncio.wait({held, stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
                    if not held.done():
                        held.cancel()
                        break
                    continue
                fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=POLL_MS, max_records=intake.room()))
                await asyncio.wait({fetch, stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batches = fetch.result()
                fetched = bool(batches)
                now = time.time()
                for tp, batch in batches.items():
                    intake.accept(tp, batch, now, self._admit, self._reject)
                del fetch, batches  # the records now live in their jobs only, not in a batch kept alive
                if self._until_idle and not fetched and await self._idle():
                    log.info("delivery.idle")
                    break
        finally:
            stopping.cancel()
            failing.cancel()

    async def _drain(self) -> None:
        """Stop starting, let running attempts finish within the grace period, commit what completed."""
        dropped = self._dispatcher.close()
        self._intake.let_go(dropped)
        self._intake.close()
        running = list(self._tasks)
        cancelled = 0
        if running:
            _, pending = await asyncio.wait(running, timeout=self._settings.delivery.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            cancelled = len(pending)
        self._attempts.close()
        if self._commits.bound:
            await self._commits.commit()
        log.info("delivery.drained", finished=len(running) - cancelled, cancelled=cancelled,
                 dropped=len(dropped))

    # --- tasks ---------------------------------------------------------------------------------
    def _admit(self, job: Job) -> None:
        if self._dispatcher.overloaded(job.webhook_id, self._backlog_s):
            self._spawn(self._attempts.shed(job), job.tp)  # a slow webhook may not fill the memory all share
        else:
            self._dispatcher.submit(job)

    def _reject(self, bad: Malformed) -> None:
        self._spawn(self._attempts.dead_letter_malformed(bad), bad.tp)

    def _start(self, job: Job) -> None:
        self._spawn(self._attempts.deliver(job), job.tp)

    def _spawn(self, coro: Any, tp: TopicPartition) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = tp
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._fatal is None:
            log.error("delivery.task_failed", error=f"{type(exc).__name__}: {exc}")
            self._fatal = exc
            self._failed.set()

    async def _idle(self) -> bool:
        """Every assigned partition read to its end, nothing in flight or waiting for a due time."""
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if self._intake.held() or self._tasks or not assignment:
            return False
        try:
            ends = await consumer.end_offsets(list(assignment))
            for tp, end in ends.items():
                if await consumer.position(tp) < end:
                    return False
        except IllegalStateError:  # a rebalance took a partition meanwhile
            return False
        return True

    # --- rebalances, gauges ----------------------------------------------------------------------
    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Partitions taken away: drop their queued records, let running ones finish, commit."""
        if not revoked:
            return
        self._intake.forget(revoked)
        self._commits.forget(revoked)
        dropped = self._dispatcher.drop(lambda job: job.tp in revoked)
        self._intake.let_go(dropped)
        self._intake.relieve()
        running = [task for task, tp in self._tasks.items() if tp in revoked]
        budget = min(self._settings.delivery.shutdown_grace_s, self._settings.kafka.rebalance_timeout_ms / 2000)
        if running:
            await asyncio.wait(running, timeout=budget)
        await self._commits.hand_over(revoked)
        for tp in revoked:
            self._gauges.remove_lag(tp)
        log.info("delivery.partitions_revoked", partitions=len(revoked), dropped=len(dropped),
                 running=len(running), unfinished=sum(1 for tp in self._tasks.values() if tp in revoked))

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """New partitions: learn which records above each committed offset are already complete
        (commit metadata), fetching nothing until then."""
        self._intake.loading(assigned)
        completed = await self._commits.load(assigned)
        self._intake.loaded(assigned)
        self._ready = True  # in the group with an assignment (possibly empty: more workers than partitions)
        log.info("delivery.partitions_assigned", partitions=len(assigned), completed_above_commit=completed)

    def _update_gauges(self) -> None:
        assert self._consumer is not None and self._sender is not None
        self._trimmer.observe(self._intake.in_flight)
        self._attempts.forget_circuits()
        self._gauges.update(self._consumer, self._intake, self._sender.requests_in_flight,
                            self._attempts.circuits.open_count)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._worker.assigned(set(assigned))
