"""What an attempt's result means: the pure functions ``precheck`` and ``next_step``, the error-class
vocabulary (``ErrorClass``) and Retry-After parsing.

    precheck(webhook_id, webhook, fresh=..., open_failures=...) -> AttemptResult (not sent) | None (send)
    next_step(result, attempt, schedule, now, rng) -> Ack | Retry | DeadLetter

- 2xx: ``Ack``.
- 410 Gone: ``DeadLetter("webhook_disabled", disable=True)``: the worker disables the webhook.
- A permanent failure (blocked destination, deleted or disabled webhook, malformed record):
  ``DeadLetter(<that reason>)`` at once.
- Anything else (another status, a 3xx, timeout, refused, reset, DNS, TLS, an open circuit): the
  next delay of the schedule, jittered, or ``DeadLetter("exhausted")`` after the last one. A 429 or
  503 with ``Retry-After`` waits at least that long, clamped to the schedule's bounds, in the
  smallest retry tier that is at least as long (so it never holds up the records behind it).

No clock and no randomness of its own: ``now`` and ``rng`` come in, so the table tests are exact.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum

from services.shared.settings import RetrySettings
from services.shared.webhooks import Webhook


class ErrorClass(StrEnum):
    """Why an attempt failed, as written in attempt records, retry and DLQ headers and logs (a ``str``:
    records keep these exact strings). A failed response with no other class is ``http_status``."""

    HTTP_STATUS = "http_status"
    BLOCKED_DESTINATION = "blocked_destination"
    INVALID_URL = "invalid_url"
    CONNECT_TIMEOUT = "connect_timeout"
    TIMEOUT = "timeout"
    DNS = "dns"
    TLS = "tls"
    CONNECTION_REFUSED = "connection_refused"
    DISCONNECTED = "disconnected"
    CONNECTION_RESET = "connection_reset"
    PAYLOAD_ERROR = "payload_error"
    PROTOCOL_ERROR = "protocol_error"
    # Decided by the worker, not the endpoint:
    WEBHOOK_DELETED = "webhook_deleted"
    WEBHOOK_DISABLED = "webhook_disabled"
    MALFORMED_RECORD = "malformed_record"
    CIRCUIT_OPEN = "circuit_open"
    WEBHOOK_BACKLOG = "webhook_backlog"
    SUBSCRIPTIONS_BEHIND = "subscriptions_behind"
    INTERNAL = "internal"  # an unexpected error while handling one record


E = ErrorClass
PERMANENT = frozenset({E.BLOCKED_DESTINATION, E.WEBHOOK_DELETED, E.WEBHOOK_DISABLED, E.MALFORMED_RECORD,
                       E.INVALID_URL})
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_DELTA_DIGITS = 10  # about 317 years: more is not a delay but noise (and a 5,000-digit int is slow)
MAX_RETRY_AFTER_CHARS = 64
_DELTA = re.compile(rf"[0-9]{{1,{MAX_DELTA_DIGITS}}}")  # [0-9], not \d: ASCII digits only
_DAY, _MONTH = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)", "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = "[0-9]{2}:[0-9]{2}:[0-9]{2}"
_HTTP_DATES = (
    re.compile(rf"{_DAY}, [0-9]{{2}} {_MONTH} [0-9]{{4}} {_TIME} GMT"),  # IMF-fixdate
    re.compile(rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), [0-9]{{2}}-{_MONTH}-[0-9]{{2}} "
               rf"{_TIME} GMT"),  # RFC 850
    re.compile(rf"{_DAY} {_MONTH} (?:[0-9]{{2}}| [0-9]) {_TIME} [0-9]{{4}}"),  # asctime
)
# The worker did not call the endpoint: a retriable failure (it counts against the schedule).
# ``internal`` (an unexpected error of ours while handling the record) is not the endpoint's failure either:
# it neither opens the webhook's circuit nor counts in its health.
SKIPPED = frozenset({E.CIRCUIT_OPEN, E.WEBHOOK_BACKLOG, E.SUBSCRIPTIONS_BEHIND, E.INTERNAL})
# Attempts that never reached the endpoint and say nothing of its health (a circuit's readers skip them).
NOT_SENT = frozenset({E.WEBHOOK_DELETED, E.WEBHOOK_DISABLED, E.MALFORMED_RECORD, E.WEBHOOK_BACKLOG,
                      E.SUBSCRIPTIONS_BEHIND, E.BLOCKED_DESTINATION})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt: a response (``status``) or an error (``error_class`` and message)."""

    status: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    retry_after: float | None = None  # seconds, from a 429/503's Retry-After
    body: bytes = b""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def sent(self) -> bool:
        """Whether an HTTP request went out (or was tried): not a skip by the worker."""
        return self.error_class not in PERMANENT and self.error_class not in SKIPPED


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delays after attempt 1, 2, ... and the relative jitter applied to each."""

    delays: tuple[float, ...]
    jitter: float = 0.0

    @classmethod
    def from_settings(cls, retry: RetrySettings) -> RetrySchedule:
        return cls(tuple(retry.schedule), retry.jitter)

    @property
    def tiers(self) -> tuple[float, ...]:
        """The distinct delays, ascending: one retry topic each."""
        return tuple(sorted(set(self.delays)))

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float  # seconds from now until the next attempt is due
    tier: float  # the retry topic's delay (``Topics.retry(tier)``)
    due_at: float  # unix time


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    disable: bool = False  # the webhook must be disabled (410 Gone)


Step = Ack | Retry | DeadLetter


def precheck(webhook_id: int, webhook: Webhook | None, *, fresh: bool,
             open_failures: int | None) -> AttemptResult | None:
    """Why a delivery to ``webhook`` (``None``: not in the table) is not sent now, or ``None`` to send it.

    ``fresh``: the table is confirmed current as of the record's fetch (else a deleted or disabled
    verdict may be stale: retried, never dead-lettered). ``open_failures``: the consecutive failures of
    the webhook's open circuit, ``None`` when the circuit lets a request through."""
    if webhook is None or not webhook.enabled:
        if not fresh:
            return AttemptResult(error_class=E.SUBSCRIPTIONS_BEHIND,
                                 error_message="this worker's subscriptions table is behind the topic; "
                                               "the webhook's state could not be confirmed")
        if webhook is None:
            return AttemptResult(error_class=E.WEBHOOK_DELETED, error_message=f"webhook {webhook_id} was deleted")
        return AttemptResult(error_class=E.WEBHOOK_DISABLED,
                             error_message=webhook.disabled_reason or "webhook disabled")
    if open_failures is not None:
        return AttemptResult(error_class=E.CIRCUIT_OPEN,
                             error_message=f"circuit open after {open_failures} consecutive failures")
    return None


def next_step(result: AttemptResult, attempt: int, schedule: RetrySchedule, now: float,
              rng: random.Random) -> Step:
    """What to do after ``attempt`` (1-based) ended with ``result``."""
    if result.ok:
        return Ack()
    if result.status == 410:
        return DeadLetter(E.WEBHOOK_DISABLED, disable=True)
    if result.error_class in PERMANENT:
        return DeadLetter(result.error_class or "error")
    if attempt > len(schedule.delays):
        return DeadLetter("exhausted")
    base = schedule.delays[attempt - 1]
    delay = base * (1 + rng.uniform(-schedule.jitter, schedule.jitter)) if schedule.jitter else base
    tier = base
    if result.status in RETRY_AFTER_STATUSES and result.retry_after is not None:
        tiers = schedule.tiers
        asked = min(max(result.retry_after, tiers[0]), tiers[-1])
        if asked > delay:
            delay = asked
            if asked > base * (1 + schedule.jitter):
                tier = next(t for t in tiers if t >= asked)
    return Retry(delay=delay, tier=tier, due_at=now + delay)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` (then the schedule applies). Never raises.

    Only RFC 9110's two forms count: delta-seconds as ASCII digits (at most ``MAX_DELTA_DIGITS``), or an
    HTTP date in one of its three formats (IMF-fixdate, RFC 850, asctime). Anything else (``1e3``, ``-1``,
    ``1.5``, surrounding spaces, other scripts' digits such as ``²`` or ``٣``, a 5,000-digit number, a
    date out of range) is ignored."""
    if not value or len(value) > MAX_RETRY_AFTER_CHARS:
        return None
    if _DELTA.fullmatch(value):
        return float(value)
    if not any(form.fullmatch(value) for form in _HTTP_DATES):
        return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # asctime() format: RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds)
