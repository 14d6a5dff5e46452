"""`dlq replay --limit N`: a canary of the oldest dead letters first, then the rest, each sent once:
the pure choice, the engine's partial runs, the CLI end to end with the real delivery worker, and
the API's `limit` field."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest

from bench.fixtures import DeadSpec, Store, cli_env, produce_dead_letters, put_webhooks, running_store, webhook
from services.contract import headers as h
from services.contract.dead_letters import DlqFilter
from services.contract.topics import Topics
from services.replay.planner import Candidate, oldest_first
from services.replay.runs import RunBook
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import Webhook
from tests.delivery_support import stack
from tests.receiver import Receiver
from tests.test_replay import ONE_TOKEN, TOKENS, read_all, run


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", *args], capture_output=True, text=True,
                          env=cli_env(settings), timeout=60, check=False, stdin=subprocess.DEVNULL)


def _specs(webhook_id: int, count: int) -> list[DeadSpec]:
    """``count`` dead letters ten seconds apart, oldest first, spread over the partitions by conversation."""
    now = time.time()
    return [DeadSpec(webhook_id, 1, now - 600 + 10 * i, conversation=i) for i in range(count)]


def _sent_ids(records: list[object]) -> list[str]:
    return [h.to_dict(r.headers)[h.DELIVERY_ID] for r in records]  # type: ignore[attr-defined]


@asynccontextmanager
async def _dead_letters(settings: Settings, specs: list[DeadSpec], *hooks: Webhook) -> AsyncIterator[Store]:
    """A running store with ``hooks`` (default: webhook 101 of account 1) and ``specs`` on the DLQ."""
    async with running_store(settings) as store:
        await put_webhooks(store, hooks or [webhook(1, webhook_id=101)])
        await produce_dead_letters(store.producer, Topics.from_settings(settings).dlq, specs)
        yield store


async def _assert_each_sent_once(settings: Settings, specs: list[DeadSpec]) -> None:
    sent = _sent_ids(await read_all(settings, Topics.from_settings(settings).deliveries))
    assert Counter(sent) == Counter(s.delivery_id for s in specs)


# --- the pure choice -------------------------------------------------------------------------------
def test_oldest_first_takes_the_oldest_as_a_prefix_of_each_partition() -> None:
    def c(time_ms: int, partition: int, offset: int) -> Candidate:
        return Candidate(time_ms, partition, offset, f"d{partition}-{offset}", 1)

    scan = [c(10, 0, 0), c(40, 0, 1), c(20, 0, 2), c(50, 0, 3),  # partition 0: a late stamp at offset 1
            c(15, 1, 0), c(30, 1, 5), c(60, 1, 9)]
    taken = oldest_first(scan, 4)
    assert [(x.partition, x.offset) for x in taken] == [(0, 0), (1, 0), (1, 5), (0, 1)]
    # offset 2 of partition 0 is older than offset 1 but behind it: it never goes before it
    assert oldest_first(scan, 0) == [] and len(oldest_first(scan, 99)) == len(scan)


# --- the engine --------------------------------------------------------------------------------------
async def test_limited_runs_send_the_oldest_then_the_next_and_never_twice(settings: Settings,
                                                                          topics: Topics) -> None:
    specs = _specs(101, 10)
    async with _dead_letters(settings, specs) as store:
        dry = await run(store, DlqFilter(), dry_run=True, limit=3)
        assert dry.status == "dry_run" and (dry.plan.total, dry.plan.left) == (3, 7)
        assert sorted(s["delivery_id"] for s in dry.plan.sample) == sorted(s.delivery_id for s in specs[:3])

        first = await run(store, DlqFilter(), limit=3)
        assert first.status == "partial" and first.enqueued == 3 and first.plan.left == 7
        assert first.plan.counts()["left_for_later"] == 7
        await _assert_each_sent_once(settings, specs[:3])
        recorded = (await RunBook.load(settings)).runs[first.plan.run_id]
        assert recorded.status == "partial" and (recorded.enqueued, recorded.total) == (3, 10)
        assert recorded.checkpoint == first.plan.stops and recorded.finished_at is None

        second = await run(store, DlqFilter(), limit=3)  # the same command: the next three
        assert second.status == "partial" and second.plan.run_id == first.plan.run_id
        assert (second.enqueued, second.plan.left, second.plan.done_before) == (3, 4, 3)
        await _assert_each_sent_once(settings, specs[:6])

        rest = await run(store, DlqFilter(), limit=0)
        assert rest.status == "done" and rest.enqueued == 4 and rest.plan.left == 0
        recorded = (await RunBook.load(settings)).runs[first.plan.run_id]
        assert recorded.status == "done" and (recorded.enqueued, recorded.total) == (10, 10)

        assert (await run(store, DlqFilter(), limit=3)).status == "refused"
    await _assert_each_sent_once(settings, specs)


async def test_dead_letters_arriving_after_the_canary_need_one_more_run(settings: Settings, topics: Topics) -> None:
    specs = _specs(101, 8)
    async with _dead_letters(settings, specs[:6]) as store:
        canary = await run(store, DlqFilter(), limit=2)
        await produce_dead_letters(store.producer, topics.dlq, specs[6:])  # failed again meanwhile

        rest = await run(store, DlqFilter())  # the window now reaches further: the canary's run goes on
        assert rest.status == "done" and rest.plan.run_id == canary.plan.run_id and rest.enqueued == 4
        assert rest.plan.notice is not None and "run the command again afterwards" in rest.plan.notice

        late = await run(store, DlqFilter())
        assert late.status == "done" and late.enqueued == 2 and late.plan.already_replayed == 6
    await _assert_each_sent_once(settings, specs)


async def test_a_limited_run_killed_before_its_checkpoint_is_not_sent_again(settings: Settings,
                                                                            topics: Topics) -> None:
    from services.replay import runs as ledger

    specs = _specs(101, 10)
    async with _dead_letters(settings, specs) as store:
        first = await run(store, DlqFilter(), limit=3)
        partial = (await RunBook.load(settings)).runs[first.plan.run_id]
        crashed = partial.model_copy(update={  # as a kill after the three acks, before any checkpoint, leaves it
            "status": "running", "pid": 2**22 + 1, "enqueued": 0,
            "checkpoint": {p: start for p, (start, _) in partial.ranges.items()},
            "deliveries_from": {p: 0 for p in range(settings.kafka.partitions)}})
        await ledger.write(store.producer, settings, crashed)

        second = await run(store, DlqFilter(), limit=3)
        assert second.plan.tail_found == 3 and second.enqueued == 3 and second.status == "partial"
        rest = await run(store, DlqFilter())
        assert rest.status == "done" and rest.enqueued == 4
    await _assert_each_sent_once(settings, specs)


async def test_enable_added_after_the_canary_is_refused_until_the_run_is_finished(settings: Settings,
                                                                                  topics: Topics) -> None:
    from services.replay.plans import ReplayRefusedError

    now = time.time()
    specs = [DeadSpec(101 if i % 2 else 102, 1, now - 600 + 10 * i, conversation=i) for i in range(10)]
    hooks = webhook(1, webhook_id=101), webhook(1, webhook_id=102, enabled=False)
    async with _dead_letters(settings, specs, *hooks) as store:
        canary = await run(store, DlqFilter(), limit=2)
        assert canary.status == "partial" and canary.plan.skipped == Counter({"webhook_disabled": 5})
        with pytest.raises(ReplayRefusedError, match=r"started without --enable .* webhooks 102: finish it"):
            await run(store, DlqFilter(), enable=True)  # it would leave 102's skipped records behind for good

        rest = await run(store, DlqFilter())
        assert rest.status == "done" and rest.enqueued == 3
        enabled = await run(store, DlqFilter(), enable=True)
        assert enabled.status == "done" and enabled.enqueued == 5 and enabled.plan.already_replayed == 5
    await _assert_each_sent_once(settings, specs)


# --- the CLI, end to end -------------------------------------------------------------------------------
async def test_cli_canary_then_the_rest_reach_the_receiver_once(settings: Settings, receiver: Receiver) -> None:
    specs = _specs(101, 10)
    oldest = {s.delivery_id for s in specs[:3]}
    async with stack(settings) as s:
        await put_webhooks(s.store, [webhook(1, webhook_id=101, url=receiver.url("/hook"))])
        async with kafka.started(kafka.producer(settings)) as producer:
            await produce_dead_letters(producer, s.topics.dlq, specs)

        canary = _cli(settings, "dlq", "replay", "--since", "1h", "--limit", "3", "--yes", "--json")
        assert canary.returncode == 0, canary.stderr
        result = orjson.loads(canary.stdout)
        assert result["status"] == "partial" and result["enqueued"] == 3
        assert result["counts"]["to_send"] == 3 and result["counts"]["left_for_later"] == 7
        await s.until_idle()
        assert {r.headers["webhook-id"] for r in receiver.for_path("/hook")} == oldest
        assert len(receiver.for_path("/hook")) == 3

        rest = _cli(settings, "dlq", "replay", "--since", "1h", "--limit", "0", "--yes")
        assert rest.returncode == 0, rest.stderr
        assert f"resuming replay {result['run_id']} (partial" in rest.stdout
        assert "to re-enqueue: 7" in rest.stdout and "done: 7 re-enqueued" in rest.stdout
        await s.until_idle()
        arrived = Counter(r.headers["webhook-id"] for r in receiver.for_path("/hook"))
        assert arrived == Counter(s.delivery_id for s in specs)  # the other seven, and none twice

        again = _cli(settings, "dlq", "replay", "--since", "1h", "--limit", "3", "--yes")
        assert again.returncode == 3 and "already re-enqueued by " + result["run_id"] in again.stdout


async def test_cli_partial_run_says_what_is_left(settings: Settings, topics: Topics) -> None:
    async with _dead_letters(settings, _specs(101, 4)):
        pass  # on the DLQ: the command runs on its own
    done = _cli(settings, "dlq", "replay", "--since", "1h", "--limit", "1", "--yes")
    assert done.returncode == 0, done.stderr
    assert "to re-enqueue: 1 (by webhook: 101: 1)" in done.stdout
    assert "left for a later run (--limit): 3" in done.stdout
    assert "partial: 1 re-enqueued" in done.stdout and "3 left for a later run" in done.stdout


@pytest.mark.parametrize("value", ["-1", "abc", "2.5", "", "\uff13"])  # the last: a full-width 3
@pytest.mark.parametrize("action", ["replay", "list"])
def test_cli_refuses_a_bad_limit(action: str, value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "services", "dlq", action, f"--limit={value}"],
                          capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "AKECE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert "argument --limit: invalid limit" in last and "whole number" in last, done.stderr


# --- the API ---------------------------------------------------------------------------------------
async def test_api_replay_takes_a_limit(kafka_bootstrap: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from aiohttp.web import Application

    from services.ops.api import add_replay_routes
    from tests.conftest import make_settings

    settings = make_settings(kafka_bootstrap, **TOKENS)
    await kafka.ensure_topics(settings)
    specs = _specs(601, 5)
    async with _dead_letters(settings, specs, webhook(1, webhook_id=601)) as store:
        app = Application()
        routes = add_replay_routes(app, settings, store.table, store, producer=store.producer)
        async with TestClient(TestServer(app)) as client:
            one = {"api_access_token": ONE_TOKEN}
            base = "/api/v1/accounts/1/webhooks/601"
            for bad in (-1, "2", 2.5, True):
                refused = await client.post(f"{base}/replay", json={"since": "1h", "limit": bad}, headers=one)
                assert refused.status == 400, bad
                assert (await refused.json())["message"].startswith("limit must be a whole number")

            started = await client.post(f"{base}/replay", json={"since": "1h", "limit": 2}, headers=one)
            assert started.status == 202
            payload = (await started.json())["payload"]
            assert payload["count"] == 2 and payload["counts"]["left_for_later"] == 3
            await asyncio.gather(*routes.tasks)
            await _assert_each_sent_once(settings, specs[:2])
            state = (await (await client.get(f"{base}/replays/{payload['replay_id']}", headers=one)).json())
            assert state["payload"]["status"] == "partial" and state["payload"]["enqueued"] == 2

            rest = await client.post(f"{base}/replay", json={"since": "1h", "limit": 0}, headers=one)
            assert rest.status == 202 and (await rest.json())["payload"]["count"] == 3
            await asyncio.gather(*routes.tasks)
    await _assert_each_sent_once(settings, specs)
