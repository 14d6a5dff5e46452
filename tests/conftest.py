"""Shared fixtures: one real Kafka broker per test session, and per-test topics.

The broker comes from ``tests.kafka_broker.broker_for_tests``: ``AKECE_KAFKA_BOOTSTRAP_SERVERS``
when set, otherwise an isolated local broker on free ports in a temporary directory. Each test
gets its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from services.contract.topics import Topics, topic_specs
from services.shared import kafka
from services.shared.settings import Settings
from tests.kafka_broker import broker_for_tests

pytest_plugins = ["tests.receiver", "tests.containers"]  # a `receiver` fixture; `podman` and `image`


_SESSION_BROKER: list[str] = []  # the session broker's bootstrap, once started
_MADE: list[Settings] = []  # settings made by make_settings since the current module started


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with broker_for_tests() as bootstrap:
        _SESSION_BROKER.append(bootstrap)
        yield bootstrap


@pytest.fixture(scope="module", autouse=True)
def _drop_module_topics() -> Iterator[None]:
    """After each module, delete the topics its tests made on the session broker.

    Every test has its own topic prefix; a whole session's thousands of partitions would otherwise stay
    open on the broker, whose open-files limit ends it ("Too many open files" fails its log directory).
    """
    start = len(_MADE)
    yield
    made = _MADE[start:]
    del _MADE[start:]
    on_session_broker = [s for s in made if s.kafka.bootstrap_servers in _SESSION_BROKER]
    if on_session_broker:
        with contextlib.suppress(Exception):  # best effort: a test may have left the broker unreachable
            asyncio.run(_delete_topics(on_session_broker))


async def _delete_topics(made: list[Settings]) -> None:
    prefixes = tuple(f"{s.topic_prefix}." for s in made)
    async with asyncio.timeout(30), kafka.started(kafka.admin(made[0])) as admin:
        names = [name for name in await admin.list_topics() if name.startswith(prefixes)]
        for start in range(0, len(names), 200):
            await admin.delete_topics(names[start:start + 200])


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
    settings = Settings(**values)  # type: ignore[arg-type]
    _MADE.append(settings)
    return settings



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


_SIGNAL_LEAKS: list[str] = []


@pytest.fixture(autouse=True)
def _keep_signal_handlers(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that leaves SIGINT or SIGTERM handled otherwise than it found them (an event loop's handler
    not removed, a handler set to ignore) gets them back as they were and is named in the summary: a
    leaked ``SIG_IGN`` is inherited by every child process a later test starts."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        if signal.getsignal(sig) is not handler:
            _SIGNAL_LEAKS.append(f"{request.node.nodeid}: {sig.name} left as {signal.getsignal(sig)!r}")
            signal.signal(sig, handler)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SIGNAL_LEAKS:
        terminalreporter.section("signal handlers a test left changed (restored)")
        for line in _SIGNAL_LEAKS:
            terminalreporter.write_line(line)
