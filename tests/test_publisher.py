"""Publisher: CloudEvents records round trip on the real broker; invalid payloads are refused."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pytest

from schemas.examples import GUIDE_EXAMPLE, example
from services.publisher.cli import parse_payloads
from services.publisher.events import event_key, prepare
from services.publisher.publisher import Publisher
from services.shared import headers as h
from services.shared import kafka
from services.shared.errors import ValidationError
from services.shared.settings import Settings
from services.shared.topics import Topics


def test_prepare_sets_cloudevents_headers_and_key() -> None:
    payload = example("message_created", account_id=7, conversation_id=42)
    event = prepare(payload, new_id=lambda: "evt-1", now=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    headers = h.to_dict(event.headers)
    assert headers == {
        "ce_specversion": "1.0", "ce_id": "evt-1", "ce_source": "akece://core", "ce_type": "message_created",
        "ce_time": "2026-01-02T03:04:05.000Z", "ce_accountid": "7", "content-type": "application/json",
    }
    assert event.key == b"7:42"
    assert orjson.loads(event.value) == payload


def test_bytes_pass_through_untouched() -> None:
    raw = b'{"event":"message_created", "id":"1",  "account":{"id":"1","name":"My Company"},"x_new":1}'
    assert prepare(raw).value is raw


def test_key_without_conversation_is_the_account() -> None:
    assert event_key("3", None) == b"3"
    assert prepare(example("contact_created", account_id=3)).key == b"3"


@pytest.mark.parametrize(("payload", "field"), [
    ({"event": "message_created", "account": {"id": 1}, "private": "yes"}, "private"),
    ({"event": "no_such_event", "account": {"id": 1}}, "event"),
    ({"account": {"id": 1}}, "event"),
])
def test_invalid_payload_names_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        prepare(payload)
    assert field in str(info.value)


def test_parse_payloads_accepts_array_and_lines() -> None:
    assert parse_payloads('[{"a": 1}, {"b": 2}]') == [{"a": 1}, {"b": 2}]
    assert parse_payloads('{"a": 1}\n\n{"b": 2}\n') == [{"a": 1}, {"b": 2}]
    with pytest.raises(ValidationError, match="line 2"):
        parse_payloads('{"a": 1}\nnot json\n')


async def test_publish_round_trip(settings: Settings, topics: Topics) -> None:
    payloads = [GUIDE_EXAMPLE, example("conversation_status_changed", account_id=5, conversation_id=9)]
    async with Publisher(settings) as publisher:
        published = await publisher.publish_many(payloads)
    records = await _read(settings, topics.events, len(payloads))
    by_id = {h.to_dict(r.headers)["ce_id"]: r for r in records}
    for item, payload in zip(published, payloads, strict=True):
        record = by_id[item.event.event_id]
        assert record.value == orjson.dumps(payload)
        assert record.key == item.event.key
        assert h.to_dict(record.headers)["ce_type"] == payload["event"]


def _cli(settings: Settings, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "AKECE_TOPIC_PREFIX": settings.topic_prefix, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "services", "publish", *args], input=stdin, text=True,
                          capture_output=True, env=env, timeout=60, check=False)


async def test_cli_refuses_a_batch_with_one_invalid_payload(settings: Settings, topics: Topics) -> None:
    good = orjson.dumps(example("message_created")).decode()
    bad = orjson.dumps({**example("message_created"), "private": "maybe"}).decode()
    result = _cli(settings, stdin=f"{good}\n{bad}\n")
    assert result.returncode == 2
    assert "payload 2" in result.stderr and "private" in result.stderr
    assert "nothing was published" in result.stderr
    result = _cli(settings, stdin=f"{good}\n")
    assert result.returncode == 0, result.stderr
    assert "published message_created" in result.stdout
    records = await _read(settings, topics.events, 1)
    assert [r.value for r in records] == [good.encode()]


def test_cli_dry_run_sends_nothing(settings: Settings) -> None:
    result = _cli(settings, "--dry-run", stdin=orjson.dumps([GUIDE_EXAMPLE]).decode())
    assert result.returncode == 0
    assert "dry run, nothing sent" in result.stdout


def test_cli_rejects_non_json(settings: Settings) -> None:
    result = _cli(settings, stdin="this is not json\n")
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


async def _read(settings: Settings, topic: str, count: int) -> list[object]:
    """Every record of ``topic`` (expects exactly ``count``)."""
    consumer = kafka.consumer(settings, topic, group_id=None)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        records: list[object] = []
        while sum(ends.values()) > len(records):
            batch = await consumer.getmany(timeout_ms=1000)
            for part in batch.values():
                records.extend(part)
    assert len(records) == count
    return records
