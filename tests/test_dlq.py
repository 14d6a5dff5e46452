"""Reading the DLQ: time parsing, parsing records, filters, windows read by offsets, `dlq list|show`."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest

from bench.fixtures import (
    DeadSpec,
    Store,
    cli_env,
    dead_letter,
    produce_dead_letters,
    put_webhooks,
    running_store,
    webhook,
)
from services.contract.attempts import AttemptRecord, key
from services.contract.dead_letters import DeadLetter, DlqFilter
from services.contract.times import iso_time as iso
from services.contract.topics import Topics
from services.ops.dlq import find_dead_letters, list_dead_letters
from services.replay.window import Window, parse_time
from services.shared import kafka
from services.shared.errors import ValidationError
from services.shared.output import plain_text
from services.shared.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", NOW - timedelta(hours=2)),
    ("30m", NOW - timedelta(minutes=30)),
    ("7d", NOW - timedelta(days=7)),
    ("90s", NOW - timedelta(seconds=90)),
    ("now", NOW),
    ("2026-02-28T10:00:00Z", datetime(2026, 2, 28, 10, tzinfo=UTC)),
    ("2026-02-28T10:00:00+02:00", datetime(2026, 2, 28, 8, tzinfo=UTC)),
    ("2026-02-28T10:00:00", datetime(2026, 2, 28, 10, tzinfo=UTC)),
    ("2026-02-28", datetime(2026, 2, 28, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


def test_parse_time_rejects_garbage_and_inverted_window() -> None:
    with pytest.raises(ValidationError, match="neither ISO-8601 nor relative"):
        parse_time("yesterday", NOW)
    with pytest.raises(ValidationError, match="after --since"):
        Window.parse("1h", "2h", NOW)


def _record(spec: DeadSpec, offset: int = 7) -> SimpleNamespace:
    key, value, headers = dead_letter(spec)
    return SimpleNamespace(partition=1, offset=offset, timestamp=int(spec.at * 1000), key=key, value=value,
                           headers=headers)


def test_dead_letter_from_record() -> None:
    spec = DeadSpec(webhook_id=11, account_id=3, at=NOW.timestamp(), event_type="contact_created", attempts=8)
    dead = DeadLetter.from_record(_record(spec))
    assert (dead.delivery_id, dead.webhook_id, dead.account_id) == (spec.delivery_id, 11, "3")
    assert (dead.event_type, dead.reason, dead.attempts, dead.last_status) == ("contact_created", "exhausted", 8, 503)
    assert dead.dead_lettered_at == pytest.approx(spec.at)
    assert dead.first_attempt_at == pytest.approx(spec.at - 27 * 3600)
    assert dead.last_outcome == "HTTP 503"
    assert dead.to_json()["dead_lettered_at"] == "2026-03-01T12:00:00.000Z"
    refused = DeadLetter.from_record(_record(DeadSpec(11, 3, NOW.timestamp(), last_status=None)))
    assert refused.last_outcome == "connect: connection refused"


def test_filters() -> None:
    dead = DeadLetter.from_record(_record(DeadSpec(11, 3, NOW.timestamp(), reason="webhook_disabled")))
    assert DlqFilter().matches(dead)
    assert DlqFilter.of(account="3", webhook="11,12", event="message_created", reason="webhook_disabled").matches(dead)
    assert not DlqFilter.of(account=4).matches(dead)
    assert not DlqFilter.of(webhook=12).matches(dead)
    assert not DlqFilter.of(event="contact_created").matches(dead)
    assert not DlqFilter.of(reason="exhausted").matches(dead)
    filt = DlqFilter.of(account="3", webhook="12,11", event="a,b")
    assert DlqFilter.from_json(filt.to_json()) == filt
    assert filt.to_json()["webhooks"] == [11, 12]


def _population(now: float) -> list[DeadSpec]:
    """Dead letters at -3h, -90m, -40m, -20m, -5m across two accounts, three webhooks, two reasons."""
    specs = []
    for minutes in (180, 90, 40, 20, 5):
        at = now - minutes * 60
        specs += [DeadSpec(101, 1, at, conversation=minutes), DeadSpec(102, 1, at, "contact_created", conversation=1),
                  DeadSpec(201, 2, at, reason="webhook_disabled", last_status=410, attempts=1, conversation=minutes)]
    return specs


async def test_list_reads_only_the_window_and_filters_exactly(settings: Settings, topics: Topics) -> None:
    now = time.time()
    specs = _population(now)
    async with kafka.started(kafka.producer(settings)) as producer:
        await produce_dead_letters(producer, topics.dlq, specs)

    hour = Window.parse("1h", None)
    listing = await list_dead_letters(settings, DlqFilter(), hour)
    in_hour = [s for s in specs if s.at >= now - 3600]
    assert listing.stats.records == len(in_hour) == 9  # nothing outside the window was read
    assert {d.delivery_id for d in listing.items} == {s.delivery_id for s in in_hour}
    assert [d.dead_lettered_at for d in listing.items] == sorted(d.dead_lettered_at for d in listing.items)

    by_webhook = await list_dead_letters(settings, DlqFilter.of(webhook=101), Window.parse("2h", "30m"))
    assert {d.delivery_id for d in by_webhook.items} == {
        s.delivery_id for s in specs if s.webhook_id == 101 and now - 7200 <= s.at < now - 1800}
    assert by_webhook.matched == 2

    disabled = await list_dead_letters(settings, DlqFilter.of(account=2, reason="webhook_disabled"),
                                       Window.parse("1d", None), limit=2)
    assert disabled.matched == 5
    assert [d.dead_lettered_at for d in disabled.items] == pytest.approx([now - 20 * 60, now - 5 * 60], abs=0.01)

    events = await list_dead_letters(settings, DlqFilter.of(event="contact_created"), Window.parse("1d", None))
    assert {d.webhook_id for d in events.items} == {102} and events.matched == 5

    found = await find_dead_letters(settings, specs[0].delivery_id, Window.parse("1d", None))
    assert [d.delivery_id for d in found] == [specs[0].delivery_id]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", *args], capture_output=True, text=True,
                          env=cli_env(settings), timeout=60, check=False)


async def test_cli_list_table_json_and_show(settings: Settings, topics: Topics) -> None:
    now = time.time()
    hook = webhook(1, webhook_id=101, url="http://127.0.0.1:9/hook")
    async with running_store(settings) as store:
        await put_webhooks(store, [hook])
        await _attempt_log(store, topics, DeadSpec(101, 1, now - 60), now)
    specs = [DeadSpec(101, 1, now - 60), DeadSpec(201, 2, now - 30, reason="webhook_disabled", last_status=410)]
    async with kafka.started(kafka.producer(settings)) as producer:
        await produce_dead_letters(producer, topics.dlq, specs)

    table = _cli(settings, "dlq", "list", "--since", "1h")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TIME", "ACCOUNT", "WEBHOOK", "EVENT", "REASON", "ATTEMPTS", "LAST", "STATUS/ERROR"]
    assert "HTTP 503" in lines[1] and "webhook_disabled" in lines[2] and "2 matching" in lines[3]

    listed = _cli(settings, "dlq", "list", "--since", "1h", "--webhook", "101", "--json")
    items = orjson.loads(listed.stdout)
    assert len(items) == 1
    required = {"delivery_id", "event_id", "webhook_id", "account_id", "event", "reason", "attempts", "last_error",
                "dead_lettered_at"}
    assert required <= set(items[0])
    assert items[0]["delivery_id"] == specs[0].delivery_id and items[0]["webhook_id"] == 101

    shown = _cli(settings, "dlq", "show", specs[0].delivery_id, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = orjson.loads(shown.stdout)
    assert detail["headers"]["akece_dlq_reason"] == "exhausted"
    assert orjson.loads(detail["body"])["event"] == "message_created"
    assert [a["attempt"] for a in detail["attempt_history"]] == [1, 2, 3]
    assert detail["webhook"]["enabled"] is True and "secrets" not in detail["webhook"]
    assert detail["replayed_by"] == []
    text = _cli(settings, "dlq", "show", specs[0].delivery_id)
    assert "attempt history:" in text.stdout and "webhook 101 (account 1) enabled" in text.stdout
    missing = _cli(settings, "dlq", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 4


async def _attempt_log(store: Store, topics: Topics, spec: DeadSpec, now: float) -> None:
    """Attempts 1-3 of the spec's delivery on the attempt log, and one of another delivery of the webhook."""
    for attempt, delivery in ((1, spec.delivery_id), (1, "another-delivery"), (2, spec.delivery_id),
                              (3, spec.delivery_id)):
        record = AttemptRecord(delivery_id=delivery, event_id=spec.event, webhook_id=spec.webhook_id,
                               account_id=str(spec.account_id), event_type=spec.event_type, attempt=attempt,
                               status=503, error_class="http_status", error_message="HTTP 503", duration_ms=12.5,
                               outcome="retry", next_delay_ms=1000, time=iso(now - 300 + attempt))
        await kafka.send(store.producer, topics.attempts, record.encode(), key=key(spec.webhook_id),
                         headers=[], timeout=10)


async def test_status_screen(settings: Settings, topics: Topics) -> None:
    from aiokafka import TopicPartition

    from services.ops import status

    now = time.time()
    retry = topics.retry(1)
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=801, enabled=False), webhook(1, webhook_id=802)])
        await produce_dead_letters(store.producer, topics.dlq, [
            DeadSpec(801, 1, now - 5 * 3600), DeadSpec(801, 1, now - 1800),
            DeadSpec(801, 1, now - 1700, conversation=2), DeadSpec(802, 1, now - 1600, reason="webhook_disabled")])
        for due in (now + 100, now + 200):
            await kafka.send(store.producer, retry, b"{}", key=b"801:1", headers=[("akece_due_at", str(due).encode())],
                             timeout=10)
        for _ in range(3):
            await kafka.send(store.producer, topics.deliveries, b"{}", key=b"k", headers=[], timeout=10)
        group = f"{settings.topic_prefix}.delivery"
        async with kafka.started(kafka.consumer(settings, group_id=group)) as consumer:
            ends = await kafka.end_offsets(consumer, topics.deliveries)
            [tp] = [tp for tp, end in ends.items() if end == 3]
            consumer.assign([tp])
            await consumer.commit({TopicPartition(tp.topic, tp.partition): 1})
        report = await status.collect(settings, store.table)

    assert report.lag == {(group, topics.deliveries): 2}
    tier = next(t for t in report.tiers if t.topic == retry)
    assert tier.depth == 2 and tier.oldest_due == pytest.approx(now + 100, abs=0.01)
    assert report.dlq is not None and (report.dlq.hour_total, report.dlq.day_total) == (3, 4)
    assert report.dlq.hour == {"exhausted": 2, "webhook_disabled": 1}
    assert report.dlq.day == {"exhausted": 3, "webhook_disabled": 1}
    assert [(w["id"], w["reason"]) for w in report.disabled] == [(801, "HTTP 410 Gone")]
    text = plain_text(status.render(report))
    for heading in ("Consumer lag", "Retry tiers", "Dead letters", "Disabled webhooks (1)", "Open circuits"):
        assert heading in text
    assert re.search(r"\(due in \d+s\)", text)
    shown = _cli(settings, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["dead_letters"]["last_day"]["total"] == 4
