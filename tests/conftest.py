"""Shared fixtures: one real Kafka broker per test session, and per-test topics.

The broker comes from ``tests.kafka_broker.broker_for_tests``: ``AKECE_KAFKA_BOOTSTRAP_SERVERS``
when set, otherwise an isolated local broker on free ports in a temporary directory. Each test
gets its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from services.shared import kafka
from services.shared.settings import Settings
from services.shared.topics import Topics, topic_specs
from tests.kafka_broker import broker_for_tests

pytest_plugins = ["tests.receiver", "tests.containers"]  # a `receiver` fixture; `podman` and `image`


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with broker_for_tests() as bootstrap:
        yield bootstrap


def make_settings(bootstrap: str, **overrides: object) -> Settings:
    """Settings for one test: its own topic prefix, a short retry schedule, loopback allowed."""
    values: dict[str, object] = {
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}",
        "allowed_private_cidrs": ["127.0.0.0/8"],
        "log_format": "json",
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 3, "linger_ms": 1,
                  "session_timeout_ms": 6000, "rebalance_timeout_ms": 20000},
        "retry": {"schedule": [1, 2], "jitter": 0.0},
        "api": {"port": 0, "host": "127.0.0.1"},
        "metrics": {"port": 0, "host": "127.0.0.1"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}  # type: ignore[dict-item]
        else:
            values[key] = value
    return Settings(**values)  # type: ignore[arg-type]



async def create_topics_with_record_limit(settings: Settings, topic: str, max_message_bytes: int) -> None:
    """This test's topics, one of them with a smaller ``max.message.bytes`` than the broker's default."""
    specs = [replace(spec, config={**spec.config, "max.message.bytes": str(max_message_bytes)})
             if spec.name == topic else spec for spec in topic_specs(settings)]
    await kafka.create_topics(settings, specs)

@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return make_settings(kafka_bootstrap)


@pytest.fixture
async def topics(settings: Settings) -> AsyncIterator[Topics]:
    """This test's topics, created on the real broker."""
    await kafka.ensure_topics(settings)
    yield Topics.from_settings(settings)


@pytest.fixture(autouse=True)
def _mark_kafka(request: pytest.FixtureRequest) -> None:
    if "kafka_bootstrap" in request.fixturenames:
        request.node.add_marker(pytest.mark.kafka)
