"""What a finished attempt writes: retry and dead-letter headers, and the attempt log record.

Retry and DLQ records keep the original value (the exact body) and key; their headers are the
original ones with the story so far replaced (``services.contract.headers.replace``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from services.contract import headers as h
from services.contract.attempts import AttemptRecord
from services.contract.deliveries import DeliveryMeta
from services.contract.times import iso_time
from services.delivery.policy import AttemptResult, ErrorClass, Retry

DLQ_RESPONSE_BYTES = 2048  # of the last response, in a DLQ header


class _IsoTimes:
    """``contract.times.iso_time`` of a Unix time (one per attempt record), the date and time of day
    formatted once a second; the same rounding (to the microsecond, half to even, then milliseconds cut)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, moment: float) -> str:
        second = int(moment)
        micro = round((moment - second) * 1_000_000)
        if micro == 1_000_000:
            second, micro = second + 1, 0
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{micro // 1000:03d}Z"


started_iso = _IsoTimes()



def error_class(result: AttemptResult) -> str | None:
    if result.ok:
        return None
    return result.error_class or ErrorClass.HTTP_STATUS


def error_message(result: AttemptResult) -> str | None:
    if result.ok:
        return None
    return result.error_message or f"HTTP {result.status}"


def excerpt(body: bytes, limit: int) -> str:
    return body[:limit].decode("utf-8", "replace")


def _story(meta: DeliveryMeta, result: AttemptResult, started_at: float) -> dict[str, str | int | float | None]:
    return {
        h.FIRST_ATTEMPT_AT: meta.first_attempt_at or started_at,
        h.LAST_ATTEMPT_AT: started_at,
        h.LAST_STATUS: result.status,
        h.LAST_ERROR_CLASS: error_class(result),
        h.LAST_ERROR: error_message(result),
    }


def retry_headers(headers: Sequence[tuple[str, bytes | None]], meta: DeliveryMeta, result: AttemptResult,
                  step: Retry, started_at: float) -> h.Headers:
    return h.replace(headers, {**_story(meta, result, started_at), h.ATTEMPT: meta.attempt + 1,
                               h.DUE_AT: round(step.due_at, 3), h.LAST_RESPONSE: None})


def dlq_headers(headers: Sequence[tuple[str, bytes | None]], meta: DeliveryMeta, result: AttemptResult,
                reason: str, started_at: float, now: float) -> h.Headers:
    attempts = meta.attempt if result.sent else meta.attempt - 1
    return h.replace(headers, {
        **_story(meta, result, started_at),
        h.DLQ_REASON: reason,
        h.ATTEMPTS: attempts,
        h.DLQ_AT: round(now, 3),
        h.DUE_AT: None,
        h.LAST_RESPONSE: excerpt(result.body, DLQ_RESPONSE_BYTES) if result.body else None,
    })


def attempt_record(meta: DeliveryMeta, result: AttemptResult, *, outcome: str, next_delay_s: float | None,
                   dlq_reason: str | None, started_at: float, response_limit: int) -> bytes:
    """One line of the attempt log (``Topics.attempts``, keyed by webhook id): an ``AttemptRecord``."""
    return AttemptRecord(
        delivery_id=meta.delivery_id,
        event_id=meta.event_id,
        webhook_id=meta.webhook_id,
        account_id=meta.account_id,
        event_type=meta.event_type,
        attempt=meta.attempt,
        status=result.status,
        error_class=error_class(result),
        error_message=error_message(result),
        duration_ms=round(result.duration_s * 1000, 3),
        outcome=outcome,
        next_delay_ms=round(next_delay_s * 1000) if next_delay_s is not None else None,
        dlq_reason=dlq_reason,
        time=started_iso(started_at) if started_at >= 0 else iso_time(started_at),
        response_excerpt=excerpt(result.body, response_limit) if result.body else None,
        replay_id=meta.replay_id,
    ).encode()
