"""One delivery attempt: precheck, send, conclude.

    precheck (policy.precheck: deleted, disabled, circuit open, subscriptions behind) -> signed POST
    -> policy.next_step -> auto-disable, attempt log record + retry tier / DLQ record (acknowledged)
    -> metrics and one ``delivery.attempted`` line -> done (the offset may be committed)

An unexpected error while handling one record is that record's failed attempt (class ``internal``:
retried by the schedule, dead-lettered in the end), counted and logged with its type, never the
process's. If even concluding it as ``internal`` fails, the record is dead-lettered as it is. A
broker that does not acknowledge (``KafkaUnavailableError``) stops the worker.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from services.contract import headers as h
from services.contract.times import iso_time
from services.contract.topics import Topics
from services.delivery import records
from services.delivery.breaker import Circuits
from services.delivery.dispatch import Dispatcher
from services.delivery.http import HttpSender
from services.delivery.intake import Job, Malformed
from services.delivery.ledger import PartitionLedger
from services.delivery.policy import (
    AttemptResult,
    DeadLetter,
    ErrorClass,
    Retry,
    RetrySchedule,
    Step,
    next_step,
    precheck,
)
from services.delivery.report import AttemptReport, outcome
from services.delivery.signing import ActiveSecrets, request_headers
from services.delivery.webhook_view import WebhookView
from services.delivery.writer import RECORD_KAFKA_ERRORS, BatchedWriter, Window, broker_side
from services.shared import logging as logs
from services.shared import urls
from services.shared.errors import KafkaUnavailableError
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable

log = logs.get("delivery")

INTERNAL = ErrorClass.INTERNAL


class Attempts:
    """``Attempts(settings, table, store, metrics, dispatcher, finish, rng, max_record_bytes=)``: runs one job's attempt
    to its end and calls ``finish(ledger, offset, size)``."""

    def __init__(self, settings: Settings, table: SubscriptionTable, store: SubscriptionStore, metrics: Metrics,
                 dispatcher: Dispatcher[Job], finish: Callable[[PartitionLedger, int, int], None],
                 rng: random.Random, *, max_record_bytes: int) -> None:
        self._settings = settings
        self._metrics = metrics
        self._dispatcher = dispatcher
        self._finish = finish
        self._rng = rng
        self._topics = Topics.from_settings(settings)
        self._schedule = RetrySchedule.from_settings(settings.retry)
        self.circuits = Circuits(settings.circuit.failure_threshold, settings.circuit.open_s,
                                 settings.delivery.auto_disable_after_s)
        self._internal_errors = metrics.internal_errors.labels(stage="delivery")  # exported at 0 from the start
        self._report = AttemptReport(metrics)
        self._writer = BatchedWriter(settings.kafka.send_timeout_s, max_record_bytes)
        self._signing = ActiveSecrets()
        self._webhooks = WebhookView(self._topics, table, store, metrics, self.circuits)
        self._sender: HttpSender | None = None

    def bind(self, producer: AIOKafkaProducer, sender: HttpSender, probe: Any) -> None:
        self._sender = sender
        self._writer.bind(producer)
        self._webhooks.bind(probe)

    def close(self) -> None:
        self._writer.close()

    # --- one delivery ------------------------------------------------------------------------
    async def deliver(self, job: Job) -> None:
        started_at = time.time()
        try:
            result = await self._attempt(job, started_at)
        except (KafkaUnavailableError, KafkaError):  # the broker's (the table sync), not the record's:
            raise  # the worker stops, and is run again once the broker answers
        except Exception as exc:  # an error of this record, never of the process
            result = self._internal(job, exc)
        acks = await self._conclude(job, result, started_at)
        ledger, offset, size = job.ledger, job.offset, job.size
        del job, result  # the record, its body and the response are not kept while the broker acknowledges
        await self._acknowledged(acks)
        self._finish(ledger, offset, size)

    async def shed(self, job: Job) -> None:
        """Too many records of this webhook wait already: a failed attempt, to its next retry tier."""
        waiting = self._dispatcher.waiting(job.webhook_id)
        result = AttemptResult(error_class=ErrorClass.WEBHOOK_BACKLOG,
                               error_message=f"{waiting} deliveries already waiting for this webhook")
        acks = await self._conclude(job, result, time.time(), dispatched=False)
        ledger, offset, size = job.ledger, job.offset, job.size
        del job, result
        await self._acknowledged(acks)
        self._finish(ledger, offset, size)

    async def dead_letter_malformed(self, bad: Malformed) -> None:
        now, record = time.time(), bad.record
        reason = ErrorClass.MALFORMED_RECORD
        headers = h.replace(record.headers or [], {h.DLQ_REASON: reason, h.LAST_ERROR: bad.error[:300],
                                                   h.DLQ_AT: round(now, 3)})
        log.error("delivery.malformed_record", topic=bad.tp.topic, partition=bad.tp.partition, offset=record.offset,
                  error=bad.error[:300])
        if await self._acknowledged(self._dead_letter(bad.tp, record.offset, record.key, record.value or b"", headers)):
            self._metrics.dead_letters.labels(reason).inc()
        self._finish(bad.ledger, record.offset, bad.size)

    async def _attempt(self, job: Job, started_at: float) -> AttemptResult:
        webhook_id = job.meta.webhook_id
        webhook = self._webhooks.get(webhook_id)
        fresh = True
        if webhook is None or not webhook.enabled:
            fresh = await self._webhooks.fresh(job.fetched_at)
            if fresh:
                webhook = self._webhooks.get(webhook_id)
                if webhook is None or not webhook.enabled:
                    self.circuits.forget(webhook_id)
        open_failures = None
        if webhook is not None and webhook.enabled and not self.circuits.allow(webhook_id, started_at):
            open_failures = self.circuits.failures(webhook_id)
        skip = precheck(webhook_id, webhook, fresh=fresh, open_failures=open_failures)
        if skip is not None:
            return skip
        assert webhook is not None and self._sender is not None
        sent = False
        try:  # the signed POST (inline: one coroutine less to resume per delivery)
            body = job.value
            headers = request_headers(delivery_id=job.meta.delivery_id, timestamp=int(started_at), body=body,
                                      secrets=self._signing.active(webhook, started_at),
                                      prefix=self._settings.http.header_prefix)
            result = await self._sender.post(webhook.url, body, headers, connect_timeout_s=webhook.connect_timeout_s,
                                             total_timeout_s=webhook.total_timeout_s)
            sent = result.sent
            return result
        finally:
            if not sent:  # blocked or cancelled: a half-open probe that never went out may go again
                self.circuits.abandon(webhook_id)

    def _internal(self, job: Job, exc: Exception) -> AttemptResult:
        """An unexpected error while handling ``job``: its failed attempt (class ``internal``), counted and
        logged with the exception's type and where it was raised; its text without any URL."""
        self._internal_errors.inc()
        webhook = self._webhooks.get(job.webhook_id)
        message = urls.redact(f"{type(exc).__name__}: {exc}", webhook.url if webhook is not None else "")
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} {frames[-1].name}" if frames else None
        log.error("delivery.internal_error", delivery_id=job.meta.delivery_id, webhook_id=job.webhook_id,
                  attempt=job.meta.attempt, error_type=type(exc).__name__, where=where)
        return AttemptResult(error_class=INTERNAL, error_message=message[:300])

    # --- conclude ----------------------------------------------------------------------------
    async def _conclude(self, job: Job, result: AttemptResult, started_at: float, *,
                        dispatched: bool = True) -> list[Window]:
        """Next step of an attempt: disable, attempt log and retry/DLQ record enqueued (the acknowledgements
        to await before it is done), its dispatcher slot released. If that fails for this record (not for
        the broker), the record's attempt is ``internal`` instead."""
        now = time.time()
        try:
            acks = await self._settle(job, result, started_at, now)
        except Exception as exc:
            if broker_side(exc):  # e.g. the producer's buffer full while the broker is away: ride it out
                raise
            acks = await self._settle_internal(job, result, exc, started_at, now)  # this record's failure
        if dispatched:
            if result.sent:
                self._dispatcher.observe(job.meta.webhook_id, result.ok, result.duration_s)
            self._dispatcher.release(job)
        return acks

    async def _settle_internal(self, job: Job, result: AttemptResult, exc: Exception, started_at: float,
                               now: float) -> list[Window]:
        """Settle ``job`` as an ``internal`` failure; if even that fails, dead-letter the record as it is."""
        if result.error_class != INTERNAL:
            result = self._internal(job, exc)
            try:
                return await self._settle(job, result, started_at, now)
            except Exception as again:
                if broker_side(again):
                    raise
                exc = again
        message = (result.error_message or type(exc).__name__)[:300]
        headers = h.replace(job.headers, {h.DLQ_REASON: INTERNAL, h.LAST_ERROR_CLASS: INTERNAL, h.LAST_ERROR: message,
                                          h.DLQ_AT: round(now, 3), h.DUE_AT: None})
        log.error("delivery.dead_lettered_as_is", delivery_id=job.meta.delivery_id, webhook_id=job.webhook_id,
                  error_type=type(exc).__name__)
        acks = self._dead_letter(job.tp, job.offset, job.record_key, job.value, headers,
                                 delivery_id=job.meta.delivery_id, webhook_id=job.webhook_id)
        if acks:
            self._metrics.dead_letters.labels(INTERNAL).inc()
        return acks

    def _dead_letter(self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes,
                     headers: Sequence[tuple[str, bytes | None]], **context: Any) -> list[Window]:
        """The record to the DLQ as it is. One too large even for the DLQ (written by another producer than
        the router, or routed before ``AKECE_ROUTER_MAX_EVENT_BYTES`` was lowered) stays where it is, named
        by an error line and counted as an internal error: one record may not stop the worker (it would
        meet the same record each time it ran again)."""
        try:
            return [self._writer.append(self._topics.dlq, key, value, headers)]
        except RECORD_KAFKA_ERRORS as exc:
            self._internal_errors.inc()
            log.error("delivery.too_large_to_dead_letter", topic=tp.topic, partition=tp.partition, offset=offset,
                      size=len(value), error=str(exc)[:300], **context)
            return []

    async def _settle(self, job: Job, result: AttemptResult, started_at: float,
                      now: float) -> list[Window]:
        """The step after ``result``, its side effects; the acknowledgements to await."""
        meta = job.meta
        step = next_step(result, meta.attempt, self._schedule, now, self._rng)
        if isinstance(step, DeadLetter) and step.disable:
            await self._webhooks.disable(meta.webhook_id, f"410 Gone from the receiver at {iso_time(now)}", "gone")
        if result.sent and self.circuits.record(meta.webhook_id, result.ok, now):
            since = self.circuits.failing_since(meta.webhook_id) or now
            await self._webhooks.disable(meta.webhook_id, f"no successful delivery since {iso_time(since)}", "failing")
        acks = self._follow_up(job, result, step, started_at, now)
        self._report.attempted(job.meta, result, step, now)
        return acks

    def _follow_up(self, job: Job, result: AttemptResult, step: Step, started_at: float, now: float) -> list[Window]:
        """Queue the attempt log record and the retry/DLQ record; their acknowledgements."""
        meta = job.meta
        retry = step if isinstance(step, Retry) else None
        dead = step if isinstance(step, DeadLetter) else None
        log_value = records.attempt_record(
            meta, result, outcome=outcome(step), next_delay_s=retry.delay if retry else None,
            dlq_reason=dead.reason if dead else None, started_at=started_at,
            response_limit=self._settings.http.max_response_bytes)
        acks = [self._writer.append(self._topics.attempts, str(meta.webhook_id).encode(), log_value)]
        if retry is not None:
            headers = records.retry_headers(job.headers, meta, result, retry, started_at)
            acks.append(self._writer.append(self._topics.retry(retry.tier), job.record_key, job.value, headers))
        elif dead is not None:
            headers = records.dlq_headers(job.headers, meta, result, dead.reason, started_at, now)
            acks.append(self._writer.append(self._topics.dlq, job.record_key, job.value, headers))
        return acks

    @staticmethod
    async def _acknowledged(acks: list[Window]) -> bool:
        """The writer bounds each window's wait (``KafkaUnavailableError`` past its timeout). Whether there was
        anything to acknowledge."""
        for ack in acks:
            await ack
        return bool(acks)

    def forget_circuits(self) -> None:
        self._webhooks.forget_circuits()
