"""Router on the real broker: fan-out, order, quarantine, subscription changes, rebalance, metrics."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import CollectorRegistry

from schemas import DEFAULT_SUBSCRIPTIONS, EVENT_NAMES
from schemas.examples import example
from services.contract import headers as h
from services.contract.deliveries import DeliveryMeta, delivery_id
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.publisher.events import OutgoingEvent, prepare
from services.publisher.publisher import Publisher
from services.router import core
from services.router.worker import RouterWorker, default_group_id
from services.shared import kafka
from services.shared.errors import ConfigError
from services.shared.metrics import Metrics
from services.shared.runtime import WorkerState, health_routes
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable
from services.shared.webhooks import Webhook, encode_webhook
from tests.conftest import create_topics_with_record_limit, make_settings
from tests.test_admin_api import running_api, with_tokens
from tests.test_subscriptions import LiveTable

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
    table = SubscriptionTable(settings) if table is None else table  # (an empty table is falsy)
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


async def route_until_idle(settings: Settings, metrics: Metrics | None = None,
                           table: SubscriptionTable | None = None, **options: Any) -> RouterWorker:
    table = SubscriptionTable(settings) if table is None else table  # (an empty table is falsy)
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


class BrokenTable(SubscriptionTable):
    """A table whose lookup fails for one account: a stand-in for a bug the router did not foresee."""

    def matching(self, account_id: str | int, event: str) -> tuple[Webhook, ...]:
        if str(account_id) == "9":
            raise RuntimeError("lookup exploded")
        return super().matching(account_id, event)


def with_number(body: bytes, literal: bytes) -> bytes:
    """``body`` (a JSON object) with one more member holding a non-standard number (NaN, Infinity)."""
    return body[:-1] + b',"score":' + literal + b"}"


@pytest.mark.parametrize("validation", ["full", "structural"])
async def test_delivery_keys_name_the_conversation_whatever_the_event_key(kafka_bootstrap: str,
                                                                         validation: str) -> None:
    """A producer keying by event id, or not at all (kcat, another platform), keeps per-conversation order."""
    settings = make_settings(kafka_bootstrap, router={"validation": validation})
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    await write_webhooks(settings, [webhook(1, 4, EVENT_NAMES), webhook(2, 4, ["message_created"])])
    events = [prepare(example(t, account_id=4, conversation_id=c))
              for t, c in [("message_created", 31), ("conversation_created", 32), ("webwidget_triggered", 33),
                           ("conversation_typing_on", 34), ("contact_created", 35)]]
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        futures = [await producer.send(topics.events, value=e.value, headers=e.headers, key=key)
                   for e in events for key in (None, e.event_id.encode(), b"4:999")]
        await asyncio.gather(*futures)

    await route_until_idle(settings)

    keys: dict[tuple[str, int], list[bytes | None]] = defaultdict(list)
    for record in await read_topic(settings, topics.deliveries):
        keys[record.headers[h.EVENT_ID], int(record.headers[h.WEBHOOK_ID])].append(record.key)
    expected = {(e.event_id, 1): [f"1:{c}".encode()] * 3
                for e, c in zip(events, ["31", "32", "33", "34"], strict=False)}
    expected[events[0].event_id, 2] = [b"2:31"] * 3
    expected[events[4].event_id, 1] = [b"1:-", b"1:-", b"1:999"]  # a contact: the record key's, if any
    assert {pair: sorted(k or b"" for k in found) for pair, found in keys.items()} == expected


@pytest.mark.parametrize("validation", ["full", "structural"])
async def test_invalid_events_are_quarantined_and_the_rest_routed(kafka_bootstrap: str, validation: str) -> None:
    settings = make_settings(kafka_bootstrap, router={"validation": validation, "max_event_bytes": 4096})
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    await write_webhooks(settings, [webhook(1, 7, EVENT_NAMES), webhook(2, 9, EVENT_NAMES)])
    good = [prepare(example("message_created", account_id=7, conversation_id=1)) for _ in range(2)]
    base = prepare(example("conversation_created", account_id=7, conversation_id=2))

    def variant(value: bytes | None = base.value, **changes: bytes | None) -> tuple[bytes | None, h.Headers]:
        headers = [(k, v) for k, v in base.headers if k not in changes]
        return value, headers + [(k, v) for k, v in changes.items() if v is not None]

    big = orjson.dumps({**example("conversation_created", account_id=7), "padding": "x" * 5000})
    cases = [
        (core.MISSING_HEADER, variant(**{h.CE_ID: None})),
        (core.UNKNOWN_EVENT_TYPE, variant(**{h.CE_TYPE: b"conversation_deleted"})),
        (core.NOT_JSON, variant(b"\x00not json")),
        (core.NOT_JSON, variant(with_number(base.value, b"NaN"))),  # pydantic's parser accepts these
        (core.NOT_JSON, variant(with_number(base.value, b"Infinity"))),
        (core.NOT_JSON, variant(with_number(base.value, b"-Infinity"))),
        (core.SCHEMA_INVALID, variant(orjson.dumps({**example("conversation_created", account_id=7),
                                                    "event": "message_created"}))),
        (core.TOO_LARGE, variant(big)),
        (core.NO_ACCOUNT, variant(b'{"event": "conversation_created", "id": 2}')),
        (core.ACCOUNT_MISMATCH, variant(**{h.CE_ACCOUNT_ID: b"8"})),
        (core.INTERNAL, variant(orjson.dumps(example("conversation_created", account_id=9)),
                                **{h.CE_ACCOUNT_ID: b"9"})),
    ]
    if validation == "full":
        cases.append((core.SCHEMA_INVALID, variant(orjson.dumps({**example("conversation_created", account_id=7),
                                                                 "status": 3}))))
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        await publish_raw(producer, topics.events, good[0].key, [(good[0].value, good[0].headers)])
        sent = await publish_raw(producer, topics.events, base.key, [record for _, record in cases])
        await publish_raw(producer, topics.events, good[1].key, [(good[1].value, good[1].headers)])
    metrics = Metrics(CollectorRegistry())

    await route_until_idle(settings, metrics, table=BrokenTable(settings))

    delivered = {r.headers[h.EVENT_ID] for r in await read_topic(settings, topics.deliveries)}
    assert delivered == {g.event_id for g in good}
    quarantined = await read_topic(settings, topics.invalid)
    assert [r.headers[h.INVALID_REASON] for r in quarantined] == [reason for reason, _ in cases]
    for record, (_, (value, headers)), (partition, offset) in zip(quarantined, cases, sent, strict=True):
        assert record.value == value
        assert record.key == base.key
        assert record.raw_headers[:len(headers)] == headers
        assert record.headers[h.INVALID_DETAIL]
        assert (record.headers[h.SOURCE_TOPIC], record.headers[h.SOURCE_PARTITION],
                record.headers[h.SOURCE_OFFSET]) == (topics.events, str(partition), str(offset))
    assert "RuntimeError: lookup exploded" in quarantined[-1 if validation == "structural" else -2].headers[
        h.INVALID_DETAIL]
    for reason, count in Counter(reason for reason, _ in cases).items():
        assert sample(metrics, "akece_webhooks_events_invalid_total", reason=reason) == count
    assert sample(metrics, "akece_webhooks_events_consumed_total", event_type="unknown", outcome="invalid") == 1
    await _assert_committed_to_end(settings, default_group_id(settings), topics.events)


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


async def test_invalid_event_the_broker_refuses_is_quarantined_without_its_body(kafka_bootstrap: str) -> None:
    """An invalid body under the router's size limit but over the invalid topic's: no crash, no loop."""
    settings = make_settings(kafka_bootstrap, router={"max_event_bytes": 300_000})
    topics = Topics.from_settings(settings)
    await create_topics_with_record_limit(settings, topics.invalid, 100_000)
    await write_webhooks(settings, [webhook(1, 7)])
    base = prepare(example("message_created", account_id=7, conversation_id=1))
    after = prepare(example("message_created", account_id=7, conversation_id=1))
    noise = os.urandom(200_000)  # incompressible and not JSON: the copy is refused by the broker, not the client
    records = [(b"\x00small before", base.headers), (noise, base.headers), (b"\x00small after", base.headers),
               (after.value, after.headers)]
    producer = kafka.producer(settings)
    async with kafka.started(producer):
        sent = await publish_raw(producer, topics.events, base.key, records)

    await route_until_idle(settings)

    by_offset = {int(r.headers[h.SOURCE_OFFSET]): r for r in await read_topic(settings, topics.invalid)}
    assert sorted(by_offset) == [offset for _, offset in sent[:3]]
    small_before, big, small_after = (by_offset[offset] for _, offset in sent[:3])
    assert (small_before.value, small_after.value) == (b"\x00small before", b"\x00small after")  # refused with
    assert big.value is None  # the big one in one batch, the small ones were sent again alone, with bodies
    assert big.headers[h.INVALID_REASON] == core.NOT_JSON
    assert "the 200000-byte body is not copied (refused by the broker" in big.headers[h.INVALID_DETAIL]
    assert big.headers[h.CE_ID] == base.event_id
    assert [r.headers[h.EVENT_ID] for r in await read_topic(settings, topics.deliveries)] == [after.event_id]
    await _assert_committed_to_end(settings, default_group_id(settings), topics.events)


async def publish_raw(producer: Any, topic: str, key: bytes,
                      records: Sequence[tuple[bytes | None, h.Headers]]) -> list[tuple[int, int]]:
    """Produce records in order (one key, so one partition); returns (partition, offset) of each."""
    futures = [await producer.send(topic, value=value, key=key, headers=headers) for value, headers in records]
    return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]


@pytest.mark.parametrize("tables", ["shared", "own"])
async def test_webhooks_changed_over_http_apply_to_later_events(kafka_bootstrap: str, tables: str) -> None:
    """Webhooks created and PATCHed through the management API route the events published afterwards.

    ``shared``: the router reads the API's table (``run --role all``): a change applies to events
    published as soon as the API has answered. ``own``: the router follows the subscriptions topic
    in its own table (a separate process): events published once the change reached that table.
    """
    settings = with_tokens(kafka_bootstrap)
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    async with running_api(settings) as api:
        live = api.live if tables == "shared" else LiveTable(settings)
        seen: list[tuple[str, int]] = []

        async def visible(webhook_id: int, check: Callable[[Webhook], bool] = lambda _: True) -> None:
            def arrived() -> bool:
                hook = live.table.get(webhook_id)
                return hook is not None and check(hook)
            if tables == "own":
                await live.until(arrived)
            assert arrived()

        async def publish_and_await(event: str, *webhook_ids: int, unrouted: str | None = None) -> None:
            """Publish ``event`` (after ``unrouted``, in one conversation: one partition, in order)."""
            before = [prepare(example(unrouted, account_id=1, conversation_id=1))] if unrouted else []
            out = prepare(example(event, account_id=1, conversation_id=1))
            await publish(settings, [*before, out])
            pairs = {(out.event_id, w) for w in webhook_ids}
            await wait_for_pairs(settings, topics.deliveries, pairs)
            seen.extend(pairs)

        async with running_router(settings, table=live.table):
            first = (await api.create(1, {"webhook": {"url": "https://a.example.com/hooks",
                                                      "subscriptions": ["message_created"]}}))["id"]
            await visible(first)
            await publish_and_await("message_created", first)
            second = (await api.create(1, {"webhook": {"url": "https://b.example.com/hooks",
                                                       "subscriptions": ["message_created"]}}))["id"]
            await visible(second)
            await publish_and_await("message_created", first, second)
            status, _ = await api.call("PATCH", f"/api/v1/accounts/1/webhooks/{first}", {"enabled": False})
            assert status == 200
            await visible(first, lambda hook: not hook.enabled)
            await publish_and_await("message_created", second)
            status, _ = await api.call("PATCH", f"/api/v1/accounts/1/webhooks/{second}",
                                       {"subscriptions": ["conversation_created"]})
            assert status == 200
            await visible(second, lambda hook: hook.subscriptions == ["conversation_created"])
            await publish_and_await("conversation_created", second, unrouted="message_created")
        # (the router has stopped: every batch it routed is acknowledged)
        pairs, total = pair_counts(await read_topic(settings, topics.deliveries))
        assert set(pairs) == set(seen) and total == len(seen) == 5


class _HoldRevocation(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds a group member in its revocation until released: the group cannot finish rebalancing."""

    def __init__(self) -> None:
        self.revoking = asyncio.Event()
        self.release = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:  # (aiokafka also calls this, with nothing, before the first join)
            self.revoking.set()
            await self.release.wait()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


async def test_ready_only_once_the_group_gave_a_first_assignment(settings: Settings, topics: Topics) -> None:
    """``/readyz`` says not ready while the router has subscribed but its group is still rebalancing."""
    hold = _HoldRevocation()
    member = kafka.consumer(settings, group_id=default_group_id(settings))
    async with kafka.started(member):
        member.subscribe([topics.events], listener=hold)
        try:
            async with asyncio.timeout(30):
                while not member.assignment():
                    await member.getmany(timeout_ms=200)
            async with running_router(settings) as router:
                await _assert_ready_after_the_rebalance(router, hold)
            assert not router.ready()
        finally:
            hold.release.set()  # else stopping the member would wait for its revocation forever


async def _assert_ready_after_the_rebalance(router: RouterWorker, hold: _HoldRevocation) -> None:
    state = WorkerState(router)
    state.alive = True
    app = web.Application()
    health_routes(app, [state], CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        await asyncio.wait_for(hold.revoking.wait(), 30)  # the router joined: the group rebalances
        assert not router.ready()
        async with client.get("/readyz") as response:
            assert response.status == 503
            assert (await response.json())["workers"] == {"router": False}
        hold.release.set()
        await asyncio.wait_for(router.wait_assigned(), 60)
        assert router.ready()
        async with client.get("/readyz") as response:
            assert response.status == 200


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


async def test_a_deliveries_topic_too_small_for_the_largest_event_stops_the_router_at_start(
        kafka_bootstrap: str) -> None:
    """Else the first large event would be routed into a topic that refuses it: refuse up front, saying why."""
    settings = make_settings(kafka_bootstrap, router={"max_event_bytes": 300_000})
    topics = Topics.from_settings(settings)
    await create_topics_with_record_limit(settings, topics.deliveries, 200_000)
    table = SubscriptionTable(settings)
    stop = asyncio.Event()
    following = asyncio.create_task(table.run(stop))
    try:
        router = RouterWorker(settings, table, Metrics(CollectorRegistry()))
        with pytest.raises(ConfigError, match=rf"topic {topics.deliveries} accepts records up to 200,000 bytes"
                                              r".*AKECE_ROUTER_MAX_EVENT_BYTES.*at least 340,960"):
            await asyncio.wait_for(router.run(asyncio.Event()), 30)
    finally:
        stop.set()
        await following
