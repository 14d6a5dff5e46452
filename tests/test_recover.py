"""`recover`: re-fan-out one webhook's events of a window from the events topic, with the router's ids."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.fixtures import Store, cli_env, put_webhooks, running_store, webhook
from schemas.examples import example
from services.contract import headers as h
from services.contract.deliveries import conversation_of_event_key, delivery_id, delivery_key
from services.contract.topics import Topics
from services.publisher.events import OutgoingEvent, prepare
from services.replay.plans import Options, Summary
from services.replay.recover import EventsSource, recover
from services.replay.runs import RunBook
from services.replay.window import Window, offset_ranges, read_ranges, reader
from services.router.core import IncomingEvent, route
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import Webhook

SUBSCRIBED = ["message_created", "conversation_status_changed"]


def _event(event_type: str, account: int, at: float, conversation: int = 7) -> OutgoingEvent:
    payload = example(event_type, account_id=account, conversation_id=conversation)
    return prepare(payload, now=lambda: datetime.fromtimestamp(at, UTC))


async def _publish_at(producer: Any, topic: str, events: list[tuple[OutgoingEvent, float]]) -> None:
    """Publish events stamped with their own times, so windows in the past need no waiting."""
    futures = [await producer.send(topic, e.value, key=e.key, headers=e.headers, timestamp_ms=int(at * 1000))
               for e, at in events]
    for future in futures:
        await future


async def _deliveries(settings: Settings, topic: str) -> list[Any]:
    records: list[Any] = []
    async with kafka.started(reader(settings)) as consumer:
        async for batch in read_ranges(consumer, topic, await offset_ranges(consumer, topic, Window())):
            records += batch
    return records


async def _recover(store: Store, hook: Webhook, since: str, until: str | None, **options: Any) -> Summary:
    return await recover(store.table._settings, hook, Window.parse(since, until), producer=store.producer,
                         store=store, options=Options(user="tester", **options))


async def test_recover_redelivers_exactly_the_subscribed_events_of_the_window(settings: Settings,
                                                                             topics: Topics) -> None:
    now = time.time()
    hook = webhook(1, webhook_id=301, subscriptions=SUBSCRIBED)
    everything = webhook(1, webhook_id=302, subscriptions=["message_created", "contact_created"])
    events: list[tuple[OutgoingEvent, float]] = []
    for minutes in (180, 120, 60, 10):
        at = now - minutes * 60
        events += [(_event("message_created", 1, at, conversation=minutes), at),
                   (_event("contact_created", 1, at), at),
                   (_event("message_created", 2, at), at),
                   (_event("conversation_status_changed", 1, at, conversation=minutes), at)]
    async with running_store(settings) as store:
        await put_webhooks(store, [hook, everything])
        await _publish_at(store.producer, topics.events, events)

        dry = await _recover(store, hook, "150m", "30m", dry_run=True)
        assert dry.status == "dry_run" and dry.plan.total == 4 and dry.plan.stats.records == 8
        assert await _deliveries(settings, topics.deliveries) == []

        summary = await _recover(store, hook, "150m", "30m")
        assert summary.status == "done" and summary.enqueued == 4
        expected = {e.event_id: e for e, at in events if now - 9000 <= at < now - 1800
                    and e.account_id == "1" and e.event_type in SUBSCRIBED}
        sent = await _deliveries(settings, topics.deliveries)
        assert len(sent) == len(expected) == 4
        for record in sent:
            values = h.to_dict(record.headers)
            event = expected[values[h.EVENT_ID]]
            routed = route(IncomingEvent(topics.events, 0, 0, event.key, event.value, event.headers),
                           lambda _a, _e: (hook,), routed_time="x")
            assert values[h.DELIVERY_ID] == delivery_id(event.event_id, hook.id) == \
                h.to_dict(routed.deliveries[0].headers)[h.DELIVERY_ID]  # type: ignore[union-attr]
            assert record.key == delivery_key(hook.id, conversation_of_event_key(event.key))
            assert record.value == event.value
            assert values[h.WEBHOOK_ID] == str(hook.id) and values[h.ATTEMPT] == "1"
            assert values[h.EVENT_TYPE] == event.event_type and values[h.EVENT_TIME] == event.time
            assert values[h.RECOVER_ID] == summary.plan.run_id and h.REPLAY_ID not in values

        [run] = (await RunBook.load(settings)).runs.values()
        assert run.kind == "recover" and run.status == "done" and run.filters["webhook"] == hook.id

        again = await _recover(store, hook, "150m", "30m")
        assert again.status == "refused"
        wider = await _recover(store, hook, "4h", None)  # only what the first did not cover
        assert wider.status == "done" and wider.enqueued == 4 and wider.plan.already_replayed == 4
        forced = await _recover(store, hook, "150m", "30m", force=True)
        assert forced.enqueued == 4
    counts = Counter(h.to_dict(r.headers)[h.EVENT_ID] for r in await _deliveries(settings, topics.deliveries))
    assert sum(counts.values()) == 12 and set(counts.values()) == {1, 2}


async def test_recover_skips_a_disabled_webhook_unless_enabled(settings: Settings, topics: Topics) -> None:
    now = time.time()
    hook = webhook(1, webhook_id=401, subscriptions=SUBSCRIBED, enabled=False)
    young = webhook(1, webhook_id=402, subscriptions=SUBSCRIBED, created_days_ago=0.5 / 24)
    events = [(_event("message_created", 1, now - 3600 + i, conversation=i), now - 3600 + i) for i in range(3)]
    async with running_store(settings) as store:
        await put_webhooks(store, [hook, young])
        await _publish_at(store.producer, topics.events, events)
        skipped = await _recover(store, hook, "2h", None)
        assert skipped.status == "nothing_to_do" and skipped.plan.skipped == Counter({"webhook_disabled": 3})
        enabled = await _recover(store, hook, "2h", None, enable=True)
        assert enabled.enqueued == 3 and store.table.get(hook.id).enabled  # type: ignore[union-attr]
        before = await _recover(store, young, "2h", None)  # events older than the webhook are not its own
        assert before.status == "nothing_to_do" and before.plan.skipped == Counter({"before_webhook_created": 3})


def test_source_ignores_other_accounts_and_events() -> None:
    settings = Settings(topic_prefix="x")
    source = EventsSource(settings, webhook(1, webhook_id=5, subscriptions=SUBSCRIBED))
    record = _Record(_event("contact_created", 1, time.time()))
    assert source.select(record) is None
    assert source.select(_Record(_event("message_created", 2, time.time()))) is None
    decision = source.select(_Record(_event("message_created", 1, time.time())))
    assert decision is not None and not isinstance(decision, str)
    assert source.matches({"webhook": 5, "events": ["message_created"]}, _Record(_event("message_created", 1, 0)))
    assert not source.matches({"webhook": 6, "events": ["message_created"]}, _Record(_event("message_created", 1, 0)))


class _Record:
    def __init__(self, event: OutgoingEvent) -> None:
        self.topic, self.partition, self.offset = "events", 0, 0
        self.key, self.value, self.headers = event.key, event.value, event.headers
        self.timestamp = int(time.time() * 1000)


async def test_cli_recover(settings: Settings, topics: Topics) -> None:
    now = time.time()
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=501, subscriptions=SUBSCRIBED)])
        await _publish_at(store.producer, topics.events, [(_event("message_created", 1, now - 60), now - 60)])
    done = _cli(settings, "--webhook", "501", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["enqueued"] == 1
    missing = _cli(settings, "--webhook", "999", "--yes")
    assert missing.returncode == 4 and "does not exist" in missing.stderr


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", "recover", "--since", "1h", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=60, check=False)
