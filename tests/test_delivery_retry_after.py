"""Retry-After end to end: a delivery worker on the real broker against a receiver on 127.0.0.1.

Schedule 0.5 s, 4 s (no jitter): without Retry-After the retry would come after 0.5 s, and 4 s is
the longest tier, the cap of a Retry-After (``services.delivery.policy``: clamped to the schedule's
bounds, in the smallest tier at least as long). Each test first has the worker deliver a warm-up
record, so it has joined its group and fetches before the one under test is produced (an HTTP-date
Retry-After is relative to when it is sent). An HTTP date is accepted in all three formats of
RFC 9110 5.6.7 (IMF-fixdate, RFC 850, asctime). Tests wait for events (receiver arrivals, topic
records, the worker's drain), never for time; delays are asserted from the receiver's timestamps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest

from services.contract import headers as h
from services.shared import kafka
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import Delivery, Stack, delivery, make_webhook, produce, read_topic, stack
from tests.receiver import Behavior, Receiver, Recorded

SHORT, LONGEST = 0.5, 4.0  # the retry schedule: the cap of a Retry-After is the longest tier
WAIT_S = 15.0  # bound of each wait (the longest expected one is ~4 s)
EPS = 0.001  # due times travel in a header with millisecond resolution


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return make_settings(kafka_bootstrap, retry={"schedule": [SHORT, LONGEST], "jitter": 0.0})


@dataclass
class Story:
    item: Delivery
    requests: list[Recorded]  # to the webhook under test, in arrival order
    attempts: list[dict[str, Any]]  # its attempt log, by attempt
    retry_tiers: dict[float, int]  # records on each retry tier
    retried: dict[str, str]  # headers of the record the first attempt put on its retry tier


async def topic_size(settings: Settings, topic: str) -> int:
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        return sum((await kafka.end_offsets(consumer, topic)).values())


async def deliver(s: Stack, receiver: Receiver, path: str, behaviors: Callable[[], Sequence[Behavior]]) -> Story:
    """One delivery to ``path``, answered by ``behaviors()`` (made once the worker fetches), then 200s;
    returns once the retry arrived and the worker drained."""
    warm, hook = make_webhook(receiver.url("/warm")), make_webhook(receiver.url(path))
    await s.add(warm, hook)
    async with s.running():
        await produce(s.settings, [delivery(warm)])
        await receiver.wait_for(1, timeout=WAIT_S, path="/warm")
        receiver.script(path, *behaviors())
        item = delivery(hook)
        await produce(s.settings, [item])
        early = [orjson.loads(r.value) for r in await read_topic(s.settings, s.topics.attempts, 2, timeout=WAIT_S)]
        try:
            requests = (await receiver.wait_for(2, timeout=WAIT_S, path=path))[:2]
        except TimeoutError:
            pytest.fail(f"no retry within {WAIT_S}s; the attempt log so far: {early}")
        log = [orjson.loads(r.value) for r in await read_topic(s.settings, s.topics.attempts, 3, timeout=WAIT_S)]
    attempts = sorted((a for a in log if a["delivery_id"] == item.delivery_id), key=lambda a: a["attempt"])
    tiers = {delay: await topic_size(s.settings, s.topics.retry(delay)) for delay in (SHORT, LONGEST)}
    retried: dict[str, str] = {}
    for delay, size in tiers.items():
        if size:
            [record] = await read_topic(s.settings, s.topics.retry(delay), 1)
            assert record.value == item.value
            retried = h.to_dict(record.headers)
    return Story(item, requests, attempts, tiers, retried)


async def check_retried_once_then_delivered(s: Stack, receiver: Receiver, story: Story) -> None:
    """What every test here expects after its own checks: one retry in the 4 s tier, then a 200,
    nothing more attempted, nothing dead-lettered; the attempt log and the counters say so."""
    path = story.requests[0].path
    assert len(receiver.for_path(path)) == 2
    assert {r.headers["webhook-id"] for r in story.requests} == {story.item.delivery_id}
    assert [r.body for r in story.requests] == [story.item.value] * 2
    assert story.requests[1].answered == 200
    assert [(a["attempt"], a["outcome"]) for a in story.attempts] == [(1, "retry"), (2, "success")]
    assert story.attempts[1]["status"] == 200 and story.attempts[1]["next_delay_ms"] is None
    assert story.retry_tiers == {SHORT: 0, LONGEST: 1}  # the smallest tier at least as long as the wait
    assert story.retried[h.ATTEMPT] == "2"
    assert await topic_size(s.settings, s.topics.dlq) == 0
    for klass in ("2xx", "4xx", "5xx", "none"):
        assert s.sample("akece_webhooks_deliveries_total", outcome="dead_letter", status_class=klass) == 0
    assert s.sample("akece_webhooks_deliveries_total", outcome="success", status_class="2xx") == 2  # warm-up too
    assert s.sample("akece_webhooks_first_attempts_total", outcome="failure") == 1
    assert s.sample("akece_webhooks_retries_scheduled_total", tier="4s") == 1
    assert s.sample("akece_webhooks_retries_scheduled_total", tier="500ms") == 0


def waited(story: Story) -> float:
    """From the first answer leaving the receiver to the retry arriving."""
    first, second = story.requests
    assert first.finished_at is not None
    return second.time - first.finished_at


async def test_429_with_retry_after_seconds_waits_that_long_then_succeeds(settings: Settings,
                                                                          receiver: Receiver) -> None:
    async with stack(settings) as s:
        story = await deliver(s, receiver, "/busy", lambda: [Behavior(status=429, retry_after="2")])
        first = story.attempts[0]
        assert story.requests[0].answered == 429
        assert (first["status"], first["error_class"], first["outcome"]) == (429, "http_status", "retry")
        assert first["next_delay_ms"] == 2000  # Retry-After, not the schedule's 500 ms
        assert waited(story) >= 2.0 - EPS  # never before Retry-After
        due = float(story.retried[h.DUE_AT]) - float(story.retried[h.LAST_ATTEMPT_AT])
        assert 2.0 - EPS <= due < LONGEST  # due after Retry-After, in the 4 s tier (the smallest as long)
        assert story.retried[h.LAST_STATUS] == "429"
        assert s.sample("akece_webhooks_deliveries_total", outcome="retry", status_class="4xx") == 1
        await check_retried_once_then_delivered(s, receiver, story)


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def rfc850(when: datetime) -> str:
    """``Sunday, 06-Nov-94 08:49:37 GMT``: obsolete, but recipients must accept it (RFC 9110 5.6.7)."""
    return f"{WEEKDAYS[when.weekday()]}, {when:%d}-{MONTHS[when.month - 1]}-{when:%y %H:%M:%S} GMT"


def asctime(when: datetime) -> str:
    """``Sun Nov  6 08:49:37 1994``: obsolete, no zone (it is GMT), but recipients must accept it."""
    return f"{DAYS[when.weekday()]} {MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S %Y}"


@pytest.mark.parametrize(
    "http_date",
    [lambda when: format_datetime(when, usegmt=True), rfc850, asctime],
    ids=["imf-fixdate", "rfc850", "asctime"],
)
async def test_503_with_an_http_date_retry_after_waits_until_that_date(settings: Settings, receiver: Receiver,
                                                                       http_date: Callable[[datetime], str]) -> None:
    until: list[datetime] = []

    def behaviors() -> list[Behavior]:
        until.append(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3))
        return [Behavior(status=503, retry_after=http_date(until[0]))]

    async with stack(settings) as s:
        story = await deliver(s, receiver, "/maintenance", behaviors)
        date = until[0].timestamp()
        first, second = story.requests
        assert first.answered == 503 and first.finished_at is not None
        assert date - first.finished_at > 1.0  # the date was still well ahead: 500 ms would be too early
        assert second.time >= date - EPS  # not before the date
        attempt = story.attempts[0]
        assert (attempt["status"], attempt["outcome"]) == (503, "retry")
        assert 1000 < attempt["next_delay_ms"] <= 3000
        assert float(story.retried[h.DUE_AT]) >= date - EPS
        assert story.retried[h.LAST_STATUS] == "503"
        assert s.sample("akece_webhooks_deliveries_total", outcome="retry", status_class="5xx") == 1
        await check_retried_once_then_delivered(s, receiver, story)


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        (429, lambda: "3600"),
        (503, lambda: format_datetime(datetime.now(UTC) + timedelta(days=2), usegmt=True)),
    ],
    ids=["seconds", "http-date"],
)
async def test_a_retry_after_beyond_the_longest_tier_is_capped_to_it(settings: Settings, receiver: Receiver,
                                                                     status: int,
                                                                     retry_after: Callable[[], str]) -> None:
    async with stack(settings) as s:
        story = await deliver(s, receiver, "/later", lambda: [Behavior(status=status, retry_after=retry_after())])
        attempt = story.attempts[0]
        assert (attempt["status"], attempt["outcome"]) == (status, "retry")
        assert attempt["next_delay_ms"] == LONGEST * 1000  # capped: not an hour, not two days
        assert waited(story) >= LONGEST - EPS  # still waits the cap, never less
        due = float(story.retried[h.DUE_AT]) - float(story.retried[h.LAST_ATTEMPT_AT])
        assert LONGEST - EPS <= due < LONGEST + 1.0
        assert s.sample("akece_webhooks_deliveries_total", outcome="retry", status_class=f"{status // 100}xx") == 1
        await check_retried_once_then_delivered(s, receiver, story)
