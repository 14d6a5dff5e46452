"""What one finished attempt reports: its metrics and its one ``delivery.attempted`` log line.

One line and a handful of metric updates per attempt, on the hottest path of the worker: the labelled
children are looked up once per label set (``labels()`` takes a lock and validates on every call) and
kept with everything else a successful attempt of that status needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.contract.deliveries import DeliveryMeta
from services.contract.times import LAST_SECOND, epoch
from services.contract.topics import format_delay
from services.delivery import records
from services.delivery.policy import Ack, AttemptResult, DeadLetter, Retry, Step
from services.shared import logging as logs
from services.shared.metrics import Metrics, status_class

log = logs.get("delivery")


class AttemptReport:
    """``AttemptReport(metrics)``: counts and logs attempts (labelled children cached)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._successes: dict[int | None, tuple[Any, Any]] = {}  # status -> (deliveries, attempt_duration)

    def attempted(self, meta: DeliveryMeta, result: AttemptResult, step: Step, now: float) -> None:
        """Count the attempt and log its one ``delivery.attempted`` line."""
        if isinstance(step, Ack):
            self._succeeded(meta, result, now)
            return
        m, child = self._metrics, self._child
        said = outcome(step)
        klass = status_class(result.status)
        child(m.deliveries, said, klass).inc()
        if meta.attempt == 1:
            child(m.first_attempts, "failure").inc()
        if result.sent:
            child(m.attempt_duration, klass).observe(result.duration_s)
        next_delay_ms = None
        if isinstance(step, Retry):
            child(m.retries_scheduled, format_delay(step.tier)).inc()
            next_delay_ms = round(step.delay * 1000)
        else:
            child(m.dead_letters, step.reason).inc()
        emit = log.warning if isinstance(step, DeadLetter) else log.info
        emit("delivery.attempted", delivery_id=meta.delivery_id, event_id=meta.event_id,
             webhook_id=meta.webhook_id, account_id=meta.account_id, event_type=meta.event_type,
             attempt=meta.attempt, status=result.status, duration_ms=round(result.duration_s * 1000, 1),
             outcome=said, next_delay_ms=next_delay_ms, error_class=records.error_class(result),
             error=records.error_message(result),
             dlq_reason=step.reason if isinstance(step, DeadLetter) else None)

    def _succeeded(self, meta: DeliveryMeta, result: AttemptResult, now: float) -> None:
        m = self._metrics
        children = self._successes.get(result.status)
        if children is None:
            klass = status_class(result.status)
            children = self._successes[result.status] = (self._child(m.deliveries, "success", klass),
                                                          self._child(m.attempt_duration, klass))
        deliveries, duration = children
        deliveries.inc()
        if meta.attempt == 1:
            self._child(m.first_attempts, "success").inc()
        duration.observe(result.duration_s)
        event_ts = event_epoch(meta.event_time)
        if event_ts is not None:
            m.end_to_end.observe(max(0.0, now - event_ts))
        log.info("delivery.attempted", delivery_id=meta.delivery_id, event_id=meta.event_id,
                 webhook_id=meta.webhook_id, account_id=meta.account_id, event_type=meta.event_type,
                 attempt=meta.attempt, status=result.status, duration_ms=round(result.duration_s * 1000, 1),
                 outcome="success", next_delay_ms=None, error_class=None, error=None, dlq_reason=None)

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, cached (``labels()`` takes a lock and validates on every call)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


def event_epoch(value: str | None) -> float | None:
    """``contract.times.epoch`` of an event time, with the router's own form (ISO-8601 with a zone) read
    straight away: ``epoch`` tries a number first, and a failed ``float()`` costs a raised exception."""
    if value and len(value) > 19 and value[10] == "T" and value[-1] == "Z":
        try:
            seconds = datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
        return seconds if 0 <= seconds <= LAST_SECOND else None
    return epoch(value)


def outcome(step: Step) -> str:
    if isinstance(step, Ack):
        return "success"
    return "retry" if isinstance(step, Retry) else "dead_letter"
