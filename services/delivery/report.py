"""What one finished attempt reports: its metrics and its one ``delivery.attempted`` log line."""

from __future__ import annotations

from typing import Any

from services.contract.deliveries import DeliveryMeta
from services.contract.times import epoch
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

    def attempted(self, meta: DeliveryMeta, result: AttemptResult, step: Step, now: float) -> None:
        """Count the attempt and log its one ``delivery.attempted`` line."""
        m, child = self._metrics, self._child
        said = outcome(step)
        klass = status_class(result.status)
        child(m.deliveries, said, klass).inc()
        if meta.attempt == 1:
            child(m.first_attempts, "success" if result.ok else "failure").inc()
        if result.sent:
            child(m.attempt_duration, klass).observe(result.duration_s)
        next_delay_ms = None
        if isinstance(step, Ack):
            event_ts = epoch(meta.event_time)
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
             outcome=said, next_delay_ms=next_delay_ms, error_class=records.error_class(result),
             error=records.error_message(result) if not result.ok else None,
             dlq_reason=step.reason if isinstance(step, DeadLetter) else None)

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, cached (``labels()`` takes a lock and validates on every call)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


def outcome(step: Step) -> str:
    if isinstance(step, Ack):
        return "success"
    return "retry" if isinstance(step, Retry) else "dead_letter"

