"""Every producer example in ``examples/producers/`` publishes the guide's ``message_created`` to the real
broker, and the running pipeline routes it to a webhook: the receiver gets the exact file bytes
under the delivery id of the event id the example printed, and nothing is quarantined. The record
on the events topic has the key, the headers and the partition Java's client picks for that key.

The non-Python examples are built once per source change (``tests/toolchains.py``, cached under
``build/``); a missing toolchain skips that example with the reason. The Ruby example is documentation
only (its gem cannot be installed here) and is not run.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.contract import headers as h
from services.contract.deliveries import delivery_id
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import Webhook
from tests import toolchains
from tests.conftest import make_settings
from tests.delivery_support import make_webhook
from tests.pipeline_support import Pipeline, running_pipeline
from tests.receiver import Receiver

EXAMPLES = toolchains.ROOT / "examples" / "producers"
EVENT_FILE = EXAMPLES / "message_created.json"
RUN_TIMEOUT_S = 120.0
PARTITIONS = 6  # enough that a producer with another partitioner would likely pick another partition
PUBLISHED = re.compile(r"^published ([0-9a-f-]{36})\b", re.MULTILINE)


@dataclass
class Command:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


def python(script: str) -> Callable[[], Command]:
    return lambda: Command([sys.executable, script, str(EVENT_FILE)], EXAMPLES / "python", {})


def java() -> Command:
    classpath = toolchains.java_classpath(EXAMPLES / "java", "producer")
    return Command(["java", "-cp", classpath, "PublishMessageCreated.java", str(EVENT_FILE)], EXAMPLES / "java", {})


def go() -> Command:
    return Command([str(toolchains.go_binary(EXAMPLES / "go", "producer")), str(EVENT_FILE)], EXAMPLES / "go", {})


def node() -> Command:
    modules = toolchains.node_modules(EXAMPLES / "node", "producer")
    return Command(["node", "publish.js", str(EVENT_FILE)], EXAMPLES / "node", {"NODE_PATH": str(modules)})


def kcat() -> Command:
    toolchains.require("kcat")
    return Command(["bash", "publish.sh", str(EVENT_FILE)], EXAMPLES / "kcat", {})


PRODUCERS: dict[str, Callable[[], Command]] = {
    "python-publisher": python("with_publisher.py"),
    "python-aiokafka": python("with_aiokafka.py"),
    "python-confluent-kafka": python("with_confluent_kafka.py"),
    "java-kafka-clients": java,
    "go-franz-go": go,
    "node-kafkajs": node,
    "kcat": kcat,
}


@dataclass
class Setup:
    pipeline: Pipeline
    receiver: Receiver
    webhook: Webhook


@pytest.fixture(scope="module")
def module_settings(kafka_bootstrap: str) -> Settings:
    return make_settings(kafka_bootstrap, kafka={"partitions": PARTITIONS})


@pytest.fixture(scope="module")
async def setup(module_settings: Settings) -> AsyncIterator[Setup]:
    async with Receiver() as receiver, running_pipeline(module_settings) as pipeline:
        webhook = make_webhook(receiver.url("/examples"), account_id=1)  # the guide's account
        await pipeline.add(webhook)
        yield Setup(pipeline, receiver, webhook)


def example_env(settings: Settings) -> dict[str, str]:
    bootstrap = settings.kafka.bootstrap_servers
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AKECE_EVENTS_TOPIC": f"{settings.topic_prefix}.events",
            "AKECE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AKECE_TOPIC_PREFIX": settings.topic_prefix}


async def run(command: Command, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command.argv, cwd=command.cwd, env={**os.environ, **env, **command.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"exit {process.returncode}:\n{out.decode()}\n{err.decode()}"
    return out.decode()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRODUCERS))
async def test_producer_example_is_routed_to_the_webhook(name: str, setup: Setup) -> None:
    command = await asyncio.to_thread(PRODUCERS[name])  # builds (cached) off the loop the pipeline runs on
    output = await run(command, example_env(setup.pipeline.settings))

    found = PUBLISHED.search(output)
    assert found, f"the example printed no event id: {output!r}"
    event_id = found.group(1)
    record = await event_record(setup.pipeline.settings, event_id)
    headers = h.to_dict(record.headers)
    assert record.key == b"1:1234"
    assert record.partition == java_partition(record.key, PARTITIONS), "not the partition Java's client picks"
    assert {k: v for k, v in headers.items() if k not in (h.CE_ID, h.CE_SOURCE, h.CE_TIME)} == {
        h.CE_SPECVERSION: "1.0", h.CE_TYPE: "message_created", h.CE_ACCOUNT_ID: "1", h.CONTENT_TYPE: "application/json"}
    assert headers[h.CE_SOURCE].startswith("akece://examples/")
    assert datetime.fromisoformat(headers[h.CE_TIME]).tzinfo is not None
    expected = delivery_id(event_id, setup.webhook.id)
    request = await setup.receiver.first(lambda r: r.headers.get("webhook-id") == expected, timeout=30)
    assert request.body == EVENT_FILE.read_bytes()
    assert request.headers["X-Chatwoot-Delivery"] == expected
    assert request.headers["webhook-signature"].startswith("v1,")
    invalid = setup.pipeline.topics.invalid
    consumer = kafka.consumer(setup.pipeline.settings, group_id=None)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, invalid)
    assert sum(ends.values()) == 0, "the router quarantined an event"


async def event_record(settings: Settings, event_id: str) -> Any:
    """The events-topic record whose ``ce_id`` is ``event_id`` (read group-less from the start)."""
    topic = f"{settings.topic_prefix}.events"
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        async with asyncio.timeout(30):
            while True:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    for record in batch:
                        if h.to_dict(record.headers).get(h.CE_ID) == event_id:
                            return record


def java_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client (murmur2) picks for a key; aiokafka's default partitioner does the same."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


def test_ruby_example_mirrors_the_tested_ones() -> None:
    """Not run (no Ruby gems here): at least it sets the same headers and key and says it is untested."""
    text = (EXAMPLES / "ruby" / "publish.rb").read_text()
    assert "UNTESTED" in text
    for header in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_accountid", "content-type"):
        assert f'"{header}" =>' in text
    assert '"#{account_id}:#{conversation}"' in text
    assert '"partitioner" => "murmur2_random"' in text
