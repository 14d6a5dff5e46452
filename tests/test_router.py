"""Router on the real broker: fan-out, order, quarantine, subscription changes, rebalance, metrics."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from schemas import DEFAULT_SUBSCRIPTIONS, EVENT_NAMES
from schemas.examples import example
from services.publisher.events import OutgoingEvent, prepare
from services.publisher.publisher import Publisher
from services.router import core
from services.router.worker import RouterWorker
from services.shared import headers as h
from services.shared import kafka
from services.shared.deliveries import DeliveryMeta, delivery_id
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable, Webhook, encode_webhook, now_iso
from services.shared.topics import Topics
from tests.conftest import make_settings

# --- helpers (also used by test_router_crash.py) -------------------------------------------------


def webhook(webhook_id: int, account_id: int, subscriptions: Sequence[str] = DEFAULT_SUBSCRIPTIONS,
            enabled: bool = True) -> Webhook:
    return Webhook(id=webhook_id, account_id=account_id, url=f"https://example.com/hooks/{webhook_id}",
                   subscriptions=list(subscriptions), enabled=enabled, created_at=now_iso(), updated_at=now_iso())


async def write_webhooks(settings: Settings, webhooks: Iterable[Webhook]) -> None:
    """Write webhook records straight to the subscriptions topic (what the API's store does)."""
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        topic = Topics.from_settings(settings).subscriptions
        futures = [await producer.send(topic, value=encode_webhook(w), key=str(w.id).encode()) for w in webhooks]
        await asyncio.gather(*futures)


def events_for(accounts: Sequence[int], conversations: Sequence[int], types: Sequence[str] = EVENT_NAMES,
               repeat: int = 1) -> list[OutgoingEvent]:
    """Valid events of ``types`` for every account and conversation, ``repeat`` times (fresh ids)."""
    bodies = [orjson.dumps(example(t, account_id=a, conversation_id=c))
              for t, a, c in itertools.product(types, accounts, conversations)]
    return [prepare(body) for _ in range(repeat) for body in bodies]


async def publish(settings: Settings, events: Sequence[OutgoingEvent], chunk: int = 5000) -> None:
    async with Publisher(settings) as publisher:
        for start in range(0, len(events), chunk):
            await publisher.send_prepared(events[start:start + chunk])


def expected_pairs(events: Iterable[OutgoingEvent], webhooks: Iterable[Webhook]) -> set[tuple[str, int]]:
    hooks = list(webhooks)
    return {(e.event_id, w.id) for e in events for w in hooks
            if w.enabled and str(w.account_id) == e.account_id and e.event_type in w.subscriptions}


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    raw_headers: list[tuple[str, bytes]]


async def read_topic(settings: Settings, topic: str) -> list[Record]:
    """Every record of ``topic`` now, in partition then offset order."""
    consumer = kafka.consumer(settings, group_id=None, max_poll_records=10_000)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        out: list[Record] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [Record(r.partition, r.offset, r.key, r.value, h.to_dict(r.headers), list(r.headers))
                        for r in records if r.offset < ends[TopicPartition(topic, r.partition)]]
    return sorted(out, key=lambda r: (r.partition, r.offset))


async def wait_for_records(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> None:
    """Return once ``topic`` holds at least ``count`` records (reads the topic; no sleeping)."""
    consumer = kafka.consumer(settings, group_id=None, max_poll_records=10_000)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        seen = 0
        async with asyncio.timeout(timeout):
            while seen < count:
                seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())


async def wait_for_pairs(settings: Settings, topic: str, expected: set[tuple[str, int]],
                         timeout: float = 90.0) -> None:
    """Return once ``topic`` holds a delivery for every expected (event id, webhook id) pair."""
    consumer = kafka.consumer(settings, group_id=None, max_poll_records=10_000)
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        missing = set(expected)
        async with asyncio.timeout(timeout):
            while missing:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        values = h.to_dict(r.headers)
                        missing.discard((values[h.EVENT_ID], int(values[h.WEBHOOK_ID])))


def pair_counts(deliveries: Iterable[Record]) -> tuple[dict[tuple[str, int], set[str]], int]:
    """(event id, webhook id) -> delivery ids seen, and the number of records."""
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    total = 0
    for record in deliveries:
        meta = DeliveryMeta.from_headers(record.headers)
        ids[meta.event_id, meta.webhook_id].add(meta.delivery_id)
        total += 1
    return ids, total


def assert_complete(deliveries: Sequence[Record], expected: set[tuple[str, int]]) -> int:
    """Every expected pair present, nothing else, duplicates identical. Returns the duplicate count."""
    ids, total = pair_counts(deliveries)
    assert set(ids) == expected, (len(set(ids)), len(expected), len(expected - set(ids)))
    for (event_id, webhook_id), seen in ids.items():
        assert seen == {delivery_id(event_id, webhook_id)}
    return total - len(expected)


@asynccontextmanager
async def running_router(settings: Settings, *, metrics: Metrics | None = None,
                         table: SubscriptionTable | None = None, **options: Any) -> AsyncIterator[RouterWorker]:
    """A table and a router running in this loop; stopped (and checked) on exit."""
    table = table or SubscriptionTable(settings)
    own_table = not table.ready() and not getattr(table, "_running", False)
    router = RouterWorker(settings, table, metrics or Metrics(CollectorRegistry()), **options)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(router.run(stop))]
    if own_table:
        tasks.append(asyncio.create_task(table.run(stop)))
    try:
        yield router
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def route_until_idle(settings: Settings, metrics: Metrics | None = None, **options: Any) -> RouterWorker:
    table = SubscriptionTable(settings)
    router = RouterWorker(settings, table, metrics or Metrics(CollectorRegistry()), until_idle=True, **options)
    stop = asyncio.Event()
    table_task = asyncio.create_task(table.run(stop))
    try:
        await asyncio.wait_for(router.run(stop), 60)
    finally:
        stop.set()
        await table_task
    return router


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- tests ---------------------------------------------------------------------------------------


async def test_fan_out_to_every_matching_webhook(settings: Settings, topics: Topics) -> None:
    hooks = [webhook(11, 1), webhook(12, 1, EVENT_NAMES), webhook(13, 1, ["message_created"], enabled=False),
             webhook(21, 2, ["contact_created", "inbox_created", "conversation_typing_on"]),
             webhook(22, 2, ["message_updated"])]
    await write_webhooks(settings, hooks)
    events = events_for(accounts=[1, 2, 3], conversations=[5, 6])
    await publish(settings, events)
    metrics = Metrics(CollectorRegistry())

    router = await route_until_idle(settings, metrics)

    deliveries = await read_topic(settings, topics.deliveries)
    expected = expected_pairs(events, hooks)
    assert assert_complete(deliveries, expected) == 0
    by_id = {e.event_id: e for e in events}
    for record in deliveries:
        meta = DeliveryMeta.from_headers(record.headers)
        event = by_id[meta.event_id]
        assert record.value == event.value
        assert (meta.event_type, meta.account_id, meta.attempt, meta.event_time) == (
            event.event_type, event.account_id, 1, event.time)
        conversation = event.key.decode().partition(":")[2] or "-"
        assert record.key == f"{meta.webhook_id}:{conversation}".encode()
        assert h.ROUTED_TIME in record.headers
        assert not {"url", "secret"} & {k.lower() for k in record.headers}
    assert await read_topic(settings, topics.invalid) == []
    assert router.events_routed == len(events) and router.deliveries_produced == len(expected)

    routed = {e for e, _ in expected}
    assert sample(metrics, "akece_webhooks_deliveries_routed_total") == len(expected)
    assert sum(sample(metrics, "akece_webhooks_events_consumed_total", event_type=t, outcome="routed")
               for t in EVENT_NAMES) == len(routed)
    assert sum(sample(metrics, "akece_webhooks_events_consumed_total", event_type=t, outcome="no_subscriber")
               for t in EVENT_NAMES) == len(events) - len(routed)
    assert sample(metrics, "akece_webhooks_router_fanout_count") == len(events)
    assert sample(metrics, "akece_webhooks_routing_latency_seconds_count") == len(routed)
    lags = [sample(metrics, "akece_webhooks_consumer_lag", group=router.group_id, topic=topics.events,
                   partition=str(p)) for p in range(3)]
    assert lags == [0, 0, 0]
    await _assert_committed_to_end(settings, router.group_id, topics.events)


async def _assert_committed_to_end(settings: Settings, group_id: str, topic: str) -> None:
    consumer = kafka.consumer(settings, group_id=group_id)
    async with kafka.started(consumer):
        for tp, end in (await kafka.end_offsets(consumer, topic)).items():
            assert (await consumer.committed(tp) or 0) == end


async def test_per_conversation_order_for_every_webhook(kafka_bootstrap: str) -> None:
    settings = make_settings(kafka_bootstrap, router={"batch_size": 37})
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    await write_webhooks(settings, [webhook(1, 4), webhook(2, 4), webhook(3, 5)])
    events = events_for(accounts=[4, 5], conversations=[1, 2, 3], types=["message_created"], repeat=60)
    await publish(settings, events)

    await route_until_idle(settings)

    order = {e.event_id: i for i, e in enumerate(events)}
    streams: dict[bytes | None, list[int]] = defaultdict(list)
    for record in await read_topic(settings, topics.deliveries):
        streams[record.key].append(order[record.headers[h.EVENT_ID]])
    assert len(streams) == 3 * 2 + 3  # (webhook, conversation) keys
    for key, positions in streams.items():
        assert positions == sorted(positions), key
        assert len(positions) == 60


async def test_invalid_events_are_quarantined_and_the_rest_routed(kafka_bootstrap: str) -> None:
    settings = make_settings(kafka_bootstrap, router={"validation": "full", "max_event_bytes": 4096})
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    await write_webhooks(settings, [webhook(1, 7, EVENT_NAMES)])
    good = [prepare(example("message_created", account_id=7, conversation_id=1)) for _ in range(2)]
    base = prepare(example("conversation_created", account_id=7, conversation_id=2))

    def variant(value: bytes | None = base.value, **changes: bytes | None) -> tuple[bytes | None, h.Headers]:
        headers = [(k, v) for k, v in base.headers if k not in changes]
        return value, headers + [(k, v) for k, v in changes.items() if v is not None]

    big = orjson.dumps({**example("conversation_created", account_id=7), "padding": "x" * 5000})
    cases = {
        core.MISSING_HEADER: variant(**{h.CE_ID: None}),
        core.UNKNOWN_EVENT_TYPE: variant(**{h.CE_TYPE: b"conversation_deleted"}),
        core.NOT_JSON: variant(b"\x00not json"),
        core.SCHEMA_INVALID: variant(orjson.dumps({**example("conversation_created", account_id=7),
                                                   "status": 3})),
        core.TOO_LARGE: variant(big),
        core.NO_ACCOUNT: variant(b'{"event": "conversation_created", "id": 2}'),
        core.ACCOUNT_MISMATCH: variant(**{h.CE_ACCOUNT_ID: b"8"}),
    }
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        await publish_raw(producer, topics.events, good[0].key, [(good[0].value, good[0].headers)])
        sent = await publish_raw(producer, topics.events, base.key, list(cases.values()))
        await publish_raw(producer, topics.events, good[1].key, [(good[1].value, good[1].headers)])
    metrics = Metrics(CollectorRegistry())

    await route_until_idle(settings, metrics)

    delivered = {r.headers[h.EVENT_ID] for r in await read_topic(settings, topics.deliveries)}
    assert delivered == {g.event_id for g in good}
    quarantined = await read_topic(settings, topics.invalid)
    assert [r.headers[h.INVALID_REASON] for r in quarantined] == list(cases)
    for record, (value, headers), (partition, offset) in zip(quarantined, cases.values(), sent, strict=True):
        assert record.value == value
        assert record.key == base.key
        assert record.raw_headers[:len(headers)] == headers
        assert record.headers[h.INVALID_DETAIL]
        assert (record.headers[h.SOURCE_TOPIC], record.headers[h.SOURCE_PARTITION],
                record.headers[h.SOURCE_OFFSET]) == (topics.events, str(partition), str(offset))
    for reason in cases:
        assert sample(metrics, "akece_webhooks_events_invalid_total", reason=reason) == 1
    assert sample(metrics, "akece_webhooks_events_consumed_total", event_type="unknown", outcome="invalid") == 1


async def test_event_too_large_to_copy_is_quarantined_without_its_body(kafka_bootstrap: str) -> None:
    settings = make_settings(kafka_bootstrap, router={"max_event_bytes": 4096})
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    await write_webhooks(settings, [webhook(1, 7)])
    huge = prepare({**example("message_created", account_id=7), "content": "x" * 3_000_000})
    after = prepare(example("message_created", account_id=7))
    producer = kafka.producer(settings, max_request_size=8 * 1024 * 1024)  # compressed, it fits the broker
    async with kafka.started(producer):
        await publish_raw(producer, topics.events, huge.key, [(huge.value, huge.headers), (after.value, after.headers)])

    await route_until_idle(settings)

    [quarantined] = await read_topic(settings, topics.invalid)
    assert quarantined.value is None
    assert quarantined.headers[h.INVALID_REASON] == core.TOO_LARGE
    assert "not copied" in quarantined.headers[h.INVALID_DETAIL]
    assert quarantined.headers[h.CE_ID] == huge.event_id
    assert [r.headers[h.EVENT_ID] for r in await read_topic(settings, topics.deliveries)] == [after.event_id]


async def publish_raw(producer: Any, topic: str, key: bytes,
                      records: Sequence[tuple[bytes | None, h.Headers]]) -> list[tuple[int, int]]:
    """Produce records in order (one key, so one partition); returns (partition, offset) of each."""
    futures = [await producer.send(topic, value=value, key=key, headers=headers) for value, headers in records]
    return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]


async def test_webhook_created_or_disabled_applies_to_later_events(settings: Settings, topics: Topics) -> None:
    table = SubscriptionTable(settings)
    stop = asyncio.Event()
    table_task = asyncio.create_task(table.run(stop))
    await asyncio.wait_for(table.wait_ready(), 30)
    producer = kafka.producer(settings)
    try:
        async with kafka.started(producer), running_router(settings, table=table):
            store = SubscriptionStore(settings, table, producer)
            first = await store.put(webhook(1, 3, ["message_created"]))

            async def publish_one() -> str:
                event = prepare(example("message_created", account_id=3, conversation_id=1))
                await publish(settings, [event])
                return event.event_id

            e1 = await publish_one()
            await wait_for_pairs(settings, topics.deliveries, {(e1, first.id)})
            second = await store.put(webhook(2, 3, ["message_created"]))
            e2 = await publish_one()
            await wait_for_pairs(settings, topics.deliveries, {(e2, first.id), (e2, second.id)})
            await store.set_enabled(first.id, False, "test")
            e3 = await publish_one()
            await wait_for_pairs(settings, topics.deliveries, {(e3, second.id)})
            pairs, _ = pair_counts(await read_topic(settings, topics.deliveries))
            assert set(pairs) == {(e1, first.id), (e2, first.id), (e2, second.id), (e3, second.id)}
    finally:
        stop.set()
        await table_task


async def test_rebalance_commits_the_batch_in_flight(kafka_bootstrap: str) -> None:
    """A second router joins mid-stream: nothing lost, and a graceful rebalance re-routes nothing."""
    settings = make_settings(kafka_bootstrap, router={"batch_size": 100})
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    hooks = [webhook(1, 1), webhook(2, 2)]
    await write_webhooks(settings, hooks)
    chunk = events_for(accounts=[1, 2], conversations=range(1, 11), types=["message_created"])
    published: list[OutgoingEvent] = []
    joined = asyncio.Event()

    async def feed() -> None:
        """Publish until the second router owns partitions, then some more for both."""
        async with Publisher(settings) as publisher:
            for repeat in itertools.count():
                batch = [prepare(e.value) for e in chunk * (150 if joined.is_set() else 10)]
                published.extend(batch)
                await publisher.send_prepared(batch)
                if joined.is_set() and repeat:
                    return

    async with running_router(settings) as first:
        feeder = asyncio.create_task(feed())
        await wait_for_records(settings, topics.deliveries, 500)
        async with running_router(settings) as second:
            await asyncio.wait_for(second.wait_assigned(), 60)
            joined.set()
            await feeder
            expected = expected_pairs(published, hooks)
            await wait_for_pairs(settings, topics.deliveries, expected)
    duplicates = assert_complete(await read_topic(settings, topics.deliveries), expected)
    assert first.events_routed > 0 and second.events_routed > 0
    assert first.events_routed + second.events_routed == len(published)
    assert duplicates == 0, duplicates
