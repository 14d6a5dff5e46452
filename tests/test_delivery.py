"""Delivery workers on the real broker against real HTTP receivers on 127.0.0.1.

Short retry schedule (1 s, 2 s: three attempts), no jitter. Tests wait for events (receiver
requests, DLQ/attempt records, ``until_idle``), never for time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import replace
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from services import __version__
from services.contract import headers as h
from services.contract.topics import Topics, topic_specs
from services.delivery import webhook_view
from services.delivery.worker import DeliveryWorker
from services.devtools.ports import free_port
from services.shared import kafka
from services.shared.errors import ConfigError, KafkaUnavailableError
from services.shared.settings import RetrySettings, Settings
from services.shared.subscriptions import SubscriptionTable
from tests.conftest import create_topics_with_record_limit, make_settings
from tests.delivery_support import Stack, committed, delivery, make_webhook, produce, read_topic, stack
from tests.receiver import Behavior, Receiver


def attempts_of(records: list[Any]) -> list[dict[str, Any]]:
    return sorted((orjson.loads(r.value) for r in records), key=lambda a: (a["delivery_id"], a["attempt"]))


def seq_of(body: bytes) -> int:
    value: int = orjson.loads(body)["akece_seq"]
    return value


async def dlq(s: Stack, count: int) -> list[dict[str, str]]:
    return [h.to_dict(r.headers) for r in await read_topic(s.settings, s.topics.dlq, count)]


# --- success and signatures ------------------------------------------------------------------------
async def test_success_is_byte_identical_signed_and_committed(settings: Settings, receiver: Receiver) -> None:
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/ok"), secrets=2)
        await s.add(hook)
        item = delivery(hook)
        await produce(settings, [item])
        await s.until_idle()
        [request] = receiver.requests
        assert request.body == item.value
        for secret in hook.secrets:  # both secrets of the rotation sign
            StandardWebhook(secret.secret).verify(request.body, request.headers)
        assert request.headers["webhook-id"] == item.delivery_id == request.headers["X-Chatwoot-Delivery"]
        stamp = request.headers["X-Chatwoot-Timestamp"]
        current = hook.current_secret(float(stamp))
        assert current is not None
        expected = hmac.new(current.encode(), f"{stamp}.".encode() + item.value, hashlib.sha256).hexdigest()
        assert request.headers["X-Chatwoot-Signature"] == f"sha256={expected}"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"] == f"Akece-Webhooks/{__version__}"

        [attempt] = attempts_of(await read_topic(settings, s.topics.attempts, 1))
        assert attempt["outcome"] == "success" and attempt["status"] == 200 and attempt["attempt"] == 1
        assert attempt["delivery_id"] == item.delivery_id and attempt["webhook_id"] == hook.id
        assert attempt["event_id"] == item.event_id and attempt["account_id"] == "1"
        assert sum((await committed(settings, f"{settings.topic_prefix}.delivery", s.topics.deliveries)).values()) == 1
        assert s.sample("akece_webhooks_deliveries_total", outcome="success", status_class="2xx") == 1
        assert s.sample("akece_webhooks_first_attempts_total", outcome="success") == 1
        assert s.sample("akece_webhooks_end_to_end_latency_seconds_count") == 1


async def test_500_twice_then_200_goes_through_the_retry_tiers(settings: Settings, receiver: Receiver) -> None:
    receiver.script("/flaky", Behavior(status=500), Behavior(status=500))
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/flaky"))
        await s.add(hook)
        item = delivery(hook)
        await produce(settings, [item])
        await s.until_idle()
        first, second, third = receiver.requests
        assert [r.answered for r in (first, second, third)] == [500, 500, 200]
        assert {r.headers["webhook-id"] for r in (first, second, third)} == {item.delivery_id}
        assert len({r.headers["webhook-timestamp"] for r in (first, second, third)}) == 3
        assert len({r.headers["webhook-signature"] for r in (first, second, third)}) == 3
        for request in (first, second, third):
            assert request.body == item.value
            StandardWebhook(hook.secrets[0].secret).verify(request.body, request.headers)
        assert second.time - first.time >= 1.0  # never before its due time
        assert third.time - second.time >= 2.0
        log = attempts_of(await read_topic(settings, s.topics.attempts, 3))
        assert [(a["attempt"], a["outcome"], a["next_delay_ms"]) for a in log] == [
            (1, "retry", 1000), (2, "retry", 2000), (3, "success", None)]
        assert s.sample("akece_webhooks_retries_scheduled_total", tier="1s") == 1
        assert s.sample("akece_webhooks_retries_scheduled_total", tier="2s") == 1
        assert s.sample("akece_webhooks_first_attempts_total", outcome="failure") == 1


async def test_exhaustion_dead_letters_with_the_whole_story(settings: Settings, receiver: Receiver) -> None:
    receiver.set("/down", status=500, body=b"boom " * 1000)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/down"))
        await s.add(hook)
        item = delivery(hook)
        await produce(settings, [item])
        await s.until_idle()
        assert len(receiver.requests) == 3
        [record] = await read_topic(settings, s.topics.dlq, 1)
        assert record.value == item.value and record.key == item.key
        story = h.to_dict(record.headers)
        assert story[h.DLQ_REASON] == "exhausted"
        assert story[h.ATTEMPTS] == "3"
        assert story[h.DELIVERY_ID] == item.delivery_id and story[h.EVENT_ID] == item.event_id
        assert story[h.LAST_STATUS] == "500" and story[h.LAST_ERROR_CLASS] == "http_status"
        assert story[h.LAST_RESPONSE].startswith("boom boom") and len(story[h.LAST_RESPONSE]) <= 2048
        first, last = float(story[h.FIRST_ATTEMPT_AT]), float(story[h.LAST_ATTEMPT_AT])
        assert 3.0 <= last - first < 30
        assert float(story[h.DLQ_AT]) >= last
        assert h.DUE_AT not in story
        assert s.sample("akece_webhooks_dead_letters_total", reason="exhausted") == 1


# --- what an answer means ------------------------------------------------------------------------
async def test_410_disables_the_webhook_and_dead_letters(settings: Settings, receiver: Receiver) -> None:
    receiver.set("/gone", status=410)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/gone"))
        await s.add(hook)
        await produce(settings, [delivery(hook, seq=n) for n in range(2)])  # same key: one after the other
        await s.until_idle()
        assert len(receiver.requests) == 1  # the second found the webhook disabled
        stories = await dlq(s, 2)
        assert [x[h.DLQ_REASON] for x in stories] == ["webhook_disabled", "webhook_disabled"]
        assert sorted(x[h.ATTEMPTS] for x in stories) == ["0", "1"]
        current = s.table.get(hook.id)
        assert current is not None and not current.enabled
        assert current.disabled_reason is not None and "410" in current.disabled_reason


async def test_retry_after_is_honoured(settings: Settings, receiver: Receiver) -> None:
    receiver.script("/busy", Behavior(status=503, retry_after="2"))
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/busy"))
        await s.add(hook)
        await produce(settings, [delivery(hook)])
        await s.until_idle()
        first, second = receiver.requests
        assert second.time - first.time >= 2.0  # the schedule alone would have waited 1 s
        log = attempts_of(await read_topic(settings, s.topics.attempts, 2))
        assert log[0]["next_delay_ms"] == 2000 and log[1]["outcome"] == "success"


async def test_timeout_then_success(settings: Settings, receiver: Receiver) -> None:
    receiver.script("/slow", Behavior(delay=5))
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/slow"), total_timeout_s=0.5)
        await s.add(hook)
        await produce(settings, [delivery(hook)])
        await s.until_idle()
        first, second = receiver.requests
        assert first.abandoned_at is not None and second.answered == 200
        log = attempts_of(await read_topic(settings, s.topics.attempts, 2))
        assert log[0]["error_class"] == "timeout" and log[0]["status"] is None
        assert 400 <= log[0]["duration_ms"] < 2000


async def test_connection_refused_is_retried_then_dead_lettered(settings: Settings) -> None:
    async with stack(settings) as s:
        hook = make_webhook(f"http://127.0.0.1:{free_port()}/nobody")
        await s.add(hook)
        await produce(settings, [delivery(hook)])
        await s.until_idle()
        [story] = await dlq(s, 1)
        assert story[h.DLQ_REASON] == "exhausted" and story[h.ATTEMPTS] == "3"
        assert story[h.LAST_ERROR_CLASS] == "connection_refused"
        assert h.LAST_STATUS not in story


async def test_dropped_connection_is_retried(settings: Settings, receiver: Receiver) -> None:
    receiver.script("/drop", Behavior(drop=True))
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/drop"))
        await s.add(hook)
        await produce(settings, [delivery(hook)])
        await s.until_idle()
        assert len(receiver.requests) == 2
        log = attempts_of(await read_topic(settings, s.topics.attempts, 2))
        assert log[0]["error_class"] == "disconnected" and log[1]["status"] == 200


async def test_redirect_counts_as_failure_and_is_not_followed(settings: Settings, receiver: Receiver) -> None:
    receiver.set("/moved", status=302, redirect=receiver.url("/target"))
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/moved"))
        await s.add(hook)
        await produce(settings, [delivery(hook)])
        await s.until_idle()
        assert [r.path for r in receiver.requests] == ["/moved"] * 3
        [story] = await dlq(s, 1)
        assert story[h.DLQ_REASON] == "exhausted" and story[h.LAST_STATUS] == "302"


async def test_blocked_private_destination_dead_letters_at_once(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, allowed_private_cidrs=[])
    async with stack(settings) as s:
        literal = make_webhook(receiver.url("/literal"))
        named = make_webhook(receiver.url("/named").replace("127.0.0.1", "localhost"))
        await s.add(literal, named)
        await produce(settings, [delivery(literal), delivery(named)])
        await s.until_idle()
        stories = await dlq(s, 2)
        assert [x[h.DLQ_REASON] for x in stories] == ["blocked_destination"] * 2
        assert {x[h.ATTEMPTS] for x in stories} == {"0"}
        assert receiver.requests == []


async def test_disabled_and_deleted_webhooks_are_dead_lettered(settings: Settings, receiver: Receiver) -> None:
    async with stack(settings) as s:
        disabled = make_webhook(receiver.url("/off"), enabled=False)
        deleted = make_webhook(receiver.url("/deleted"))
        await s.add(disabled.model_copy(update={"disabled_reason": "by the customer"}), deleted)
        await s.store.delete(deleted.id)
        await produce(settings, [delivery(disabled), delivery(deleted)])
        await s.until_idle()
        stories = {x[h.WEBHOOK_ID]: x for x in await dlq(s, 2)}
        assert stories[str(disabled.id)][h.DLQ_REASON] == "webhook_disabled"
        assert stories[str(disabled.id)][h.LAST_ERROR] == "by the customer"
        assert stories[str(deleted.id)][h.DLQ_REASON] == "webhook_deleted"
        assert receiver.requests == []


async def test_malformed_record_and_unknown_webhook_are_dead_lettered(settings: Settings) -> None:
    async with stack(settings) as s:
        ghost = delivery(make_webhook("http://127.0.0.1:1/x"))  # a webhook that was never stored
        bad = delivery(make_webhook("http://127.0.0.1:1/x"))
        bad.headers = []
        await produce(settings, [ghost, bad])
        await s.until_idle()
        reasons = sorted(x[h.DLQ_REASON] for x in await dlq(s, 2))
        assert reasons == ["malformed_record", "webhook_deleted"]


# --- order, concurrency, isolation ------------------------------------------------------------------
async def test_one_conversation_arrives_in_order(settings: Settings, receiver: Receiver) -> None:
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/ordered"))
        await s.add(hook)
        await produce(settings, [delivery(hook, conversation=7, seq=n) for n in range(200)])
        await s.until_idle()
        assert [seq_of(r.body) for r in receiver.requests] == list(range(200))
        assert receiver.max_in_flight("/ordered") == 1


async def test_conversations_run_concurrently_within_the_bulkhead(settings: Settings, receiver: Receiver) -> None:
    receiver.set("/many", delay=0.05)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/many"))
        await s.add(hook)
        await produce(settings, [delivery(hook, conversation=c, seq=n) for n in range(4) for c in range(50)])
        await s.until_idle()
        assert len(receiver.requests) == 200
        by_conversation: dict[int, list[int]] = {}
        for request in receiver.requests:
            body = orjson.loads(request.body)
            by_conversation.setdefault(body["conversation"]["id"], []).append(body["akece_seq"])
        assert all(seqs == [0, 1, 2, 3] for seqs in by_conversation.values())
        assert 5 <= receiver.max_in_flight("/many") <= settings.delivery.per_webhook_concurrency


async def test_hanging_webhooks_do_not_slow_the_others(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, delivery={"per_webhook_concurrency": 2, "shutdown_grace_s": 10})
    per_webhook = 5
    async with stack(settings) as s:
        good = [make_webhook(receiver.url(f"/good/{n}")) for n in range(95)]
        hanging = [make_webhook(receiver.url(f"/hang/{n}"), total_timeout_s=3) for n in range(5)]
        for n in range(5):
            receiver.set(f"/hang/{n}", hold=True)
        await s.add(*good, *hanging)
        items = [delivery(w, conversation=c) for c in range(per_webhook) for w in hanging + good]
        await produce(settings, items)
        async with s.running():
            done = await receiver.wait_for(95 * per_webhook, timeout=60, prefix="/good/")
            held = [r for r in receiver.requests if r.path.startswith("/hang/")]
            # Every delivery to the 95 completed while the hanging ones still wait on their first timeout.
            assert all(r.finished_at is not None for r in done)
            assert len(held) == 5 * 2  # each hanging webhook holds only its own two slots
            assert all(r.abandoned_at is None for r in held)
            await receiver.wait_for(5 * 2 + 1, timeout=30, prefix="/hang/")  # timeouts free the slots
            assert any(r.abandoned_at is not None for r in held)


async def test_circuit_opens_and_spares_the_dead_endpoint(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, circuit={"failure_threshold": 3, "open_s": 600},
                             delivery={"per_webhook_concurrency": 1})
    receiver.set("/dead", status=500)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/dead"))
        await s.add(hook)
        await produce(settings, [delivery(hook, conversation=c) for c in range(6)])
        worker = await s.until_idle()
        assert len(receiver.requests) == 3  # then the circuit opened
        stories = await dlq(s, 6)
        assert {x[h.DLQ_REASON] for x in stories} == {"exhausted"}
        assert {x[h.LAST_ERROR_CLASS] for x in stories} == {"circuit_open"}
        classes = [a["error_class"] for a in attempts_of(await read_topic(settings, s.topics.attempts, 18))]
        assert classes.count("circuit_open") == 15
        assert worker.max_in_flight_seen >= 1
        assert s.sample("akece_webhooks_deliveries_total", outcome="dead_letter", status_class="none") == 6


async def test_backpressure_bounds_records_in_memory(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, delivery={"max_in_flight": 20})
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/bp"))
        await s.add(hook)
        await produce(settings, [delivery(hook, conversation=n % 40, seq=n) for n in range(300)])
        worker = await s.until_idle()
        assert len(receiver.requests) == 300
        assert worker.max_in_flight_seen <= 20


async def test_rebalance_hands_partitions_over_without_loss(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, delivery={"per_webhook_concurrency": 2})
    total = 1500  # 20 requests in flight at 50 ms: ~4 s of work, a second worker joins after ~1 s
    async with stack(settings) as s:
        hooks = [make_webhook(receiver.url(f"/rb/{n}")) for n in range(10)]
        for n in range(10):
            receiver.set(f"/rb/{n}", delay=0.05)
        await s.add(*hooks)
        items = [delivery(hooks[n % 10], conversation=n % 100, seq=n) for n in range(total)]
        await produce(settings, items)
        async with s.running() as first:
            await receiver.wait_for(total // 4, timeout=60)
            async with s.running() as second:  # joins: partitions are revoked, drained, reassigned
                seen: set[str] = set()
                while len(seen) < total:
                    seen.add((await receiver.next_request(timeout=60)).headers["webhook-id"])
        assert seen == {item.delivery_id for item in items}
        assert first.max_in_flight_seen > 0 and second.max_in_flight_seen > 0  # both worked
        duplicates = len(receiver.requests) - total
        print(f"\nrebalance: {total} deliveries, {duplicates} duplicates")
        assert duplicates < total // 4
        groups = await committed(settings, f"{settings.topic_prefix}.delivery", s.topics.deliveries)
        assert sum(groups.values()) == total


async def test_a_missing_retry_tier_topic_stops_the_worker_at_start(settings: Settings) -> None:
    async with stack(settings) as s:
        changed = settings.model_copy(update={"retry": RetrySettings(schedule=[1, 2, 3], jitter=0)})
        worker = DeliveryWorker(changed, s.table, s.store, s.metrics)
        with pytest.raises(KafkaUnavailableError, match=r"retry\.3s does not exist"):
            await worker.run(asyncio.Event())


async def test_a_webhook_that_does_not_keep_up_moves_its_backlog_to_the_retry_tier(kafka_bootstrap: str,
                                                                                    receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, delivery={"per_webhook_concurrency": 1, "per_webhook_backlog": 5,
                                                        "per_webhook_backlog_s": 0})
    receiver.set("/slow", hold=True)
    async with stack(settings) as s:
        slow, fast = make_webhook(receiver.url("/slow")), make_webhook(receiver.url("/fast"))
        await s.add(slow, fast)
        slow_items = [delivery(slow, conversation=c) for c in range(40)]
        fast_items = [delivery(fast, conversation=c) for c in range(4)]  # under the backlog: held, never shed
        slow_ids = {i.delivery_id for i in slow_items}
        await produce(settings, slow_items + fast_items)
        async with s.running():
            await receiver.wait_for(4, timeout=30, path="/fast")  # while /slow holds its one request
            early = attempts_of(await read_topic(settings, s.topics.attempts, 4 + 34))
            shed = [a for a in early if a["error_class"] == "webhook_backlog"]
            assert len(shed) == 34 and {a["webhook_id"] for a in shed} == {slow.id}  # 1 running + 5 wait
            assert all(a["outcome"] == "retry" for a in shed)
            receiver.set("/slow", status=200)
            receiver.release("/slow")
        await s.until_idle()  # what still waits in the retry tiers
        delivered = {r.headers["webhook-id"] for r in receiver.requests if r.answered == 200}
        assert {i.delivery_id for i in fast_items} <= delivered
        dead = {x[h.DELIVERY_ID]: x for x in await dlq(s, len(slow_ids - delivered))}
        assert slow_ids == (delivered & slow_ids) | set(dead)  # nothing lost: the receiver or the DLQ
        assert all(x[h.DLQ_REASON] == "exhausted" and x[h.LAST_ERROR_CLASS] == "webhook_backlog"
                   for x in dead.values())
        assert s.sample("akece_webhooks_retries_scheduled_total", tier="1s") >= 34


async def test_a_busy_healthy_webhook_drains_a_burst_without_shedding(kafka_bootstrap: str,
                                                                      receiver: Receiver) -> None:
    # Production's bulkhead and backlog; the backlog clock shortened so a shed would show within the test.
    settings = make_settings(kafka_bootstrap, delivery={"per_webhook_backlog_s": 1.0})
    assert settings.delivery.per_webhook_backlog == 500 and settings.delivery.per_webhook_concurrency == 10
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/fast"))
        await s.add(hook)
        items = [delivery(hook, conversation=n % 2000, seq=n) for n in range(20_000)]
        await produce(settings, items)
        worker = await s.until_idle(timeout=300)
        assert worker.max_in_flight_seen > 2 * settings.delivery.per_webhook_backlog  # a real backlog built up
        delivered = {r.headers["webhook-id"] for r in receiver.requests}
        assert delivered == {i.delivery_id for i in items}
        assert s.sample("akece_webhooks_deliveries_total", outcome="success", status_class="2xx") == 20_000
        shed = sum(s.sample("akece_webhooks_retries_scheduled_total", tier=t) for t in ("1s", "2s"))
        assert shed == 0  # nothing moved to a retry tier: the receiver answered every request at once


class _HeldTable(SubscriptionTable):
    """A real table whose following can be held back: it stays ready but does not see new records."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def _apply_batch(self, records: Any) -> None:
        await self.flowing.wait()
        await super()._apply_batch(records)

    async def _advance(self, consumer: Any, partitions: Any) -> None:
        await self.flowing.wait()
        await super()._advance(consumer, partitions)


async def test_a_worker_whose_table_is_behind_retries_instead_of_dead_lettering(
        settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook created a moment ago, unknown to a worker whose subscriptions table cannot catch up:
    "deleted" cannot be confirmed, so the delivery is retried (not dead-lettered) and lands later."""
    monkeypatch.setattr(webhook_view, "SYNC_TIMEOUT_S", 0.5)
    async with stack(settings) as s:
        lagging = _HeldTable(settings)
        stop = asyncio.Event()
        following = asyncio.create_task(lagging.run(stop))
        try:
            async with asyncio.timeout(30):
                await lagging.wait_ready()
            lagging.flowing.clear()
            hook = make_webhook(receiver.url("/new"))
            await s.add(hook)  # written and visible to the stack's own table, not to the worker's
            item = delivery(hook)
            await produce(settings, [item])
            worker = DeliveryWorker(settings, lagging, s.store, s.metrics)
            halt = asyncio.Event()
            running = asyncio.create_task(worker.run(halt))
            try:
                [first] = attempts_of(await read_topic(settings, s.topics.attempts, 1))
                assert (first["attempt"], first["outcome"], first["error_class"]) == (
                    1, "retry", "subscriptions_behind")
                assert receiver.requests == []
                lagging.flowing.set()  # the table catches up: the retry finds the webhook
                [request] = await receiver.wait_for(1, timeout=30)
                assert request.body == item.value
            finally:
                halt.set()
                await asyncio.wait_for(running, 60)
        finally:
            lagging.flowing.set()
            stop.set()
            await following
        log = attempts_of(await read_topic(settings, s.topics.attempts, 2))
        assert [(a["attempt"], a["outcome"]) for a in log] == [(1, "retry"), (2, "success")]
        assert s.sample("akece_webhooks_dead_letters_total", reason="webhook_deleted") == 0


async def test_an_event_over_a_mebibyte_travels_the_retry_tiers_to_the_dlq_when_the_topics_allow_it(
        kafka_bootstrap: str, receiver: Receiver) -> None:
    """AKECE_ROUTER_MAX_EVENT_BYTES raised past a mebibyte (the producer's default request size) with the
    topics' max.message.bytes raised to match: a large delivery its receiver refuses goes through the
    retry tiers to the DLQ like any other, and the worker goes on delivering."""
    settings = make_settings(kafka_bootstrap, router={"max_event_bytes": 2_000_000})
    limit = str(kafka.max_record_bytes(2_000_000))
    await kafka.create_topics(settings, [replace(spec, config={**spec.config, "max.message.bytes": limit})
                                         for spec in topic_specs(settings)])
    receiver.set("/large", status=500)
    async with stack(settings) as s:
        large, small = make_webhook(receiver.url("/large")), make_webhook(receiver.url("/small"))
        await s.add(large, small)
        body = orjson.dumps({"event": "message_created", "content": "x" * 1_500_000})
        big = delivery(large, body=body)
        await produce(settings, [big])
        async with s.running():
            [record] = await read_topic(settings, s.topics.dlq, 1, timeout=30)
            await produce(settings, [delivery(small)])
            await receiver.wait_for(1, timeout=30, path="/small")
    assert record.value == body
    assert h.to_dict(record.headers)[h.DLQ_REASON] == "exhausted"
    assert [len(r.body) for r in receiver.requests if r.path == "/large"] == [len(body)] * 3


async def test_a_dead_letter_topic_too_small_for_the_largest_event_stops_the_worker_at_start(
        kafka_bootstrap: str) -> None:
    settings = make_settings(kafka_bootstrap, router={"max_event_bytes": 300_000})
    topics = Topics.from_settings(settings)
    await create_topics_with_record_limit(settings, topics.dlq, 100_000)
    async with stack(settings) as s:
        worker = DeliveryWorker(settings, s.table, s.store, s.metrics)
        with pytest.raises(ConfigError, match=rf"topic {topics.dlq} accepts records up to 100,000 bytes"):
            await asyncio.wait_for(worker.run(asyncio.Event()), 30)
