"""A replay killed halfway (SIGKILL, a real process) and run again re-enqueues nothing twice.

The replay runs throttled with a checkpoint every second, so when it is killed up to a second of
re-enqueued records is acknowledged by Kafka but not yet in its checkpoint: the resume must find
those on the deliveries topic and skip them. A Ctrl-C (SIGINT) records the run as interrupted.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter

import orjson

from bench.fixtures import DeadSpec, cli_env, produce_dead_letters, put_webhooks, running_store, webhook
from services.contract import headers as h
from services.contract.topics import Topics
from services.replay.plans import Options
from services.replay.runs import RunBook
from services.replay.window import Window, offset_ranges, read_ranges, reader
from services.shared import kafka
from services.shared.settings import Settings

RECORDS = 20_000
CHECKPOINT_EVERY = Options().checkpoint_every


def _replay(settings: Settings, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "services", "dlq", "replay", "--since", "1h", "--yes", "--json", *extra]
    return subprocess.Popen(command, env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, preexec_fn=_as_from_a_shell)


def _as_from_a_shell() -> None:
    """The replay starts with Ctrl-C at its default, as from a terminal: an ignored SIGINT is inherited
    through exec, and the test process may be ignoring it (a test that ran before left it so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _wait_for_records(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> None:
    """Until ``topic`` holds at least ``count`` records (read, not guessed)."""
    async with kafka.started(reader(settings)) as consumer, asyncio.timeout(timeout):
        while True:
            ranges = await offset_ranges(consumer, topic, Window())
            if sum(end - start for start, end in ranges.values()) >= count:
                return
            await asyncio.sleep(0.05)


async def _replayed(settings: Settings, topic: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    async with kafka.started(reader(settings)) as consumer:
        async for batch in read_ranges(consumer, topic, await offset_ranges(consumer, topic, Window())):
            ids.update(h.to_dict(r.headers)[h.DELIVERY_ID] for r in batch)
    return ids


async def _dead_letters(settings: Settings, topics: Topics, count: int) -> list[DeadSpec]:
    now = time.time()
    specs = [DeadSpec(101, 1, now - 900 + i * 0.01, conversation=i % 300, event_id=f"evt-{i}") for i in range(count)]
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=101)])
        await produce_dead_letters(store.producer, topics.dlq, specs)
    return specs


async def test_killed_replay_resumes_without_sending_twice(settings: Settings, topics: Topics) -> None:
    specs = await _dead_letters(settings, topics, RECORDS)
    first = _replay(settings, "--rate", "5000")
    try:
        # Killed halfway between two checkpoints (one every CHECKPOINT_EVERY records, 0.4 s apart at this
        # rate): a count on a checkpoint's boundary is reached while that checkpoint is being written, and
        # the kill could land after it, leaving nothing acknowledged but not checkpointed.
        await _wait_for_records(settings, topics.deliveries, RECORDS * 2 // 5 + CHECKPOINT_EVERY // 2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    [killed] = (await RunBook.load(settings)).runs.values()
    on_topic = sum((await _replayed(settings, topics.deliveries)).values())
    assert killed.status == "running" and 0 < on_topic < RECORDS
    assert on_topic > killed.enqueued  # the kill left records acknowledged but not checkpointed

    second = _replay(settings)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    result = orjson.loads(out)
    assert result["resumed"] and result["run_id"] == killed.id
    assert result["enqueued"] == RECORDS - on_topic
    assert result["counts"]["done_before"] == on_topic

    replayed = await _replayed(settings, topics.deliveries)
    assert set(replayed) == {s.delivery_id for s in specs}
    assert max(replayed.values()) == 1  # nothing re-enqueued twice
    [done] = (await RunBook.load(settings)).runs.values()
    assert done.status == "done" and done.enqueued == RECORDS


async def test_interrupted_replay_is_recorded_and_resumed(settings: Settings, topics: Topics) -> None:
    specs = await _dead_letters(settings, topics, 3000)
    first = _replay(settings, "--rate", "1000")
    await _wait_for_records(settings, topics.deliveries, 500)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=30)
    assert first.returncode == 130
    [interrupted] = (await RunBook.load(settings)).runs.values()
    assert interrupted.status == "interrupted"
    assert interrupted.enqueued == sum((await _replayed(settings, topics.deliveries)).values())

    second = _replay(settings)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert orjson.loads(out)["resumed"]
    replayed = await _replayed(settings, topics.deliveries)
    assert set(replayed) == {s.delivery_id for s in specs} and max(replayed.values()) == 1
