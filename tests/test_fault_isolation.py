"""One bad record is that record's failure, never the process's: the subscription table, the replay
engine and the API, against the real broker. Each counts ``akece_webhooks_internal_errors_total{stage}``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bench.fixtures import DeadSpec, cli_env, dead_letter, produce_dead_letters, put_webhooks, running_store
from services.admin.app import create_app
from services.admin.service import WebhookService
from services.contract import headers as h
from services.contract.dead_letters import DeadLetter, DlqFilter
from services.contract.topics import Topics
from services.ops.api import REPLAY_ROUTES
from services.replay import planner
from services.replay.dlq_source import DlqSource
from services.replay.engine import Engine
from services.replay.plans import Options, Send, Skip
from services.replay.window import Window
from services.shared import kafka, webhook_index
from services.shared import webhooks as hooks
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import encode_webhook
from tests.log_capture import captured_logs
from tests.test_replay import read_all
from tests.test_subscriptions import webhook

INTERNAL = "akece_webhooks_internal_errors_total"
ADMIN = "admin-token-0123456789"


def internal_errors(metrics: Metrics, stage: str) -> float:
    return metrics.registry.get_sample_value(INTERNAL, {"stage": stage}) or 0.0


@asynccontextmanager
async def following(table: SubscriptionTable) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(table.run(stop))
    try:
        async with asyncio.timeout(30):
            ready = asyncio.create_task(table.wait_ready())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                ready.cancel()
                task.result()
        yield task
    finally:
        stop.set()
        await task


# --- the subscription table ------------------------------------------------------------------------
async def test_the_table_skips_a_record_that_makes_it_raise_and_keeps_following(
        settings: Settings, topics: Topics, monkeypatch: pytest.MonkeyPatch) -> None:
    real = hooks.decode_webhook

    def decode(value: bytes) -> hooks.Webhook:  # a bug that one record's bytes trigger
        if b"POISON" in value:
            raise RuntimeError(f"cannot handle {value.decode()}")
        return real(value)

    monkeypatch.setattr(webhook_index, "decode_webhook", decode)
    good, poison, later = (webhook(hooks.new_webhook_id(), 7, ["message_created"], url=f"https://{n}.example.com/x")
                           for n in ("good", "POISON-SECRETPATH", "later"))
    elsewhere = webhook(hooks.new_webhook_id(), 7, ["message_created"], url="https://elsewhere.example.com/")
    metrics = Metrics(CollectorRegistry())
    table = SubscriptionTable(settings, metrics=metrics)
    async with kafka.started(kafka.producer(settings)) as producer:
        for key, hook in ((good.id, good), (poison.id, poison), ("-1", elsewhere), ("\u0661", elsewhere),
                          (good.id + 1, elsewhere)):  # the last three: keys that are not the record's id
            await producer.send_and_wait(topics.subscriptions, encode_webhook(hook), key=str(key).encode())
        with captured_logs() as logs:
            async with following(table) as task:
                assert [w.id for w in table.all()] == [good.id]
                await SubscriptionStore(settings, table, producer).put(later)  # returns once the table has it
                assert not task.done()  # still following after the bad records
    assert sorted(w.id for w in table.all()) == sorted([good.id, later.id])
    assert internal_errors(metrics, "subscriptions") == 4
    events = logs.events("subscriptions.bad_record")
    assert Counter(e["errors"] for e in events) == {"RuntimeError": 1, "the key is not a webhook id": 2,
                                                    "the key is not the record's webhook id": 1}
    assert "SECRETPATH" not in logs.text()


# --- the replay engine -----------------------------------------------------------------------------
def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", *args], env=cli_env(settings), capture_output=True,
                          text=True, timeout=60, check=False)


async def test_a_dead_letter_with_impossible_times_is_listed_and_replayed(settings: Settings, topics: Topics) -> None:
    """Headers are anyone's input: ``nan`` or ``1e999`` as a time once crashed list, show and replay."""
    now = time.time()
    specs = [DeadSpec(101, 1, now - 60 + n, conversation=n) for n in range(3)]
    odd = DeadSpec(101, 1, now - 30, conversation=9)
    key, value, headers = dead_letter(odd)
    headers = h.replace(headers, {h.DLQ_AT: "1e999", h.FIRST_ATTEMPT_AT: "nan", h.LAST_ATTEMPT_AT: "-inf"})
    async with running_store(settings) as store:
        await put_webhooks(store, [subs_webhook(101)])
        await produce_dead_letters(store.producer, topics.dlq, specs)
        await kafka.send(store.producer, topics.dlq, value, key=key, headers=headers, timeout=10)

    listed = await asyncio.to_thread(run_cli, settings, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [shown] = [d for d in orjson.loads(listed.stdout) if d["delivery_id"] == odd.delivery_id]
    assert shown["first_attempt_at"] is None and shown["dead_lettered_at"] is not None  # the record's own stamp
    show = await asyncio.to_thread(run_cli, settings, "dlq", "show", odd.delivery_id)
    assert show.returncode == 0, show.stderr
    replayed = await asyncio.to_thread(run_cli, settings, "dlq", "replay", "--yes", "--json")
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout
    sent = [h.to_dict(r.headers)[h.DELIVERY_ID] for r in await read_all(settings, topics.deliveries)]
    assert sorted(sent) == sorted(d.delivery_id for d in [*specs, odd])


def subs_webhook(webhook_id: int) -> hooks.Webhook:
    from bench.fixtures import webhook as fixture_webhook

    return fixture_webhook(1, webhook_id=webhook_id)


class FlakySource(DlqSource):
    """A source with a bug that one record triggers."""

    def __init__(self, *args: Any, poison: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.poison = poison

    def select(self, dead: DeadLetter) -> Send | Skip | None:
        if dead.delivery_id == self.poison:
            raise KeyError(dead.delivery_id)
        return super().select(dead)


async def test_an_unexpected_error_on_one_record_skips_that_record_only(settings: Settings, topics: Topics) -> None:
    now = time.time()
    specs = [DeadSpec(101, 1, now - 60 + n, conversation=n) for n in range(5)]
    metrics = Metrics(CollectorRegistry())
    async with running_store(settings) as store:
        await put_webhooks(store, [subs_webhook(101)])
        await produce_dead_letters(store.producer, topics.dlq, specs)
        source = FlakySource(settings, DlqFilter(), store.table.get, poison=specs[2].delivery_id)
        engine = Engine(settings, source, producer=store.producer, options=Options(user="tester"), store=store,
                        metrics=metrics)
        with captured_logs() as logs:
            plan = await engine.plan(Window.parse("1h", None))
            summary = await engine.execute(plan)
    assert summary.status == "done" and summary.enqueued == 4
    assert plan.skipped == Counter({planner.INTERNAL_ERROR: 1})
    assert internal_errors(metrics, "replay") == 1
    [failed] = logs.events("replay.record_failed")
    assert (failed["error"], failed["error_class"]) == ("KeyError", "internal")
    assert specs[2].delivery_id not in logs.text()
    sent = {h.to_dict(r.headers)[h.DELIVERY_ID] for r in await read_all(settings, topics.deliveries)}
    assert sent == {s.delivery_id for n, s in enumerate(specs) if n != 2}


# --- the API ---------------------------------------------------------------------------------------
async def test_an_unexpected_error_in_the_api_is_that_request_s_500(
        settings: Settings, topics: Topics, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"admin_token": SecretStr(ADMIN)})})
    now = time.time()
    metrics = Metrics(CollectorRegistry())
    async with running_store(settings) as store:
        await put_webhooks(store, [subs_webhook(101)])
        await produce_dead_letters(store.producer, topics.dlq, [DeadSpec(101, 1, now - 60)])
        app = create_app(settings, store.table, store, metrics)
        async with TestClient(TestServer(app)) as client:
            auth = {"api_access_token": ADMIN}
            original = WebhookService.for_account

            def broken(self: WebhookService, account_id: int) -> list[hooks.Webhook]:
                raise RuntimeError("a bug")

            monkeypatch.setattr(WebhookService, "for_account", broken)
            async with client.get("/api/v1/accounts/1/webhooks", headers=auth) as response:
                assert response.status == 500 and await response.json() == {"error": "Internal error"}
            monkeypatch.setattr(WebhookService, "for_account", original)
            async with client.get("/api/v1/accounts/1/webhooks", headers=auth) as response:
                assert response.status == 200  # the next request is served
            assert internal_errors(metrics, "api") == 1

            async def failing(self: Engine[Any], plan: Any, **_: Any) -> Any:
                raise RuntimeError("a bug in a background run")

            monkeypatch.setattr(Engine, "execute", failing)
            with captured_logs() as logs:
                async with client.post("/api/v1/accounts/1/webhooks/101/replay", json={"since": "1h"},
                                       headers=auth) as response:
                    assert response.status == 202
                await asyncio.gather(*app[REPLAY_ROUTES].tasks)
            [failed] = logs.events("replay.api_failed")
            assert (failed["error_class"], failed["error"]) == ("internal", "RuntimeError")
            assert internal_errors(metrics, "api") == 2
