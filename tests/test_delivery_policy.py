"""The pure answer-to-step function, table-tested, and Retry-After parsing."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from services.delivery.policy import (
    Ack,
    AttemptResult,
    DeadLetter,
    Retry,
    RetrySchedule,
    Step,
    next_step,
    parse_retry_after,
)

NOW = 1_800_000_000.0
DEFAULT = RetrySchedule((5, 300, 1800, 7200, 18000, 36000, 36000), jitter=0.0)
SHORT = RetrySchedule((1, 2), jitter=0.0)


def status(code: int, retry_after: float | None = None) -> AttemptResult:
    return AttemptResult(status=code, retry_after=retry_after)


def error(error_class: str) -> AttemptResult:
    return AttemptResult(error_class=error_class, error_message="x")


def step(result: AttemptResult, attempt: int, schedule: RetrySchedule = DEFAULT) -> Step:
    return next_step(result, attempt, schedule, NOW, random.Random(7))


@pytest.mark.parametrize(
    ("result", "attempt", "expected"),
    [
        (status(200), 1, Ack()),
        (status(204), 8, Ack()),
        (status(299), 3, Ack()),
        (status(500), 1, Retry(5, 5, NOW + 5)),
        (status(500), 2, Retry(300, 300, NOW + 300)),
        (status(500), 7, Retry(36000, 36000, NOW + 36000)),
        (status(500), 8, DeadLetter("exhausted")),
        (status(404), 1, Retry(5, 5, NOW + 5)),
        (status(400), 1, Retry(5, 5, NOW + 5)),
        (status(301), 1, Retry(5, 5, NOW + 5)),
        (status(302), 1, Retry(5, 5, NOW + 5)),
        (status(100), 1, Retry(5, 5, NOW + 5)),
        (status(410), 1, DeadLetter("webhook_disabled", disable=True)),
        (status(410), 8, DeadLetter("webhook_disabled", disable=True)),
        (error("timeout"), 1, Retry(5, 5, NOW + 5)),
        (error("connect_timeout"), 2, Retry(300, 300, NOW + 300)),
        (error("connection_refused"), 1, Retry(5, 5, NOW + 5)),
        (error("connection_reset"), 1, Retry(5, 5, NOW + 5)),
        (error("dns"), 1, Retry(5, 5, NOW + 5)),
        (error("tls"), 1, Retry(5, 5, NOW + 5)),
        (error("circuit_open"), 1, Retry(5, 5, NOW + 5)),
        (error("circuit_open"), 8, DeadLetter("exhausted")),
        (error("blocked_destination"), 1, DeadLetter("blocked_destination")),
        (error("webhook_deleted"), 3, DeadLetter("webhook_deleted")),
        (error("webhook_disabled"), 1, DeadLetter("webhook_disabled")),
        (error("malformed_record"), 1, DeadLetter("malformed_record")),
        # Retry-After (429/503 only): at least that long, clamped to the schedule, in a tier as long.
        (status(429, 60), 1, Retry(60, 300, NOW + 60)),
        (status(503, 60), 1, Retry(60, 300, NOW + 60)),
        (status(503, 1), 1, Retry(5, 5, NOW + 5)),
        (status(503, 0), 2, Retry(300, 300, NOW + 300)),
        (status(429, 10**9), 1, Retry(36000, 36000, NOW + 36000)),
        (status(429, 301), 1, Retry(301, 1800, NOW + 301)),
        (status(429, 300), 1, Retry(300, 300, NOW + 300)),
        (status(500, 60), 1, Retry(5, 5, NOW + 5)),  # Retry-After only counts on 429/503
        (status(429, 60), 8, DeadLetter("exhausted")),
    ],
)
def test_next_step(result: AttemptResult, attempt: int, expected: Step) -> None:
    assert step(result, attempt) == expected


def test_short_schedule_exhausts_after_three_attempts() -> None:
    assert step(status(500), 1, SHORT) == Retry(1, 1, NOW + 1)
    assert step(status(500), 2, SHORT) == Retry(2, 2, NOW + 2)
    assert step(status(500), 3, SHORT) == DeadLetter("exhausted")
    assert SHORT.max_attempts == 3
    assert SHORT.tiers == (1, 2)


def test_retry_after_within_jitter_keeps_the_tier() -> None:
    schedule = RetrySchedule((10, 100), jitter=0.2)
    result = next_step(status(503, 11.9), 1, schedule, NOW, random.Random(1))
    assert isinstance(result, Retry)
    assert result.tier == 10
    assert result.delay >= 11.9


def test_jitter_stays_within_bounds_and_varies() -> None:
    schedule = RetrySchedule((100,), jitter=0.2)
    rng = random.Random(3)
    delays = set()
    for _ in range(500):
        result = next_step(status(500), 1, schedule, NOW, rng)
        assert isinstance(result, Retry)
        assert 80 <= result.delay <= 120
        assert result.tier == 100
        assert result.due_at == NOW + result.delay
        delays.add(round(result.delay, 3))
    assert len(delays) > 100


def test_deterministic_given_rng() -> None:
    schedule = RetrySchedule((5, 300), jitter=0.2)
    first = next_step(status(500), 1, schedule, NOW, random.Random(42))
    again = next_step(status(500), 1, schedule, NOW, random.Random(42))
    assert first == again


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", None),  # only ASCII digits: the HTTP parser has already trimmed the whitespace around a value
        ("0", 0.0),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected
