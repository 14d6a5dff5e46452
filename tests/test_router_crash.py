"""Router crashes: real ``akece-webhooks router`` processes, SIGKILLed mid-stream.

The contract: every (event, webhook) pair is on the deliveries topic at least once, and every
duplicate carries the same delivery id. The duplicate counts are printed (run with ``-s``) and
recorded as test properties.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from schemas.examples import example
from services.contract import headers as h
from services.contract.topics import Topics
from services.publisher.events import prepare
from services.shared import kafka
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.test_router import (
    assert_complete,
    events_for,
    expected_pairs,
    publish,
    read_topic,
    wait_for_pairs,
    wait_for_records,
    webhook,
    write_webhooks,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TYPES = ["message_created", "conversation_updated", "contact_created", "inbox_created"]
HOOKS = [w for a in (1, 2, 3) for w in (webhook(a * 10 + 1, a), webhook(a * 10 + 2, a, ["message_created"]))]


class RouterProcess:
    """``python -m services router`` as a child process; its JSON log lines are read as they come."""

    def __init__(self, settings: Settings, *args: str) -> None:
        self._settings = settings
        self._args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.assigned = asyncio.Event()
        self.partitions: list[int] = []
        self.lines: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> RouterProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AKECE_KAFKA_BOOTSTRAP_SERVERS": self._settings.kafka.bootstrap_servers,
            "AKECE_TOPIC_PREFIX": self._settings.topic_prefix,
            "AKECE_KAFKA_SESSION_TIMEOUT_MS": str(self._settings.kafka.session_timeout_ms),
            "AKECE_KAFKA_REBALANCE_TIMEOUT_MS": str(self._settings.kafka.rebalance_timeout_ms),
            "AKECE_ROUTER_BATCH_SIZE": str(self._settings.router.batch_size),
            "AKECE_METRICS_HOST": "127.0.0.1",
            "AKECE_METRICS_PORT": "0",
            "AKECE_ROUTER_PROCESSES": "1",
            "AKECE_LOG_FORMAT": "json",
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "router", *self._args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith(b"{"):
                entry = orjson.loads(line)
                if entry.get("event") == "router.partitions_assigned" and entry.get("partitions"):
                    self.partitions = entry["partitions"]
                    self.assigned.set()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None and self._reader is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code

    def output(self) -> str:
        return b"".join(self.lines[-40:]).decode(errors="replace")


@asynccontextmanager
async def router_process(settings: Settings, *args: str) -> AsyncIterator[RouterProcess]:
    process = await RouterProcess(settings, *args).start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.returncode is None:
            process.signal(signal.SIGKILL)
            await process.wait()


def crash_settings(bootstrap: str) -> Settings:
    return make_settings(bootstrap, router={"batch_size": 500})


async def _prepare(settings: Settings) -> tuple[Topics, set[tuple[str, int]]]:
    await kafka.ensure_topics(settings)
    await write_webhooks(settings, HOOKS)
    events = events_for(accounts=[1, 2, 3, 4], conversations=range(1, 26), types=TYPES, repeat=50)
    assert len(events) == 20_000
    await publish(settings, events)
    return Topics.from_settings(settings), expected_pairs(events, HOOKS)


async def publish_sentinels(settings: Settings, topics: Topics) -> set[tuple[str, int]]:
    """One event per partition of the events topic; returns its expected pairs."""
    sentinels = [prepare(example("message_created", account_id=1, conversation_id=999))
                 for _ in range(settings.kafka.partitions)]
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        futures = [await producer.send(topics.events, value=e.value, key=e.key, headers=e.headers, partition=p)
                   for p, e in enumerate(sentinels)]
        await asyncio.gather(*futures)
    return expected_pairs(sentinels, HOOKS)


async def _delivered(settings: Settings, topic: str) -> int:
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        return sum((await kafka.end_offsets(consumer, topic)).values())


async def _partitions_behind(settings: Settings, topic: str) -> list[int]:
    """Partitions of ``topic`` whose committed offset (router group) is short of the end."""
    consumer = kafka.consumer(settings, group_id=f"{settings.topic_prefix}.router")
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        return sorted([tp.partition for tp, end in ends.items() if (await consumer.committed(tp) or 0) < end])


@dataclass
class AtKill:
    """The router group's committed offsets (events) and the deliveries topic's end offsets, at a kill."""

    committed: dict[int, int]
    deliveries_ends: dict[int, int]

    @classmethod
    async def take(cls, settings: Settings, topics: Topics) -> AtKill:
        consumer = kafka.consumer(settings, group_id=f"{settings.topic_prefix}.router")
        async with kafka.started(consumer):
            events = await kafka.end_offsets(consumer, topics.events)
            committed = {tp.partition: await consumer.committed(tp) or 0 for tp in events}
            ends = await kafka.end_offsets(consumer, topics.deliveries)
        return cls(committed, {tp.partition: end for tp, end in ends.items()})

    async def in_flight(self, settings: Settings, topics: Topics, partitions: Iterable[int]) -> int:
        """Deliveries written before the kill for events of ``partitions`` above the committed offset:
        the only ones a restart routes again, so the most duplicates it can make."""
        owned = set(partitions)
        where = {r.headers[h.CE_ID]: (r.partition, r.offset) for r in await read_topic(settings, topics.events)}
        count = 0
        for record in await read_topic(settings, topics.deliveries):
            if record.offset >= self.deliveries_ends[record.partition]:
                continue
            partition, offset = where[record.headers[h.EVENT_ID]]
            count += partition in owned and offset >= self.committed[partition]
        return count


async def test_sigkill_mid_stream_then_restart(kafka_bootstrap: str,
                                               record_property: Callable[[str, object], None]) -> None:
    settings = crash_settings(kafka_bootstrap)
    topics, expected = await _prepare(settings)

    async with router_process(settings) as first:
        await wait_for_records(settings, topics.deliveries, 2000)
        first.signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
    snapshot = await AtKill.take(settings, topics)
    at_kill = await _delivered(settings, topics.deliveries)
    assert at_kill < len(expected), "the router finished before it was killed: nothing was tested"

    async with router_process(settings, "--until-idle") as second:
        assert await second.wait(120) == 0, second.output()

    duplicates = assert_complete(await read_topic(settings, topics.deliveries), expected)
    assert await _partitions_behind(settings, topics.events) == []
    in_flight = await snapshot.in_flight(settings, topics, snapshot.committed)
    record_property("duplicates", duplicates)
    print(f"\nSIGKILL + restart: {len(expected)} pairs, {at_kill} records at kill, {duplicates} duplicates "
          f"(bound: {in_flight} in flight)")
    assert duplicates <= in_flight


async def test_two_routers_one_killed(kafka_bootstrap: str,
                                      record_property: Callable[[str, object], None]) -> None:
    settings = crash_settings(kafka_bootstrap)
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    await write_webhooks(settings, HOOKS)
    events = events_for(accounts=[1, 2, 3, 4], conversations=range(1, 26), types=TYPES, repeat=50)
    expected = expected_pairs(events, HOOKS)

    async with AsyncExitStack() as processes:
        doomed = await processes.enter_async_context(router_process(settings))
        await asyncio.wait_for(doomed.assigned.wait(), 60)
        survivor = await processes.enter_async_context(router_process(settings))
        await asyncio.wait_for(survivor.assigned.wait(), 60)  # it joined: both own partitions now
        publishing = asyncio.create_task(publish(settings, events, chunk=1000))
        await wait_for_records(settings, topics.deliveries, 2000)
        doomed.signal(signal.SIGKILL)
        assert await doomed.wait() == -signal.SIGKILL
        snapshot = await AtKill.take(settings, topics)  # within the session timeout: still the doomed one's
        at_kill = await _delivered(settings, topics.deliveries)
        unfinished = set(await _partitions_behind(settings, topics.events)) & set(doomed.partitions)
        assert unfinished, "the killed router had finished its partitions: nothing was tested"
        await publishing
        # A last event on every partition: once its deliveries are there, all before it were routed,
        # and the batch holding it is committed before a SIGTERM lets the router go.
        expected |= await publish_sentinels(settings, topics)
        await wait_for_pairs(settings, topics.deliveries, expected, timeout=120)
        survivor.signal(signal.SIGTERM)
        assert await survivor.wait() == 0, survivor.output()  # drains and exits 0

    duplicates = assert_complete(await read_topic(settings, topics.deliveries), expected)
    assert await _partitions_behind(settings, topics.events) == []
    in_flight = await snapshot.in_flight(settings, topics, doomed.partitions)
    record_property("duplicates", duplicates)
    print(f"\ntwo routers, one SIGKILLed: {len(expected)} pairs, {at_kill} records at kill, "
          f"{duplicates} duplicates (bound: {in_flight} in flight)")
    assert duplicates <= in_flight
