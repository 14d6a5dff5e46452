"""`dlq replay`: dry run, once, refused, --force, --enable, superseded deliveries, --rate, the CLI,
and end to end with the real delivery worker and a failing-then-fixed receiver."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from bench.fixtures import (
    DeadSpec,
    Store,
    cli_env,
    dead_letter,
    produce_dead_letters,
    put_webhooks,
    running_store,
    webhook,
)
from services.contract import headers as h
from services.contract.attempts import AttemptRecord
from services.contract.dead_letters import DeadLetter, DlqFilter
from services.contract.times import iso_time as iso
from services.contract.topics import Topics
from services.ops.attempts import delivery_attempts
from services.ops.dlq import list_dead_letters
from services.replay.dlq_source import replay, replay_headers
from services.replay.plans import Options, Summary
from services.replay.progress import Progress
from services.replay.ratelimit import TokenBucket
from services.replay.runs import RunBook
from services.replay.window import Window, offset_ranges, read_ranges, reader
from services.shared import kafka
from services.shared.settings import Settings
from tests.delivery_support import delivery, make_webhook, produce, stack
from tests.receiver import Receiver

pytest_plugins = ["tests.receiver"]


# --- pure parts ------------------------------------------------------------------------------------
async def test_token_bucket_paces_to_the_rate() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(100, clock=lambda: now[0], sleep=sleep)
    for _ in range(501):
        await bucket.acquire()
    assert now[0] == pytest.approx(5.0, rel=0.01)  # the first is free, then 100/s


def test_replay_headers_start_a_fresh_attempt() -> None:
    key, value, headers = dead_letter(DeadSpec(7, 1, time.time(), attempts=8))
    record = type("R", (), {"partition": 0, "offset": 0, "timestamp": 0, "key": key, "value": value,
                            "headers": headers})()
    fresh = h.to_dict(replay_headers(DeadLetter.from_record(record)))
    original = h.to_dict(headers)
    assert fresh[h.ATTEMPT] == "1" and fresh[h.DELIVERY_ID] == original[h.DELIVERY_ID]
    for name in (h.DLQ_REASON, h.ATTEMPTS, h.DLQ_AT, h.LAST_STATUS, h.FIRST_ATTEMPT_AT, h.LAST_RESPONSE):
        assert name not in fresh
    for name in (h.EVENT_ID, h.EVENT_TYPE, h.ACCOUNT_ID, h.WEBHOOK_ID, h.EVENT_TIME, h.ROUTED_TIME):
        assert fresh[name] == original[name]


def test_progress_bar_and_lines() -> None:
    now = [0.0]
    bar = io.StringIO()
    progress = Progress("replay rp_x", 1000, stream=bar, tty=True, clock=lambda: now[0])
    now[0] = 2.0
    progress.update(250)
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", bar.getvalue())  # rich's bar, without its colours
    assert "replay rp_x " + "━" * 7 + "╸" + "━" * 22 + " 250/1000  25% 125/s ETA 0:06" in drawn  # 25% of 30
    lines = io.StringIO()
    progress = Progress("replay rp_x", 10, stream=lines, tty=False, clock=lambda: now[0])
    now[0] = 10.0
    progress.update(5)
    progress.finish()
    assert lines.getvalue().splitlines()[0] == "replay rp_x: 5/10  50% 0.6/s ETA 0:08"


# --- helpers -----------------------------------------------------------------------------------------
async def read_all(settings: Settings, topic: str) -> list[Any]:
    records: list[Any] = []
    async with kafka.started(reader(settings)) as consumer:
        async for batch in read_ranges(consumer, topic, await offset_ranges(consumer, topic, Window())):
            records += batch
    return records


async def run(store: Store, filters: DlqFilter, window: str = "1h", **options: Any) -> Summary:
    return await replay(store.table._settings, filters, Window.parse(window, None), lookup=store.table.get,
                        producer=store.producer, store=store, options=Options(user="tester", **options))


# --- on the broker ---------------------------------------------------------------------------------
async def test_dry_run_once_refused_force_and_enable(settings: Settings, topics: Topics) -> None:
    now = time.time()
    live, off, other = webhook(1, webhook_id=101), webhook(1, webhook_id=102, enabled=False), webhook(2, webhook_id=201)
    good = [DeadSpec(101, 1, now - 600 + i, conversation=i) for i in range(5)]
    disabled = [DeadSpec(102, 1, now - 500 + i, conversation=i) for i in range(3)]
    deleted = [DeadSpec(103, 1, now - 400 + i) for i in range(2)]
    elsewhere = [DeadSpec(201, 2, now - 300 + i) for i in range(2)]
    old = [DeadSpec(101, 1, now - 3 * 3600 + i, conversation=100 + i) for i in range(2)]
    async with running_store(settings) as store:
        await put_webhooks(store, [live, off, other])
        await produce_dead_letters(store.producer, topics.dlq, [*old, *good, *disabled, *deleted, *elsewhere])
        account_1 = DlqFilter.of(account=1)

        dry = await run(store, account_1, dry_run=True)
        assert dry.status == "dry_run" and dry.plan.total == 5 and dry.plan.matched == 10
        assert dry.plan.skipped == Counter({"webhook_disabled": 3, "webhook_deleted": 2})
        assert dry.plan.skipped_webhooks == {102: "webhook_disabled", 103: "webhook_deleted"}
        assert len(dry.plan.sample) == 5 and dry.plan.stats.records == 12  # the window only
        assert await read_all(settings, topics.deliveries) == []
        assert (await RunBook.load(settings)).runs == {}

        first = await run(store, account_1)
        assert first.status == "done" and first.enqueued == 5
        sent = await read_all(settings, topics.deliveries)
        expected = {s.delivery_id: dead_letter(s) for s in good}
        assert sorted(h.to_dict(r.headers)[h.DELIVERY_ID] for r in sent) == sorted(expected)
        for record in sent:
            values = h.to_dict(record.headers)
            key, value, _ = expected[values[h.DELIVERY_ID]]
            assert (record.key, record.value) == (key, value)
            assert values[h.ATTEMPT] == "1" and values[h.REPLAY_ID] == first.plan.run_id
            assert h.DLQ_REASON not in values and h.ATTEMPTS not in values

        ledger_run = (await RunBook.load(settings)).runs[first.plan.run_id]
        assert ledger_run.status == "done" and ledger_run.user == "tester" and ledger_run.enqueued == 5
        assert ledger_run.filters == account_1.to_json() and ledger_run.finished_at
        assert ledger_run.checkpoint == {p: end for p, (_, end) in ledger_run.ranges.items()}
        assert ledger_run.skipped_webhooks == {102: "webhook_disabled", 103: "webhook_deleted"}

        again = await run(store, account_1)
        assert again.status == "refused" and again.plan.covered_by == Counter({first.plan.run_id: 5})
        assert len(await read_all(settings, topics.deliveries)) == 5

        forced = await run(store, account_1, force=True)
        assert forced.status == "done" and forced.enqueued == 5 and forced.plan.run_id != first.plan.run_id
        assert forced.plan.generation == 1

        enabled = await run(store, account_1, enable=True)
        assert enabled.status == "done" and enabled.enqueued == 3 and enabled.plan.already_replayed == 5
        assert store.table.get(102).enabled  # type: ignore[union-attr]
        replayed = [h.to_dict(r.headers) for r in await read_all(settings, topics.deliveries)]
        assert Counter(v[h.WEBHOOK_ID] for v in replayed) == {"101": 10, "102": 3}


async def test_a_delivery_dead_lettered_twice_goes_back_once(settings: Settings, topics: Topics) -> None:
    now = time.time()
    spec = DeadSpec(101, 1, now - 60, event_id="evt-twice")
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=101)])
        await produce_dead_letters(store.producer, topics.dlq, [spec, DeadSpec(101, 1, now - 30, event_id="evt-twice")])
        summary = await run(store, DlqFilter())
    assert summary.enqueued == 1 and summary.plan.skipped == Counter({"superseded": 1})
    assert len(await read_all(settings, topics.deliveries)) == 1


async def test_rate_is_respected(settings: Settings, topics: Topics) -> None:
    now = time.time()
    specs = [DeadSpec(101, 1, now - 60, conversation=i) for i in range(400)]
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=101)])
        await produce_dead_letters(store.producer, topics.dlq, specs)
        summary = await run(store, DlqFilter(), rate=250)
    assert summary.enqueued == 400
    stamps = sorted(r.timestamp for r in await read_all(settings, topics.deliveries))
    measured = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)
    assert measured == pytest.approx(250, rel=0.10), measured
    assert summary.rate == pytest.approx(250, rel=0.10), summary.rate


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", *args], capture_output=True, text=True,
                          env=cli_env(settings), timeout=60, check=False, stdin=subprocess.DEVNULL)


async def test_cli_replay(settings: Settings, topics: Topics) -> None:
    now = time.time()
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=101), webhook(1, webhook_id=102, enabled=False)])
        await produce_dead_letters(store.producer, topics.dlq, [DeadSpec(101, 1, now - 60 + i, conversation=i)
                                                                  for i in range(4)] + [DeadSpec(102, 1, now - 50)])
    dry = _cli(settings, "dlq", "replay", "--since", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "to re-enqueue: 4 (by webhook: 101: 4)" in dry.stdout
    assert "skipped webhook_disabled: 1 (webhooks 102) (use --enable" in dry.stdout
    assert "dry run: nothing sent" in dry.stdout and "sample:" in dry.stdout

    unconfirmed = _cli(settings, "dlq", "replay", "--since", "1h")
    assert unconfirmed.returncode == 1 and "pass --yes" in unconfirmed.stderr

    done = _cli(settings, "dlq", "replay", "--since", "1h", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    assert result["status"] == "done" and result["enqueued"] == 4 and result["counts"]["skipped_webhook_disabled"] == 1

    refused = _cli(settings, "dlq", "replay", "--since", "1h", "--yes")
    assert refused.returncode == 3 and "already re-enqueued by " + result["run_id"] in refused.stdout
    assert len(await read_all(settings, topics.deliveries)) == 4


async def test_end_to_end_failing_receiver_then_replay(settings: Settings, receiver: Receiver) -> None:
    receiver.set("/down", status=500)
    async with stack(settings) as s:
        hook, bystander = make_webhook(receiver.url("/down")), make_webhook(receiver.url("/fine"))
        await s.add(hook, bystander)
        failing = [delivery(hook, conversation=i, seq=i) for i in range(6)]
        await produce(settings, [*failing, delivery(bystander)])
        await s.until_idle()
        assert len(receiver.for_path("/down")) == 18  # three attempts each

        listing = await list_dead_letters(settings, DlqFilter.of(webhook=hook.id), Window.parse("1h", None))
        assert sorted(d.delivery_id for d in listing.items) == sorted(d.delivery_id for d in failing)
        assert {d.reason for d in listing.items} == {"exhausted"} and {d.attempts for d in listing.items} == {3}
        assert (await list_dead_letters(settings, DlqFilter.of(webhook=bystander.id), Window.parse("1h", None))
                ).matched == 0
        async with kafka.started(reader(settings)) as consumer:  # the worker's attempt log, found by webhook key
            story, _ = await delivery_attempts(consumer, s.topics.attempts, hook.id, failing[0].delivery_id,
                                               since_ms=int((time.time() - 600) * 1000))
        assert [(a.attempt, a.status) for a in story] == [(1, 500), (2, 500), (3, 500)]

        store = Store(settings, s.table, s.store._producer)
        dry = await run(store, DlqFilter.of(webhook=hook.id), dry_run=True)
        assert dry.plan.total == 6
        await s.until_idle()
        assert len(receiver.for_path("/down")) == 18  # the dry run sent nothing

        receiver.set("/down", status=200)
        summary = await run(store, DlqFilter.of(webhook=hook.id))
        assert summary.enqueued == 6
        await s.until_idle()
        redelivered = receiver.for_path("/down")[18:]
        assert sorted(r.headers["webhook-id"] for r in redelivered) == sorted(d.delivery_id for d in failing)
        assert {r.body for r in redelivered} == {d.value for d in failing}

        assert (await run(store, DlqFilter.of(webhook=hook.id))).status == "refused"
        forced = await run(store, DlqFilter.of(webhook=hook.id), force=True)
        assert forced.enqueued == 6
        await s.until_idle()
        assert len(receiver.for_path("/down")) == 18 + 12


# --- the API ---------------------------------------------------------------------------------------
ADMIN_TOKEN, ONE_TOKEN, TWO_TOKEN = "admin-token-0123456789", "token-one-0123456789", "token-two-0123456789"
TOKENS = {"api": {"admin_token": ADMIN_TOKEN, "account_tokens": f"1:{ONE_TOKEN},2:{TWO_TOKEN}",
                  "port": 0, "host": "127.0.0.1"}}


async def test_api_endpoints_enforce_auth_and_account_isolation(kafka_bootstrap: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from aiohttp.web import Application

    from services.ops.api import add_replay_routes
    from tests.conftest import make_settings

    settings = make_settings(kafka_bootstrap, **TOKENS)
    topics = Topics.from_settings(settings)
    await kafka.ensure_topics(settings)
    now = time.time()
    mine, theirs = webhook(1, webhook_id=601), webhook(2, webhook_id=602)
    async with running_store(settings) as store:
        await put_webhooks(store, [mine, theirs])
        await produce_dead_letters(store.producer, topics.dlq, [DeadSpec(601, 1, now - 60 + i, conversation=i)
                                                                  for i in range(3)] + [DeadSpec(602, 2, now - 30)])
        for attempt in (1, 2, 3):
            record = AttemptRecord(delivery_id=f"d{attempt}", webhook_id=601, attempt=attempt, status=500,
                                   outcome="retry", time=iso(now - 100 + attempt))
            await kafka.send(store.producer, topics.attempts, record.encode(), key=b"601", headers=[], timeout=10)
        app = Application()
        routes = add_replay_routes(app, settings, store.table, store, producer=store.producer)
        async with TestClient(TestServer(app)) as client:
            one, two = {"api_access_token": ONE_TOKEN}, {"Authorization": f"Bearer {TWO_TOKEN}"}
            base = "/api/v1/accounts/1/webhooks/601"

            listed = await client.get(f"{base}/dead_letters?since=1h", headers=one)
            assert listed.status == 200
            payload = (await listed.json())["payload"]
            assert payload["matched"] == 3 and {d["webhook_id"] for d in payload["dead_letters"]} == {601}
            for path, headers in ((base, two), (base, {}), ("/api/v1/accounts/2/webhooks/601", two),
                                  ("/api/v1/accounts/1/webhooks/602", one)):
                assert (await client.get(f"{path}/dead_letters", headers=headers)).status == 404
            admin = await client.get(f"{base}/dead_letters", headers={"api_access_token": ADMIN_TOKEN})
            assert admin.status == 200

            attempts = (await (await client.get(f"{base}/deliveries", headers=one)).json())["payload"]["deliveries"]
            assert [a["attempt"] for a in attempts] == [3, 2, 1]

            dry = await client.post(f"{base}/replay", json={"since": "1h", "dry_run": True}, headers=one)
            assert dry.status == 200 and (await dry.json())["payload"]["count"] == 3
            assert (await client.post(f"{base}/replay", json={"since": "1h"}, headers=two)).status == 404
            started = await client.post(f"{base}/replay", json={"since": "1h"}, headers=one)
            assert started.status == 202
            replay_id = (await started.json())["payload"]["replay_id"]
            await asyncio.gather(*routes.tasks)
            state = (await (await client.get(f"{base}/replays/{replay_id}", headers=one)).json())["payload"]
            assert state["status"] == "done" and state["enqueued"] == 3 and state["user"] == "api:account:1"
            assert (await client.get(f"/api/v1/accounts/2/webhooks/602/replays/{replay_id}", headers=two)).status == 404
            assert (await client.post(f"{base}/replay", json={"since": "1h"}, headers=one)).status == 409
            forced = await client.post(f"{base}/replay", json={"since": "1h", "force": True}, headers=one)
            assert forced.status == 202
            await asyncio.gather(*routes.tasks)

            bad = await client.post(f"{base}/recover", json={}, headers=one)
            assert bad.status == 400 and "since is required" in (await bad.json())["message"]
            assert (await client.post(f"{base}/replay", json={"rate": -1}, headers=one)).status == 400
            recovered = await client.post(f"{base}/recover", json={"since": "1h", "dry_run": True}, headers=one)
            assert recovered.status == 200 and (await recovered.json())["payload"]["count"] == 0
    sent = [h.to_dict(r.headers) for r in await read_all(settings, topics.deliveries)]
    assert len(sent) == 6 and {v[h.WEBHOOK_ID] for v in sent} == {"601"}


async def test_api_mounted_in_the_admin_app(kafka_bootstrap: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client import CollectorRegistry

    from services.admin.app import create_app
    from services.ops.api import add_replay_routes
    from services.shared.metrics import Metrics
    from tests.conftest import make_settings

    settings = make_settings(kafka_bootstrap, **TOKENS)
    await kafka.ensure_topics(settings)
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=701)])
        app = create_app(settings, store.table, store, Metrics(CollectorRegistry()))
        add_replay_routes(app, settings, store.table, store, producer=store.producer)
        async with TestClient(TestServer(app)) as client:
            base = "/api/v1/accounts/1/webhooks/701/dead_letters"
            assert (await client.get(base)).status == 401  # the admin app's middleware answers first
            assert (await client.get(base, headers={"api_access_token": TWO_TOKEN})).status == 404
            listed = await client.get(base, headers={"api_access_token": ONE_TOKEN})
            assert listed.status == 200 and (await listed.json())["payload"]["matched"] == 0


async def test_an_interrupted_forced_run_resumes_as_forced(settings: Settings, topics: Topics) -> None:
    from services.replay import runs as ledger

    now = time.time()
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=101)])
        await produce_dead_letters(store.producer, topics.dlq, [DeadSpec(101, 1, now - 60 + i, conversation=i)
                                                                  for i in range(5)])
        first = await run(store, DlqFilter())
        done = (await RunBook.load(settings)).runs[first.plan.run_id]
        crashed = done.model_copy(update={  # as a `--force` run killed before its first checkpoint leaves it
            "id": ledger.run_id("replay", done.filters, done.ranges, 1), "generation": 1, "status": "running",
            "force": True, "pid": 2**22 + 1, "enqueued": 0, "finished_at": None,
            "checkpoint": {p: start for p, (start, _) in done.ranges.items()}})
        await ledger.write(store.producer, settings, crashed)
        resumed = await run(store, DlqFilter())  # the same command without --force: resumes the forced run
    assert resumed.status == "done" and resumed.plan.run_id == crashed.id and resumed.enqueued == 5
    assert resumed.plan.resumed is not None and resumed.plan.already_replayed == 0
    assert len(await read_all(settings, topics.deliveries)) == 10
