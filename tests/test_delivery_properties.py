"""Property tests of the delivery worker's pure parts over arbitrary inputs: they never raise (or only the
errors they document), whatever a receiver answers or a producer writes into a record's headers.

- ``next_step`` over any ``AttemptResult`` (any status, error class, Retry-After including NaN and
  infinities) and any schedule: an ``Ack`` exactly for a 2xx, a ``Retry`` due in a finite, non-negative
  delay of one of the schedule's tiers, a ``DeadLetter`` after the last attempt.
- What the worker writes from that result (retry and DLQ headers, the attempt record) never raises and
  the attempt record decodes back.
- Reading a delivery record's headers (``headers.to_dict``, ``DeliveryMeta.from_headers``) over arbitrary
  bytes raises at most the ``KeyError``/``ValueError`` the worker turns into ``malformed_record``.
- The API's token reading over arbitrary header values never raises.

Retry-After parsing has its own properties in ``tests/test_urls.py``; the router's CloudEvents reading
in ``tests/test_router_properties.py``.
"""

from __future__ import annotations

import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.contract import attempts
from services.contract import headers as h
from services.contract.deliveries import DeliveryMeta, first_attempt_headers
from services.delivery import records
from services.delivery.policy import PERMANENT, Ack, AttemptResult, DeadLetter, Retry, RetrySchedule, next_step
from services.shared.auth import token_from_headers

PROPERTIES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)  # what Python strings we make can hold
error_classes = st.one_of(st.none(), st.sampled_from(sorted(PERMANENT)), st.sampled_from(
    ["timeout", "connect_timeout", "dns", "tls", "protocol_error", "payload_error", "circuit_open", "internal",
     "webhook_backlog", "subscriptions_behind"]), text)
results = st.builds(
    AttemptResult,
    status=st.one_of(st.none(), st.integers(-1000, 1000), st.integers()),
    error_class=error_classes,
    error_message=st.one_of(st.none(), text),
    retry_after=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    body=st.binary(max_size=200),
    duration_s=st.floats(0, 3600),
)
# What the sender can hand on: aiohttp's parser admits three-digit statuses only, an attempt lasts finite time.
sent_results = st.builds(AttemptResult, status=st.one_of(st.none(), st.integers(100, 999)), error_class=error_classes,
                         error_message=st.one_of(st.none(), text),
                         retry_after=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
                         body=st.binary(max_size=200), duration_s=st.floats(0, 3600))
schedules = st.builds(RetrySchedule, st.lists(st.floats(0.001, 86_400 * 7), min_size=1, max_size=6).map(tuple),
                      st.floats(0, 1))


@PROPERTIES
@given(result=results, schedule=schedules, data=st.data(), now=st.floats(0, 4e9), seed=st.integers())
def test_next_step_answers_every_result_within_the_schedule(result: AttemptResult, schedule: RetrySchedule,
                                                            data: st.DataObject, now: float, seed: int) -> None:
    attempt = data.draw(st.integers(1, schedule.max_attempts + 2), label="attempt")
    step = next_step(result, attempt, schedule, now, random.Random(seed))
    assert isinstance(step, Ack) == result.ok
    if isinstance(step, Retry):
        assert attempt <= len(schedule.delays)
        assert result.error_class not in PERMANENT and result.status != 410
        assert step.tier in schedule.tiers
        assert math.isfinite(step.delay) and step.delay >= 0 and step.due_at == now + step.delay
        assert step.delay <= max(schedule.delays) * (1 + schedule.jitter) + 1e-9
    if isinstance(step, DeadLetter):
        assert step.reason in PERMANENT | {"exhausted", "webhook_disabled"}
        assert step.disable == (result.status == 410)
    if not result.ok and attempt > len(schedule.delays):
        assert isinstance(step, DeadLetter)


META = DeliveryMeta.from_headers(h.to_dict(first_attempt_headers(
    event_id="e1", event_type="message_created", account_id="7", webhook_id=42, event_time=None,
    routed_time="2026-03-04T05:06:07.890Z")))


@PROPERTIES
@given(result=sent_results, schedule=schedules, seed=st.integers(), now=st.floats(0, 4e9))
def test_what_the_worker_writes_from_any_result_never_raises(result: AttemptResult, schedule: RetrySchedule,
                                                             seed: int, now: float) -> None:
    step = next_step(result, 1, schedule, now, random.Random(seed))
    base = first_attempt_headers(event_id="e1", event_type="message_created", account_id="7", webhook_id=42,
                                 event_time=None, routed_time="2026-03-04T05:06:07.890Z")
    if isinstance(step, Retry):
        assert h.to_dict(records.retry_headers(base, META, result, step, now))[h.ATTEMPT] == "2"
    reason = step.reason if isinstance(step, DeadLetter) else "exhausted"
    assert h.to_dict(records.dlq_headers(base, META, result, reason, now, now))[h.DLQ_REASON] == reason
    value = records.attempt_record(META, result, outcome="retry", next_delay_s=getattr(step, "delay", None),
                                   dlq_reason=None, started_at=now, response_limit=64)
    decoded = attempts.decode(value)
    assert decoded is not None and decoded.status == result.status
    assert decoded.error_class == records.error_class(result)


header_names = st.one_of(st.sampled_from([h.DELIVERY_ID, h.EVENT_ID, h.EVENT_TYPE, h.ACCOUNT_ID, h.WEBHOOK_ID,
                                          h.ATTEMPT, h.EVENT_TIME, h.FIRST_ATTEMPT_AT, h.DUE_AT, h.LAST_STATUS,
                                          h.LAST_ERROR, h.REPLAY_ID]), st.text(max_size=12))
header_values = st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=20).map(str.encode),
                          st.sampled_from([b"1", b"0", b"-5", b"nan", b"inf", b"1e999", b"\xd9\xa3", b"\xc2\xb2",
                                           b"9" * 5000, b" 7 ", b"\xff\xfe"]))


@PROPERTIES
@given(st.lists(st.tuples(header_names, header_values), max_size=14))
def test_delivery_headers_over_arbitrary_bytes_raise_only_what_marks_a_record_malformed(
        headers: list[tuple[str, bytes | None]]) -> None:
    values = h.to_dict(headers)
    assert all(isinstance(v, str) for v in values.values())
    try:
        meta = DeliveryMeta.from_headers(values)
    except (KeyError, ValueError):
        return
    assert meta.attempt >= 1


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["api_access_token", "api-access-token", "Authorization", "X-Other"]),
                       st.text(max_size=40), max_size=4))
def test_reading_the_api_token_never_raises(headers: dict[str, str]) -> None:
    token = token_from_headers(headers)
    assert token is None or (token and token == token.strip())
