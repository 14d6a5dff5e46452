"""The delivery worker: the Kafka shell around ``policy.next_step``.

One consumer group (``<prefix>.delivery``) over the deliveries topic and every retry tier:

    fetch -> ledger + per-key queue -> dispatcher (bulkheads) -> task: lookup, circuit, signed POST
          -> next_step -> attempt log + retry tier / DLQ (produced, acknowledged) -> ledger done
    every COMMIT_INTERVAL_S: commit each partition's lowest contiguous completed offset

The poll loop never waits on HTTP; records beyond ``max_in_flight`` pause fetching; a retry tier's
head that is not due pauses its partition until a timer resumes it. On stop (and on revocation of
partitions) queued records are dropped (uncommitted: redone later), running attempts get
``shutdown_grace_s`` to finish, only what completed is committed, and the producer closes last.

Bounds: at most ``max_in_flight`` records and ``max_in_flight_bytes`` of them held (fetching pauses
at either); a retry tier's record is held at most its tier delay times (1 + jitter) past when it
was written (or past now, if its timestamp is ahead of this clock), whatever its due-time header
says. An unexpected error while handling one record is that record's failed attempt (class
``internal``: retried by the schedule, dead-lettered in the end), counted and logged with its type,
never the process's. What breaks the loop itself, or a broker that does not acknowledge, stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IllegalStateError, KafkaError

from services.delivery import records
from services.delivery.circuit import Circuits
from services.delivery.dispatch import Dispatcher
from services.delivery.http import HttpSender
from services.delivery.ledger import BACKPRESSURE, LOADING, Ledger, PartitionLedger, Pauses, decode_done
from services.delivery.policy import Ack, AttemptResult, DeadLetter, Retry, RetrySchedule, Step, next_step
from services.delivery.signing import request_headers
from services.delivery.tiers import DueGate
from services.shared import headers as h
from services.shared import kafka, urls
from services.shared import logging as logs
from services.shared.deliveries import DeliveryMeta
from services.shared.errors import KafkaUnavailableError
from services.shared.metrics import Metrics, status_class
from services.shared.netguard import NetworkGuard
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable, Webhook
from services.shared.topics import Topics, format_delay

log = logs.get("delivery")

POLL_MS = 500
COMMIT_INTERVAL_S = 0.5
COMMIT_EVERY = 200  # completions: commit sooner under load (fewer redone after a crash)
RESUME_AT = 0.75  # of max_in_flight: backpressure lifts below this
SYNC_TIMEOUT_S = 5.0
FETCH_BYTES = 1024 * 1024  # per partition and fetch: bounds what the consumer buffers beside max_in_flight
INTERNAL = "internal"  # error class of an unexpected error while handling one record
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
    headers: h.Headers
    webhook_id: int
    meta: DeliveryMeta
    fetched_at: float
    size: int  # bytes held: value, key and headers


def _size(record: Any) -> int:
    headers = sum(len(name) + len(value or b"") for name, value in record.headers or ())
    return len(record.value or b"") + len(record.key or b"") + headers


_NAMES: dict[str, str] = {}


def _compact(headers: Any) -> h.Headers:
    """Record headers with one shared string per header name (saves ~600 bytes per held record)."""
    return [(_NAMES.setdefault(name, name), value) for name, value in headers]


class DeliveryWorker:
    """``DeliveryWorker(settings, table, store, metrics)``: the Worker protocol (``name``, ``run``, ``ready``)."""

    name = "delivery"

    def __init__(self, settings: Settings, table: SubscriptionTable, store: SubscriptionStore, metrics: Metrics,
                 *, group_id: str | None = None, until_idle: bool = False, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._table = table
        self._store = store
        self._metrics = metrics
        self._topics = Topics.from_settings(settings)
        self.group_id = group_id or f"{settings.topic_prefix}.delivery"
        self._until_idle = until_idle
        self._schedule = RetrySchedule.from_settings(settings.retry)
        self._rng = rng or random.Random()
        self._tiers = {name: format_delay(delay) for name, delay in self._topics.retry_topics.items()}
        d = settings.delivery
        self._max_in_flight = d.max_in_flight
        self._max_in_flight_bytes = d.max_in_flight_bytes
        # How long past its write a record of each input topic may be held: its tier's delay times (1 + jitter).
        longest = max(self._topics.retry_topics.values(), default=0.0)
        self._max_hold = {topic: self._topics.retry_topics.get(topic, longest) * (1 + self._schedule.jitter)
                          + HOLD_SLACK_S for topic in self._topics.delivery_inputs}
        self._backlog_s = d.per_webhook_backlog_s
        self._circuits = Circuits(settings.circuit.failure_threshold, settings.circuit.open_s,
                                  d.auto_disable_after_s)
        self._dispatcher: Dispatcher[Job] = Dispatcher(d.max_concurrency, d.per_webhook_concurrency, self._start,
                                                       backlog=d.per_webhook_backlog,
                                                       slow_s=d.per_webhook_slow_s)
        self._ledger = Ledger()
        self._internal_errors = metrics.internal_errors.labels(stage="delivery")  # exported at 0 from the start
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._record_size = 0.0  # moving average of the records taken in, to size fetches
        self.max_in_flight_seen = 0
        self.max_in_flight_bytes_seen = 0
        self._backpressured = False
        self._ready = False
        self._fatal: BaseException | None = None
        self._failed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._commit_due = asyncio.Event()
        self._commit_failures = 0  # since the last delivery.commit_failed line
        self._commit_failed_at = -float("inf")
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._completed = 0
        self._synced_at = 0.0
        self._sync: asyncio.Future[None] | None = None
        self._sync_started = 0.0
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._skips: dict[TopicPartition, set[int]] = {}  # offsets complete above the commit (metadata)
        self.skipped = 0
        self._sender: HttpSender | None = None
        self._pauses: Pauses | None = None
        self._gate: DueGate | None = None

    def ready(self) -> bool:
        return self._ready

    # --- lifecycle -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        if not await _until_first(self._table.wait_ready(), stop):
            return
        settings = self._settings
        producer = kafka.producer(settings)
        consumer = kafka.consumer(settings, group_id=self.group_id, max_partition_fetch_bytes=FETCH_BYTES)
        probe = kafka.consumer(settings, group_id=None)
        admin = kafka.admin(settings)
        sender = HttpSender(settings.http, NetworkGuard(settings.allowed_private_cidrs))
        async with (kafka.started(producer), sender, kafka.started(admin), kafka.started(consumer),
                    kafka.started(probe)):
            self._producer, self._consumer, self._probe, self._sender = producer, consumer, probe, sender
            self._admin = admin
            await self._check_topics()
            self._pauses = Pauses(consumer)
            self._gate = DueGate(consumer, self._pauses)
            consumer.subscribe(self._topics.delivery_inputs, listener=_Rebalance(self))
            log.info("delivery.started", group=self.group_id, topics=len(self._topics.delivery_inputs),
                     max_in_flight=self._max_in_flight, max_in_flight_bytes=self._max_in_flight_bytes,
                     max_concurrency=settings.delivery.max_concurrency)
            ticker = asyncio.create_task(self._tick_loop())
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

    async def _check_topics(self) -> None:
        """Every topic read or written exists (a missing retry tier would otherwise block a send for 30 s),
        and the ones a delivery moves through can hold the largest event routed."""
        assert self._probe is not None
        topics = self._topics
        for topic in (*topics.delivery_inputs, topics.dlq, topics.attempts):
            if not await kafka.end_offsets(self._probe, topic):
                raise KafkaUnavailableError(f"topic {topic} does not exist: run `akece-webhooks topics ensure`")
        assert self._admin is not None
        await kafka.check_record_limits(self._admin, (*topics.delivery_inputs, topics.dlq),
                                        self._settings.router.max_event_bytes)

    async def _poll(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(self._failed.wait())
        try:
            while not stop.is_set() and self._fatal is None:
                fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=POLL_MS, max_records=self._room()))
                await asyncio.wait({fetch, stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batches = fetch.result()
                fetched = bool(batches)
                now = time.time()
                for tp, batch in batches.items():
                    self._accept(tp, batch, now)
                del fetch, batches  # the records now live in their jobs only, not in a batch kept alive
                self._check_backpressure()
                if self._until_idle and not fetched and await self._idle():
                    log.info("delivery.idle")
                    break
        finally:
            stopping.cancel()
            failing.cancel()

    async def _drain(self) -> None:
        """Stop starting, let running attempts finish within the grace period, commit what completed."""
        dropped = self._dispatcher.close()
        self._let_go(dropped)
        if self._gate is not None:
            self._gate.close()
        running = list(self._tasks)
        cancelled = 0
        if running:
            _, pending = await asyncio.wait(running, timeout=self._settings.delivery.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            cancelled = len(pending)
        if self._consumer is not None:
            await self._commit()
        log.info("delivery.drained", finished=len(running) - cancelled, cancelled=cancelled,
                 dropped=len(dropped))

    # --- intake ----------------------------------------------------------------------------
    def _accept(self, tp: TopicPartition, batch: Iterable[Any], now: float) -> None:
        assert self._gate is not None
        skip = self._skips.get(tp)
        for record in batch:
            if self._full():  # the rest is fetched again once backpressure lifts
                assert self._consumer is not None
                self._consumer.seek(tp, record.offset)
                break
            if skip and record.offset in skip:  # completed before a crash or rebalance (commit metadata)
                skip.discard(record.offset)
                self._ledger.add(tp, record.offset).done(record.offset)
                self.skipped += 1
                continue
            size = _size(record)
            try:
                meta = DeliveryMeta.from_headers(h.to_dict(record.headers))
            except Exception as exc:  # whatever the headers hold, the record is malformed
                ledger = self._take(tp, record.offset, None, size)
                self._spawn(self._dead_letter_malformed(tp, ledger, record, f"{type(exc).__name__}: {exc}", size),
                            tp)
                continue
            if meta.due_at is not None and meta.due_at > now:
                due = min(meta.due_at, self._latest_due(tp.topic, record.timestamp, now))
                if due > now:
                    self._gate.hold(tp, record.offset, due, now)
                    break
            ledger = self._take(tp, record.offset, meta.due_at, size)
            key = record.key or f"{meta.webhook_id}:-".encode()
            job = Job(tp, record.offset, ledger, key, record.key, record.value, _compact(record.headers),
                      meta.webhook_id, meta, now, size)
            if self._dispatcher.overloaded(meta.webhook_id, self._backlog_s):
                self._spawn(self._shed(job), tp)  # a slow webhook may not fill the memory all share
            else:
                self._dispatcher.submit(job)
        if skip is not None and not skip:
            del self._skips[tp]

    def _room(self) -> int:
        """Records to fetch at most: what fits under both budgets (bytes estimated from the records seen)."""
        room = self._max_in_flight - self._in_flight
        if self._record_size:
            room = min(room, int((self._max_in_flight_bytes - self._in_flight_bytes) // self._record_size))
        return max(1, room)

    def _latest_due(self, topic: str, timestamp_ms: int | None, now: float) -> float:
        """The latest a record of ``topic`` written at ``timestamp_ms`` can be due: a producer whose clock
        is ahead (in the due-time header or the timestamp) cannot hold a tier's partition longer."""
        written = min(timestamp_ms / 1000, now) if timestamp_ms and timestamp_ms > 0 else now
        return written + self._max_hold.get(topic, 0.0)

    def _take(self, tp: TopicPartition, offset: int, due_at: float | None, size: int) -> PartitionLedger:
        ledger = self._ledger.add(tp, offset, due_at)
        self._in_flight += 1
        self._in_flight_bytes += size
        self._record_size += (size - self._record_size) * SIZE_WEIGHT
        self.max_in_flight_seen = max(self.max_in_flight_seen, self._in_flight)
        self.max_in_flight_bytes_seen = max(self.max_in_flight_bytes_seen, self._in_flight_bytes)
        return ledger

    def _let_go(self, jobs: list[Job]) -> None:
        """Queued jobs dropped (not done, not committed: redone by whoever reads them next)."""
        self._in_flight -= len(jobs)
        self._in_flight_bytes -= sum(job.size for job in jobs)

    def _finish(self, ledger: PartitionLedger, offset: int, size: int) -> None:
        ledger.done(offset)
        self._in_flight -= 1
        self._in_flight_bytes -= size
        self._completed += 1
        if self._completed == COMMIT_EVERY:
            self._commit_due.set()
        self._maybe_relieve()

    def _start(self, job: Job) -> None:
        self._spawn(self._deliver(job), job.tp)

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

    # --- one delivery ------------------------------------------------------------------------
    async def _deliver(self, job: Job) -> None:
        started_at = time.time()
        try:
            result = await self._attempt(job, started_at)
        except (KafkaUnavailableError, KafkaError):  # the broker's (the table sync), not the record's:
            raise  # the worker stops, and is run again once the broker answers
        except Exception as exc:  # an error of this record, never of the process
            result = self._internal(job, exc)
        await self._conclude(job, result, started_at)

    def _internal(self, job: Job, exc: Exception) -> AttemptResult:
        """An unexpected error while handling ``job``: its failed attempt (class ``internal``), counted and
        logged with the exception's type and where it was raised; its text without any URL."""
        self._internal_errors.inc()
        webhook = self._table.get(job.webhook_id)
        message = urls.redact(f"{type(exc).__name__}: {exc}", webhook.url if webhook is not None else "")
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} {frames[-1].name}" if frames else None
        log.error("delivery.internal_error", delivery_id=job.meta.delivery_id, webhook_id=job.webhook_id,
                  attempt=job.meta.attempt, error_type=type(exc).__name__, where=where)
        return AttemptResult(error_class=INTERNAL, error_message=message[:300])

    async def _shed(self, job: Job) -> None:
        """Too many records of this webhook wait already: a failed attempt, to its next retry tier."""
        waiting = self._dispatcher.waiting(job.webhook_id)
        result = AttemptResult(error_class="webhook_backlog",
                               error_message=f"{waiting} deliveries already waiting for this webhook")
        await self._conclude(job, result, time.time(), dispatched=False)

    async def _conclude(self, job: Job, result: AttemptResult, started_at: float, *, dispatched: bool = True) -> None:
        """Next step of an attempt: disable, attempt log and retry/DLQ record acknowledged, then done.
        If that fails for this record (not for the broker), the record's attempt is ``internal`` instead."""
        now = time.time()
        try:
            acks = await self._settle(job, result, started_at, now)
        except KafkaUnavailableError:
            raise
        except Exception as exc:  # concluding failed for this record: conclude it as internal
            acks = await self._settle_internal(job, result, exc, started_at, now)
        if dispatched:
            if result.sent:
                self._dispatcher.observe(job.meta.webhook_id, result.ok, result.duration_s)
            self._dispatcher.release(job)
        await self._acknowledged(acks)
        self._finish(job.ledger, job.offset, job.size)

    async def _settle_internal(self, job: Job, result: AttemptResult, exc: Exception, started_at: float,
                               now: float) -> list[asyncio.Future[Any]]:
        """Settle ``job`` as an ``internal`` failure; if even that fails, dead-letter the record as it is."""
        if result.error_class != INTERNAL:
            result = self._internal(job, exc)
            try:
                return await self._settle(job, result, started_at, now)
            except KafkaUnavailableError:
                raise
            except Exception as again:
                exc = again
        assert self._producer is not None
        message = (result.error_message or type(exc).__name__)[:300]
        headers = h.replace(job.headers, {h.DLQ_REASON: INTERNAL, h.LAST_ERROR_CLASS: INTERNAL, h.LAST_ERROR: message,
                                          h.DLQ_AT: round(now, 3), h.DUE_AT: None})
        log.error("delivery.dead_lettered_as_is", delivery_id=job.meta.delivery_id, webhook_id=job.webhook_id,
                  error_type=type(exc).__name__)
        self._metrics.dead_letters.labels(INTERNAL).inc()
        return [await self._producer.send(self._topics.dlq, value=job.value, key=job.record_key, headers=headers)]

    async def _settle(self, job: Job, result: AttemptResult, started_at: float,
                      now: float) -> list[asyncio.Future[Any]]:
        """The step after ``result``, its side effects; the acknowledgements to await."""
        meta = job.meta
        step = next_step(result, meta.attempt, self._schedule, now, self._rng)
        if isinstance(step, DeadLetter) and step.disable:
            await self._disable(meta.webhook_id, f"410 Gone from the receiver at {records.iso(now)}", "gone")
        if result.sent and self._circuits.record(meta.webhook_id, result.ok, now):
            since = self._circuits.failing_since(meta.webhook_id) or now
            await self._disable(meta.webhook_id, f"no successful delivery since {records.iso(since)}", "failing")
        acks = await self._follow_up(job, result, step, started_at, now)
        self._observe(job, result, step, now)
        return acks

    async def _attempt(self, job: Job, started_at: float) -> AttemptResult:
        meta = job.meta
        webhook = self._table.get(meta.webhook_id)
        if webhook is None or not webhook.enabled:
            if not await self._fresh_view(job):
                # Our copy of the subscriptions could not catch up: "deleted" or "disabled" may be
                # stale (a webhook created a moment ago, re-enabled). Never dead-letter on it: retry.
                return AttemptResult(error_class="subscriptions_behind",
                                     error_message="this worker's subscriptions table is behind the topic; "
                                                   "the webhook's state could not be confirmed")
            webhook = self._table.get(meta.webhook_id)
        if webhook is None or not webhook.enabled:
            self._circuits.forget(meta.webhook_id)
        if webhook is None:
            return AttemptResult(error_class="webhook_deleted", error_message=f"webhook {meta.webhook_id} was deleted")
        if not webhook.enabled:
            return AttemptResult(error_class="webhook_disabled",
                                 error_message=webhook.disabled_reason or "webhook disabled")
        if not self._circuits.allow(meta.webhook_id, started_at):
            failures = self._circuits.failures(meta.webhook_id)
            return AttemptResult(error_class="circuit_open",
                                 error_message=f"circuit open after {failures} consecutive failures")
        sent = False
        try:
            result = await self._post(job, webhook, started_at)
            sent = result.sent
            return result
        finally:
            if not sent:  # blocked or cancelled: a half-open probe that never went out may go again
                self._circuits.abandon(meta.webhook_id)

    async def _post(self, job: Job, webhook: Webhook, started_at: float) -> AttemptResult:
        assert self._sender is not None
        body = job.value
        headers = request_headers(delivery_id=job.meta.delivery_id, timestamp=int(started_at), body=body,
                                  secrets=webhook.active_secrets(started_at),
                                  prefix=self._settings.http.header_prefix)
        return await self._sender.post(webhook.url, body, headers, connect_timeout_s=webhook.connect_timeout_s,
                                       total_timeout_s=webhook.total_timeout_s)

    async def _follow_up(self, job: Job, result: AttemptResult, step: Step, started_at: float,
                         now: float) -> list[asyncio.Future[Any]]:
        """Enqueue the attempt log record and the retry/DLQ record; their acknowledgements."""
        assert self._producer is not None
        meta = job.meta
        retry = step if isinstance(step, Retry) else None
        dead = step if isinstance(step, DeadLetter) else None
        log_value = records.attempt_record(
            meta, result, outcome=_outcome(step), next_delay_s=retry.delay if retry else None,
            dlq_reason=dead.reason if dead else None, started_at=started_at,
            response_limit=self._settings.http.max_response_bytes)
        acks = [await self._producer.send(self._topics.attempts, value=log_value,
                                          key=str(meta.webhook_id).encode())]
        if retry is not None:
            headers = records.retry_headers(job.headers, meta, result, retry, started_at)
            acks.append(await self._producer.send(self._topics.retry(retry.tier), value=job.value,
                                                  key=job.record_key, headers=headers))
        elif dead is not None:
            headers = records.dlq_headers(job.headers, meta, result, dead.reason, started_at, now)
            acks.append(await self._producer.send(self._topics.dlq, value=job.value, key=job.record_key,
                                                  headers=headers))
        return acks

    async def _acknowledged(self, acks: list[asyncio.Future[Any]]) -> None:
        timeout = self._settings.kafka.send_timeout_s
        try:
            async with asyncio.timeout(timeout):
                for ack in acks:
                    await ack
        except TimeoutError as exc:
            raise KafkaUnavailableError(f"no produce acknowledgement within {timeout}s") from exc

    async def _dead_letter_malformed(self, tp: TopicPartition, ledger: PartitionLedger, record: Any,
                                     error: str, size: int) -> None:
        assert self._producer is not None
        now = time.time()
        headers = h.replace(record.headers or [], {h.DLQ_REASON: "malformed_record", h.LAST_ERROR: error[:300],
                                                   h.DLQ_AT: round(now, 3)})
        log.error("delivery.malformed_record", topic=tp.topic, partition=tp.partition, offset=record.offset,
                  error=error[:300])
        ack = await self._producer.send(self._topics.dlq, value=record.value, key=record.key, headers=headers)
        await self._acknowledged([ack])
        self._metrics.dead_letters.labels("malformed_record").inc()
        self._finish(ledger, record.offset, size)

    def _observe(self, job: Job, result: AttemptResult, step: Step, now: float) -> None:
        meta, m, child = job.meta, self._metrics, self._child
        outcome = _outcome(step)
        klass = status_class(result.status)
        child(m.deliveries, outcome, klass).inc()
        if meta.attempt == 1:
            child(m.first_attempts, "success" if result.ok else "failure").inc()
        if result.sent:
            child(m.attempt_duration, klass).observe(result.duration_s)
        next_delay_ms = None
        if isinstance(step, Ack):
            event_ts = _timestamp(meta.event_time)
            if event_ts is not None:
                m.end_to_end.observe(max(0.0, now - event_ts))
        elif isinstance(step, Retry):
            child(m.retries_scheduled, format_delay(step.tier)).inc()
            next_delay_ms = round(step.delay * 1000)
        else:
            child(m.dead_letters, step.reason).inc()
        emit = log.warning if isinstance(step, DeadLetter) else log.info
        emit("delivery.attempted", delivery_id=meta.delivery_id, event_id=meta.event_id,
             webhook_id=meta.webhook_id, account_id=meta.account_id, event_type=meta.event_type,
             attempt=meta.attempt, status=result.status, duration_ms=round(result.duration_s * 1000, 1),
             outcome=outcome, next_delay_ms=next_delay_ms, error_class=records.error_class(result),
             error=records.error_message(result) if not result.ok else None,
             dlq_reason=step.reason if isinstance(step, DeadLetter) else None)

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, cached (``labels()`` takes a lock and validates on every call)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # --- subscriptions -----------------------------------------------------------------------
    async def _fresh_view(self, job: Job) -> bool:
        """Whether the table is current as of no earlier than the record's fetch, so that a
        deleted/disabled verdict is never stale. False: it could not catch up in time."""
        if self._synced_at < job.fetched_at:
            if self._sync is None or self._sync.done() or self._sync_started < job.fetched_at:
                self._sync_started = time.time()
                self._sync = asyncio.ensure_future(self._sync_table(self._sync_started))
            await asyncio.shield(self._sync)
        return self._synced_at >= job.fetched_at

    async def _sync_table(self, started: float) -> None:
        assert self._probe is not None
        ends = await kafka.end_offsets(self._probe, self._topics.subscriptions)
        for tp, end in ends.items():
            if end <= 0:
                continue
            try:
                await self._table.wait_applied(tp.partition, end - 1, timeout=SYNC_TIMEOUT_S)
            except TimeoutError:
                log.warning("delivery.subscriptions_behind", partition=tp.partition, end=end,
                            waited_s=SYNC_TIMEOUT_S)
                return
        self._synced_at = max(self._synced_at, started)

    async def _disable(self, webhook_id: int, reason: str, label: str) -> None:
        webhook = self._table.get(webhook_id)
        if webhook is None or not webhook.enabled:
            return
        try:
            await self._store.set_enabled(webhook_id, False, reason)
        except TimeoutError:
            log.warning("delivery.disable_unconfirmed", webhook_id=webhook_id)
        self._metrics.webhooks_auto_disabled.labels(label).inc()
        log.warning("webhook.disabled", webhook_id=webhook_id, account_id=webhook.account_id, reason=reason)

    # --- flow control --------------------------------------------------------------------------
    def _full(self) -> bool:
        return self._in_flight >= self._max_in_flight or self._in_flight_bytes >= self._max_in_flight_bytes

    def _check_backpressure(self) -> None:
        if self._backpressured or not self._full():
            return
        assert self._consumer is not None and self._pauses is not None
        self._backpressured = True
        for tp in self._consumer.assignment():
            self._pauses.add(tp, BACKPRESSURE)
        log.info("delivery.backpressure", in_flight=self._in_flight, in_flight_bytes=self._in_flight_bytes)

    def _maybe_relieve(self) -> None:
        if not self._backpressured or self._in_flight > self._max_in_flight * RESUME_AT \
                or self._in_flight_bytes > self._max_in_flight_bytes * RESUME_AT:
            return
        assert self._pauses is not None
        self._backpressured = False
        for tp in self._pauses.partitions(BACKPRESSURE):
            self._pauses.discard(tp, BACKPRESSURE)

    async def _idle(self) -> bool:
        """Every assigned partition read to its end, nothing in flight or waiting for a due time."""
        consumer = self._consumer
        assert consumer is not None and self._gate is not None
        assignment = consumer.assignment()
        if self._in_flight or self._tasks or len(self._gate) or not assignment:
            return False
        try:
            ends = await consumer.end_offsets(list(assignment))
            for tp, end in ends.items():
                if await consumer.position(tp) < end:
                    return False
        except IllegalStateError:  # a rebalance took a partition meanwhile
            return False
        return True

    # --- commits, rebalances, gauges ------------------------------------------------------------
    async def _commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        async with self._commit_lock:
            points = self._ledger.commits(tps)
            if not points:
                return
            try:
                await kafka.commit(self._consumer, points)
            except KafkaError as exc:  # redone: by the partitions' new owner, or by us once the broker is back
                self._ledger.uncommit(points)
                self._commit_failures += 1
                now = time.monotonic()
                if now - self._commit_failed_at >= self._settings.kafka.unavailable_log_s:  # once per window
                    self._commit_failed_at = now
                    log.warning("delivery.commit_failed", error=f"{type(exc).__name__}: {exc}",
                                partitions=len(points), failures=self._commit_failures)
                    self._commit_failures = 0

    async def _tick_loop(self) -> None:
        """Commit every COMMIT_INTERVAL_S or COMMIT_EVERY completions, whichever comes first."""
        gauges_at = 0.0
        while True:
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for can swallow the stop's cancel
                async with asyncio.timeout(COMMIT_INTERVAL_S):
                    await self._commit_due.wait()
            self._commit_due.clear()
            self._completed = 0
            await self._commit()
            if time.monotonic() - gauges_at >= COMMIT_INTERVAL_S:
                gauges_at = time.monotonic()
                self._update_gauges()

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Partitions taken away: drop their queued records, let running ones finish, commit."""
        assert self._gate is not None and self._pauses is not None
        if not revoked:
            return
        self._gate.forget(revoked)
        self._pauses.forget(revoked)
        for tp in revoked:
            self._skips.pop(tp, None)
        dropped = self._dispatcher.drop(lambda job: job.tp in revoked)
        self._let_go(dropped)
        self._maybe_relieve()
        running = [task for task, tp in self._tasks.items() if tp in revoked]
        budget = min(self._settings.delivery.shutdown_grace_s, self._settings.kafka.rebalance_timeout_ms / 2000)
        if running:
            await asyncio.wait(running, timeout=budget)
        await self._commit(revoked)
        self._ledger.drop(revoked)
        for tp in revoked:
            self._remove_lag(tp)
        log.info("delivery.partitions_revoked", partitions=len(revoked), dropped=len(dropped),
                 running=len(running), unfinished=sum(1 for tp in self._tasks.values() if tp in revoked))

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """New partitions: learn which records above each committed offset are already complete
        (commit metadata), fetching nothing until then."""
        assert self._pauses is not None and self._admin is not None
        for tp in assigned:
            self._pauses.add(tp, LOADING)
            if self._backpressured:
                self._pauses.add(tp, BACKPRESSURE)
        try:
            offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=list(assigned))
        except KafkaError as exc:  # without the list, those records are redone: at-least-once holds
            log.warning("delivery.commit_metadata_unavailable", error=f"{type(exc).__name__}: {exc}")
            offsets = {}
        for tp, committed in offsets.items():
            done = decode_done(committed.offset, committed.metadata) if committed.offset >= 0 else set()
            if done:
                self._skips[tp] = done
        for tp in assigned:
            self._pauses.discard(tp, LOADING)
        self._ready = True  # in the group with an assignment (possibly empty: more workers than partitions)
        log.info("delivery.partitions_assigned", partitions=len(assigned),
                 completed_above_commit=sum(len(done) for done in self._skips.values()))

    def _update_gauges(self) -> None:
        consumer, m = self._consumer, self._metrics
        assert consumer is not None and self._pauses is not None and self._sender is not None
        m.in_flight.set(self._in_flight)
        m.requests_in_flight.set(self._sender.requests_in_flight)
        self._forget_circuits()
        m.circuits_open.set(self._circuits.open_count)
        m.paused_partitions.set(self._pauses.count())
        depth = dict.fromkeys(self._tiers.values(), 0)
        behind = dict.fromkeys(self._tiers.values(), 0.0)
        now = time.time()
        for tp in consumer.assignment():
            end, committed = consumer.highwater(tp), self._ledger.committed(tp)
            if end is None or committed is None:
                continue
            lag = max(0, end - committed)
            m.consumer_lag.labels(self.group_id, tp.topic, str(tp.partition)).set(lag)
            tier = self._tiers.get(tp.topic)
            if tier is not None:
                depth[tier] += lag
                due = self._ledger.head_due_at(tp)
                if due is not None and due < now:
                    behind[tier] = max(behind[tier], now - due)
        for tier in depth:
            m.retry_tier_depth.labels(tier).set(depth[tier])
            m.retry_tier_behind.labels(tier).set(behind[tier])

    def _forget_circuits(self) -> None:
        """Drop the circuit state of webhooks deleted or disabled since: a webhook enabled again starts
        closed, with a fresh auto-disable clock."""
        for webhook_id in self._circuits.tracked():
            webhook = self._table.get(webhook_id)
            if webhook is None or not webhook.enabled:
                self._circuits.forget(webhook_id)

    def _remove_lag(self, tp: TopicPartition) -> None:
        with contextlib.suppress(KeyError):
            self._metrics.consumer_lag.remove(self.group_id, tp.topic, str(tp.partition))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._worker.assigned(set(assigned))


def _outcome(step: Step) -> str:
    if isinstance(step, Ack):
        return "success"
    return "retry" if isinstance(step, Retry) else "dead_letter"


def _timestamp(value: str | None) -> float | None:
    """Unix time of an event time header (ISO-8601 or unix seconds)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


async def _until_first(waiting: Any, stop: asyncio.Event) -> bool:
    """Await ``waiting`` unless ``stop`` comes first. True if it completed."""
    task = asyncio.ensure_future(waiting)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
        return False
    return True
