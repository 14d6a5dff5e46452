"""The router's produce pipeline: batches in flight commit in order, only after their acks; a failed
batch commits nothing after it; delivery keys land on the producer's own partition for them."""

from __future__ import annotations

import asyncio
import functools
import itertools

import pytest
from aiokafka import TopicPartition

from services.contract import headers as h
from services.contract.deliveries import delivery_key
from services.contract.topics import Topics
from services.router.commits import InFlight
from services.shared import kafka
from services.shared.errors import KafkaUnavailableError
from services.shared.settings import Settings
from tests.test_router import events_for, publish, read_topic, route_until_idle, webhook, write_webhooks

TP = TopicPartition("events", 0)


class FakeConsumer:
    """What ``InFlight`` needs of a consumer: ``commit``. Records every commit in order."""

    def __init__(self) -> None:
        self.commits: list[int] = []
        self.committed = asyncio.Event()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])
        self.committed.set()


def _conclude(concluded: list[int], n: int, _acked_at: float) -> None:
    concluded.append(n)


def batches(count: int) -> list[asyncio.Future[None]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(count)]


async def test_commits_follow_acks_in_batch_order() -> None:
    consumer = FakeConsumer()
    in_flight = InFlight(consumer, limit=3)
    acks = batches(3)
    concluded: list[int] = []
    for n, ack in enumerate(acks):
        in_flight.add(ack, {TP: (n + 1) * 10}, functools.partial(_conclude, concluded, n))
    acks[2].set_result(None)
    acks[1].set_result(None)
    for _ in range(5):  # (lets the pipeline's tasks run)
        await asyncio.sleep(0)
    assert consumer.commits == []  # the first batch's acks are not in: nothing may commit
    acks[0].set_result(None)
    await in_flight.settle()
    assert consumer.commits == [30]  # the three batches' acks are in: one commit covers them
    assert concluded == [0, 1, 2]


class SlowConsumer(FakeConsumer):
    """Each commit takes until the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.gate.wait()
        self.gate.clear()
        await super().commit(offsets)


async def test_batches_acknowledged_during_a_commit_share_the_next_one() -> None:
    """A trickle of small batches on a slow broker: commits never queue up behind each other, and none
    passes a batch whose acks are not in."""
    consumer = SlowConsumer()
    in_flight = InFlight(consumer, limit=100)
    acks = batches(6)
    concluded: list[int] = []
    for n, ack in enumerate(acks):
        in_flight.add(ack, {TP: n + 1}, functools.partial(_conclude, concluded, n))
    acks[0].set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    for n in (1, 2, 4):  # acked while the first commit is on its way; batch 3 is not
        acks[n].set_result(None)
    consumer.gate.set()  # the first commit ({1}) completes
    await asyncio.wait_for(_commits(consumer, 1), 5)
    consumer.gate.set()
    await asyncio.wait_for(_commits(consumer, 2), 5)
    assert consumer.commits == [1, 3]  # batches 1 and 2 in one commit; batch 4 waits for batch 3
    assert concluded == [0, 1, 2]
    acks[3].set_result(None)
    acks[5].set_result(None)
    consumer.gate.set()
    await asyncio.wait_for(_commits(consumer, 3), 5)
    await in_flight.settle()
    assert consumer.commits == [1, 3, 6]
    assert concluded == [0, 1, 2, 3, 4, 5]


async def _commits(consumer: FakeConsumer, count: int) -> None:
    while len(consumer.commits) < count:
        consumer.committed.clear()
        await consumer.committed.wait()


async def test_room_waits_for_acks_beyond_the_limit() -> None:
    consumer = FakeConsumer()
    in_flight = InFlight(consumer, limit=2)
    acks = batches(2)
    in_flight.add(acks[0], {TP: 1}, lambda _at: None)
    await in_flight.room()  # one batch waiting: room for the next
    in_flight.add(acks[1], {TP: 2}, lambda _at: None)
    waiting = asyncio.ensure_future(in_flight.room())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    acks[0].set_result(None)
    await asyncio.wait_for(waiting, 5)
    acks[1].set_result(None)
    await in_flight.settle()
    assert consumer.commits == [1, 2]


async def test_a_failed_batch_commits_nothing_after_it_and_is_raised() -> None:
    consumer = FakeConsumer()
    in_flight = InFlight(consumer, limit=1)  # (the router waits for each batch's acks)
    acks = batches(3)
    in_flight.add(acks[0], {TP: 1}, lambda _at: None)
    acks[0].set_result(None)
    await in_flight.room()
    await asyncio.wait_for(consumer.committed.wait(), 5)
    in_flight.add(acks[1], {TP: 2}, lambda _at: None)
    in_flight.add(acks[2], {TP: 3}, lambda _at: None)
    acks[1].set_exception(KafkaUnavailableError("router could not produce a batch"))
    acks[2].set_result(None)
    with pytest.raises(KafkaUnavailableError, match="could not produce"):
        await in_flight.room()
    with pytest.raises(KafkaUnavailableError):  # and again, until the worker stops
        await in_flight.settle()
    assert consumer.commits == [1]


async def test_a_cancelled_acknowledgement_is_never_taken_for_a_commit() -> None:
    consumer = FakeConsumer()
    in_flight = InFlight(consumer, limit=5)
    acks = batches(2)
    in_flight.add(acks[0], {TP: 1}, lambda _at: None)
    in_flight.add(acks[1], {TP: 2}, lambda _at: None)
    acks[0].cancel()
    acks[1].set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await in_flight.settle()
    assert consumer.commits == []


async def test_delivery_keys_land_on_the_partition_the_producer_gives_them(settings: Settings,
                                                                           topics: Topics) -> None:
    """Replay and the retry path write deliveries with ``producer.send``: the router's own record
    batches must put each key on the same partition, or one key's records could lose their order."""
    hooks = [webhook(w, 1) for w in (7, 8, 9)]
    await write_webhooks(settings, hooks)
    await publish(settings, events_for(accounts=[1], conversations=range(1, 9), types=["message_created"]))
    await route_until_idle(settings)
    routed = {r.key: r.partition for r in await read_topic(settings, topics.deliveries)}
    assert len(routed) == 3 * 8

    probe = f"{settings.topic_prefix}.probe"
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        sent = {key: (await (await producer.send(topics.deliveries, value=b"{}", key=key,
                                                 headers=[(h.EVENT_ID, probe.encode())]))).partition
                for key in routed}
    assert sent == routed
    assert {delivery_key(w.id, str(c)) for w in hooks for c in range(1, 9)} == set(routed)


async def test_a_steady_trickle_commits_at_most_once_per_gap_and_settle_commits_at_once() -> None:
    """Small batches acknowledged every 10 ms: commits at least ``commit_gap_s`` apart, each covering
    every batch in by then; ``settle`` (a rebalance, shutdown) does not wait for the gap."""
    consumer = FakeConsumer()
    gap = 0.3
    loop = asyncio.get_running_loop()
    commit_times: list[float] = []

    class Timed(FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            commit_times.append(loop.time())
            await consumer.commit(offsets)

    in_flight = InFlight(Timed(), limit=100, commit_gap_s=gap)  # type: ignore[arg-type]
    concluded: list[int] = []
    for n in range(50):  # 0.5 s of batches
        ack = loop.create_future()
        in_flight.add(ack, {TP: n + 1}, functools.partial(_conclude, concluded, n))
        ack.set_result(None)
        await asyncio.sleep(0.01)
    assert 2 <= len(consumer.commits) <= 3, consumer.commits  # not one per batch
    assert all(b - a >= gap * 0.9 for a, b in itertools.pairwise(commit_times)), commit_times
    assert consumer.commits == sorted(consumer.commits)
    started = loop.time()
    await in_flight.settle()
    assert loop.time() - started < gap / 2  # the last batches commit at once
    assert consumer.commits[-1] == 50
    assert concluded == list(range(50))
