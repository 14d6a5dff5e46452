"""The subscription table and store: the in-memory index, and the compacted topic on the real broker."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from services.contract.topics import Topics
from services.shared import kafka, subscriptions
from services.shared.errors import KafkaUnavailableError
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import SigningSecret, Webhook, encode_webhook, new_secret, new_webhook_id
from tests.conftest import make_settings
from tests.log_capture import captured_logs

READY_TIMEOUT_S = 30.0


class LiveTable:
    """A table following its topic in a task; ``until(predicate)`` awaits its changes (no sleeps)."""

    def __init__(self, settings: Settings) -> None:
        self.table = SubscriptionTable(settings, on_change=lambda _: self._tick.set())
        self._tick = asyncio.Event()

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._tick.clear()
                await self._tick.wait()


@asynccontextmanager
async def running_table(settings: Settings) -> AsyncIterator[LiveTable]:
    live = LiveTable(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(live.table.run(stop))
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            ready = asyncio.create_task(live.table.wait_ready())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                ready.cancel()
                task.result()
        yield live
    finally:
        stop.set()
        await task


@asynccontextmanager
async def running_store(settings: Settings) -> AsyncIterator[tuple[LiveTable, SubscriptionStore]]:
    async with kafka.started(kafka.producer(settings)) as producer, running_table(settings) as live:
        yield live, SubscriptionStore(settings, live.table, producer)


def webhook(webhook_id: int, account_id: int, events: list[str], *, enabled: bool = True,
            url: str = "https://example.com/hook") -> Webhook:
    return Webhook(id=webhook_id, account_id=account_id, url=url, subscriptions=events, enabled=enabled,
                   created_at="2026-01-01T00:00:00.000Z", updated_at="2026-01-01T00:00:00.000Z",
                   secrets=[SigningSecret(secret=new_secret(), created_at="2026-01-01T00:00:00.000Z")])


def put(table: SubscriptionTable, hook: Webhook) -> None:
    table.apply(str(hook.id).encode(), encode_webhook(hook))


# --- pure -------------------------------------------------------------------------------------
def test_webhook_ids_are_unique_and_safe_in_javascript() -> None:
    ids = [new_webhook_id() for _ in range(100_000)]
    assert ids == sorted(set(ids))  # strictly increasing within a process, even in a burst
    assert all(0 < i < 2**53 for i in ids)


def test_secrets_are_standard_webhooks_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_active_secrets_newest_first_and_expire() -> None:
    hook = webhook(1, 1, ["message_created"]).model_copy(update={"secrets": [
        SigningSecret(secret="whsec_old", created_at="2026-01-01T00:00:00.000Z", expires_at=100.0),
        SigningSecret(secret="whsec_new", created_at="2026-01-02T00:00:00.000Z"),
    ]})
    assert hook.active_secrets(99.0) == ["whsec_new", "whsec_old"]
    assert hook.active_secrets(100.0) == ["whsec_new"]
    assert hook.current_secret(100.0) == "whsec_new"


def test_matching_indexes_enabled_webhooks_by_account_and_event(settings: Settings) -> None:
    table = SubscriptionTable(settings)
    a, b = webhook(1, 7, ["message_created", "contact_created"]), webhook(2, 7, ["message_created"])
    off, other = webhook(3, 7, ["message_created"], enabled=False), webhook(4, 8, ["contact_created"])
    for hook in (a, b, off, other):
        put(table, hook)
    assert [w.id for w in table.matching(7, "message_created")] == [1, 2]
    assert [w.id for w in table.matching("7", "contact_created")] == [1]
    assert table.matching(8, "message_created") == ()
    assert table.matching(9, "message_created") == ()
    assert [w.id for w in table.for_account(7)] == [1, 2, 3]
    table.apply(b"1", None)  # tombstone
    assert table.get(1) is None
    assert [w.id for w in table.matching(7, "message_created")] == [2]
    put(table, b.model_copy(update={"account_id": 8}))  # moved: gone from the old account's index
    assert table.matching(7, "message_created") == ()
    assert [w.id for w in table.matching(8, "message_created")] == [2]


def test_a_bad_record_leaves_the_table_as_it_was(settings: Settings) -> None:
    table = SubscriptionTable(settings)
    put(table, webhook(1, 7, ["message_created"]))
    with pytest.raises(ValueError):
        table.apply(b"1", b'{"not": "a webhook"}')
    assert [w.id for w in table.matching(7, "message_created")] == [1]


# --- on the broker -----------------------------------------------------------------------------
async def test_store_reads_its_writes_and_a_fresh_table_rebuilds_them(settings: Settings, topics: Topics) -> None:
    hooks = [webhook(new_webhook_id(), 3, ["message_created"], url=f"https://e.com/{i}") for i in range(3)]
    async with running_store(settings) as (live, store):
        for hook in hooks:
            await store.put(hook)
            assert live.table.get(hook.id) == hook  # read-your-writes: no waiting needed
        await store.delete(hooks[0].id)
        assert live.table.get(hooks[0].id) is None
        disabled = await store.set_enabled(hooks[1].id, False, "gone_410")
        assert disabled is not None and not disabled.enabled
        assert await store.set_enabled(hooks[0].id, True, None) is None  # deleted: nothing to enable
        assert [w.id for w in live.table.matching(3, "message_created")] == [hooks[2].id]
    async with running_table(settings) as fresh:
        assert fresh.table.get(hooks[0].id) is None
        assert fresh.table.get(hooks[2].id) == hooks[2]
        rebuilt = fresh.table.get(hooks[1].id)
        assert rebuilt is not None and rebuilt.disabled_reason == "gone_410"
        assert len(fresh.table) == 2


async def test_two_tables_see_each_others_writes(settings: Settings, topics: Topics) -> None:
    async with running_store(settings) as (one, store_one), running_store(settings) as (two, store_two):
        first = await store_one.put(webhook(new_webhook_id(), 4, ["contact_created"]))
        await two.until(lambda: two.table.get(first.id) is not None, timeout=5)
        second = await store_two.put(webhook(new_webhook_id(), 4, ["contact_created"]))
        await one.until(lambda: len(one.table.matching(4, "contact_created")) == 2, timeout=5)
        await store_two.delete(first.id)
        await one.until(lambda: one.table.get(first.id) is None, timeout=5)
        assert [w.id for w in one.table.matching(4, "contact_created")] == [second.id]


async def test_a_large_batch_is_indexed_once_and_correctly(settings: Settings, topics: Topics) -> None:
    async with kafka.started(kafka.producer(settings)) as producer:
        futures = [await producer.send(Topics.from_settings(settings).subscriptions,
                                       encode_webhook(webhook(i, i % 10, ["message_created"])), key=str(i).encode())
                   for i in range(1, 2001)]
        await asyncio.gather(*futures)
    async with running_table(settings) as live:
        assert len(live.table) == 2000
        assert len(live.table.matching(3, "message_created")) == 200


async def test_writes_stop_waiting_when_the_table_stops(settings: Settings, topics: Topics) -> None:
    async with kafka.started(kafka.producer(settings)) as producer:
        table = SubscriptionTable(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(table.run(stop))
        await table.wait_ready()
        stop.set()
        await task
        store = SubscriptionStore(settings, table, producer)
        hook = webhook(new_webhook_id(), 1, ["message_created"])
        async with asyncio.timeout(5):
            assert await store.put(hook) == hook  # durable in Kafka; no 10 s wait for a stopped table


async def test_a_missing_topic_is_reported(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriptions, "TOPIC_WAIT_S", 0.5)
    with pytest.raises(KafkaUnavailableError, match="topics ensure"):
        await SubscriptionTable(make_settings(kafka_bootstrap)).run(asyncio.Event())


async def test_a_malformed_record_is_logged_without_its_values(settings: Settings, topics: Topics) -> None:
    secret, password = new_secret(), "hunter2-must-not-leak"
    valid = webhook(new_webhook_id(), 6, ["message_created"]).model_dump(mode="json")
    bad = [orjson.dumps({**valid, "secrets": secret}),  # a secret where a list belongs
           orjson.dumps({**valid, "url": [f"https://ops:{password}@crm.example.com/"]}),
           b'{"id": 1, "secrets": [{"secret": "' + secret.encode() + b'"'  # not even JSON
           + f', "url": "https://ops:{password}@crm.example.com/"'.encode()]
    good = webhook(new_webhook_id(), 6, ["message_created"])
    async with kafka.started(kafka.producer(settings)) as producer:
        for value in bad:
            await producer.send_and_wait(topics.subscriptions, value, key=b"4711")
        await producer.send_and_wait(topics.subscriptions, encode_webhook(good), key=str(good.id).encode())
    with captured_logs() as logs:
        async with running_table(settings) as live:
            assert live.table.get(good.id) == good and len(live.table) == 1
    events = logs.events("subscriptions.bad_record")
    assert [(e["partition"], e["offset"], e["key"]) for e in events] == [(0, 0, "4711"), (0, 1, "4711"),
                                                                           (0, 2, "4711")]
    assert events[0]["errors"] == [{"loc": ["secrets"], "type": "list_type"}]
    assert events[1]["errors"] == [{"loc": ["url"], "type": "string_type"}]
    assert [e["type"] for e in events[2]["errors"]] == ["json_invalid"]
    text = logs.text()
    key = secret.removeprefix("whsec_")
    fragments = {key[i:i + 12] for i in range(len(key) - 11)} | {password}
    assert not {f for f in fragments if f in text}  # pydantic's text shows both ends of a long value


async def test_ready_when_a_partition_ends_in_a_transaction_marker(settings: Settings, topics: Topics) -> None:
    """The end offset counts the commit marker after the last record: readiness follows the position."""
    hook = webhook(new_webhook_id(), 2, ["message_created"])
    transactional = kafka.producer(settings, transactional_id=f"test-{uuid.uuid4().hex[:8]}")
    async with kafka.started(transactional) as producer, producer.transaction():
        meta = await producer.send_and_wait(topics.subscriptions, encode_webhook(hook),
                                            key=str(hook.id).encode())
    async with kafka.started(kafka.consumer(settings, group_id=None)) as consumer, asyncio.timeout(10):
        end = meta.offset + 1
        while end < meta.offset + 2:  # the broker writes the marker just after the commit returns
            await asyncio.sleep(0.05)
            end = next(iter((await kafka.end_offsets(consumer, topics.subscriptions)).values()))
    assert end == meta.offset + 2  # the marker: no record the table could see at the end offset - 1
    table = SubscriptionTable(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(table.run(stop))
    try:
        async with asyncio.timeout(10):
            await table.wait_ready()
        assert table.get(hook.id) == hook
        await table.wait_applied(meta.partition, end - 1, timeout=5)  # a wait up to the end returns too
    finally:
        stop.set()
        await task
