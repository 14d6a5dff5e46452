"""Publisher: CloudEvents records round trip on the real broker; invalid payloads are refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.examples import GUIDE_EXAMPLE, example
from services.contract import headers as h
from services.contract.topics import Topics
from services.devtools.ports import free_port
from services.publisher.cli import parse_payloads
from services.publisher.events import event_key, prepare
from services.publisher.publisher import Publisher
from services.shared import kafka
from services.shared.errors import KafkaUnavailableError, ValidationError
from services.shared.settings import Settings
from tests.conftest import make_settings


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


def test_parse_payloads_accepts_one_pretty_printed_object() -> None:
    pretty = json.dumps(GUIDE_EXAMPLE, indent=2, ensure_ascii=False)  # as the guide shows it
    assert pretty.count("\n") > 20
    assert parse_payloads(pretty) == [GUIDE_EXAMPLE]
    assert parse_payloads(json.dumps([GUIDE_EXAMPLE, GUIDE_EXAMPLE], indent=2)) == [GUIDE_EXAMPLE] * 2


def test_parse_payloads_names_a_broken_pretty_printed_object() -> None:
    broken = json.dumps(GUIDE_EXAMPLE, indent=2).replace('"content": "Hi",', '"content": "Hi"', 1)
    with pytest.raises(ValidationError, match=r"neither one JSON document .* nor JSON lines"):
        parse_payloads(broken)
    with pytest.raises(ValidationError, match="input is not valid JSON"):
        parse_payloads('[{"a": 1},\n {"b": }]')


async def test_publish_round_trip(settings: Settings, topics: Topics) -> None:
    payloads = [GUIDE_EXAMPLE, example("conversation_status_changed", account_id=5, conversation_id=9)]
    before = datetime.now(UTC).replace(microsecond=0)
    async with Publisher(settings) as publisher:
        published = await publisher.publish_many(payloads)
    after = datetime.now(UTC)
    records = await _read(settings, topics.events, len(payloads))
    by_id = {h.to_dict(r.headers)["ce_id"]: r for r in records}
    assert len(by_id) == len(payloads), "every event gets its own ce_id"
    for item, payload, account, key in zip(published, payloads, ["1", "5"], [b"1:1234", b"5:9"], strict=True):
        record = by_id[item.event.event_id]
        assert record.value == orjson.dumps(payload)
        assert record.key == key == item.event.key
        headers = h.to_dict(record.headers)
        assert headers == {
            "ce_specversion": "1.0", "ce_id": item.event.event_id, "ce_source": "akece://core",
            "ce_type": payload["event"], "ce_time": item.event.time, "ce_accountid": account,
            "content-type": "application/json",
        }
        assert len(record.headers) == len(headers), "no header twice"
        assert headers["ce_time"].endswith("Z")
        assert before <= datetime.fromisoformat(headers["ce_time"]) <= after


def _cli(settings: Settings, *args: str, stdin: str = "",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "AKECE_TOPIC_PREFIX": settings.topic_prefix, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "services", "publish", *args], input=stdin, text=True,
                          capture_output=True, env={**base, **(env or {})}, timeout=60, check=False)


async def test_cli_publishes_a_pretty_printed_file(settings: Settings, topics: Topics, tmp_path: Path) -> None:
    path = tmp_path / "guide.json"
    path.write_text(json.dumps(GUIDE_EXAMPLE, indent=2, ensure_ascii=False), encoding="utf-8")
    result = _cli(settings, str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("published message_created")
    [record] = await _read(settings, topics.events, 1)
    assert orjson.loads(record.value) == GUIDE_EXAMPLE
    assert record.key == b"1:1234"
    assert h.to_dict(record.headers)["ce_type"] == "message_created"


@pytest.mark.parametrize("name", ["missing.json", "."])
def test_cli_names_an_unreadable_file(settings: Settings, tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    result = _cli(settings, str(target))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot read {target}" in result.stderr and "nothing was published" in result.stderr


def test_cli_with_the_broker_down_says_so_in_one_line(settings: Settings) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    result = _cli(settings, stdin=orjson.dumps(GUIDE_EXAMPLE).decode(),
                  env={"AKECE_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"publish: cannot reach Kafka at {bootstrap}")
    assert result.stdout == ""


def test_cli_names_a_missing_topic(settings: Settings) -> None:
    """No ``topics`` fixture: this test's events topic does not exist (the broker does not auto-create)."""
    result = _cli(settings, stdin=orjson.dumps(GUIDE_EXAMPLE).decode(), env={"AKECE_KAFKA_SEND_TIMEOUT_S": "2"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"topic {settings.topic_prefix}.events does not exist" in result.stderr
    assert "akece-webhooks topics ensure" in result.stderr


async def test_missing_topic_is_bounded_by_the_send_timeout(kafka_bootstrap: str) -> None:
    settings = make_settings(kafka_bootstrap, kafka={"send_timeout_s": 2.0, "request_timeout_ms": 30_000})
    async with Publisher(settings) as publisher:
        began = time.monotonic()
        with pytest.raises(KafkaUnavailableError, match="topics ensure"):
            await publisher.publish(GUIDE_EXAMPLE)
        waited = time.monotonic() - began
    assert 2.0 <= waited < 10.0, "bounded by send_timeout_s (2 s), not by the 30 s metadata wait"


async def test_library_with_the_broker_down_raises_a_classified_error(kafka_bootstrap: str) -> None:
    settings = make_settings(f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaUnavailableError, match=f"cannot reach Kafka at {settings.kafka.bootstrap_servers}"):
        async with Publisher(settings):
            pass


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


async def _read(settings: Settings, topic: str, count: int) -> list[Any]:
    """Every record of ``topic`` (expects exactly ``count``)."""
    consumer = kafka.consumer(settings, topic, group_id=None)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        records: list[Any] = []
        while sum(ends.values()) > len(records):
            batch = await consumer.getmany(timeout_ms=1000)
            for part in batch.values():
                records.extend(part)
    assert len(records) == count
    return records


async def test_client_bootstrap_names_the_servers_of_every_client_kind() -> None:
    """Error messages name the cluster a client was pointed at, whichever kind of client failed."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from services.shared.kafka import client_bootstrap

    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.2:2")
    admin = AIOKafkaAdminClient(bootstrap_servers="a:1,b:2")
    try:
        assert client_bootstrap(producer) == "127.0.0.1:1"
        assert client_bootstrap(consumer) == "127.0.0.2:2"
        assert client_bootstrap(admin) == "a:1,b:2"
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()


async def test_close_is_bounded_when_the_producer_cannot_flush(kafka_bootstrap: str) -> None:
    """With the broker gone and records queued, stopping the client would wait for its own request
    timeout; ``close`` gives up after ``kafka.send_timeout_s`` (the sends already failed to their callers)."""
    settings = make_settings(kafka_bootstrap, kafka={"send_timeout_s": 0.5})
    stuck = asyncio.Event()

    class StuckProducer:
        async def stop(self) -> None:
            stuck.set()
            await asyncio.Event().wait()  # a flush that never completes

    publisher = Publisher(settings, producer=StuckProducer())  # type: ignore[arg-type]
    publisher._own_producer, publisher._started = True, True
    await asyncio.wait_for(publisher.close(), timeout=5.0)
    assert stuck.is_set(), "close asked the producer to stop"


def test_a_prepared_body_costs_its_own_size() -> None:
    """A backfill prepares thousands of events and holds them until the broker acknowledges them: each body
    must cost its own size, not orjson's whole write buffer (4-8 KiB behind a small body)."""
    payloads = [example("message_created", account_id=7, conversation_id=n) for n in range(300)]
    tracemalloc.start()
    try:
        bodies = [prepare(payload).value for payload in payloads]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    own = sum(sys.getsizeof(body) for body in bodies) + sys.getsizeof(bodies)
    assert held < own * 1.5, f"{held / len(bodies):.0f} bytes held per {len(bodies[0])}-byte body"
