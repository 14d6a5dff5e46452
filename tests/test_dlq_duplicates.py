"""Two dead letters of one delivery (two retry chains after a crash) are one delivery to list and replay.

A real worker dead-letters a delivery record that is on the deliveries topic twice (what a kill
between a retry record's acknowledgement and the commit leaves behind); ``dlq list`` (CLI and API)
shows it once, and ``dlq replay`` (CLI and API) sends it once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter

import orjson
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from bench.fixtures import (
    DeadSpec,
    cli_env,
    dead_letter,
    produce_dead_letters,
    put_webhooks,
    running_store,
    webhook,
)
from services.contract import headers as h
from services.contract.dead_letters import DlqFilter
from services.contract.topics import Topics
from services.ops.api import add_replay_routes
from services.replay.dlq_source import replay
from services.replay.plans import Options, Summary
from services.replay.window import Window
from services.shared import kafka
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import delivery, make_webhook, produce, stack
from tests.receiver import Receiver
from tests.test_replay import read_all

pytest_plugins = ["tests.receiver"]

ADMIN = "admin-token-0123456789"


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", "dlq", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=60, check=False)


async def test_two_dead_letters_of_one_delivery_list_and_replay_once(kafka_bootstrap: str,
                                                                     receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, api={"admin_token": ADMIN})
    receiver.set("/a", status=500)
    receiver.set("/b", status=500)
    async with stack(settings) as s:
        by_cli, by_api = make_webhook(receiver.url("/a")), make_webhook(receiver.url("/b"))
        await s.add(by_cli, by_api)
        twice_a, once_a, twice_b = delivery(by_cli, conversation=1), delivery(by_cli, conversation=2), delivery(by_api)
        await produce(settings, [twice_a, twice_a, once_a, twice_b, twice_b])
        await s.until_idle()
        assert len(receiver.for_path("/a")) == 9 and len(receiver.for_path("/b")) == 6  # 3 attempts per chain

        listed = await asyncio.to_thread(cli, settings, "list", "--webhook", str(by_cli.id), "--json")
        assert listed.returncode == 0, listed.stderr
        items = orjson.loads(listed.stdout)
        assert sorted(d["delivery_id"] for d in items) == sorted([twice_a.delivery_id, once_a.delivery_id])
        text = await asyncio.to_thread(cli, settings, "list", "--webhook", str(by_cli.id))
        assert "2 matching dead letters (1 earlier dead letters of the same deliveries not shown)" in text.stdout

        app = Application()
        routes = add_replay_routes(app, settings, s.table, s.store)
        async with TestClient(TestServer(app)) as client:
            base, auth = f"/api/v1/accounts/1/webhooks/{by_api.id}", {"api_access_token": ADMIN}
            answer = await client.get(f"{base}/dead_letters?since=1h", headers=auth)
            payload = (await answer.json())["payload"]
            assert [d["delivery_id"] for d in payload["dead_letters"]] == [twice_b.delivery_id]
            assert (payload["matched"], payload["superseded"]) == (1, 1)

            receiver.set("/a", status=200)
            receiver.set("/b", status=200)
            replayed = await asyncio.to_thread(cli, settings, "replay", "--webhook", str(by_cli.id), "--yes")
            assert replayed.returncode == 0, replayed.stderr + replayed.stdout
            started = await client.post(f"{base}/replay", json={"since": "1h"}, headers=auth)
            assert started.status == 202, await started.text()
            assert (await started.json())["payload"]["count"] == 1
            await asyncio.gather(*routes.tasks)
        await s.until_idle()

    def sent(path: str) -> list[str]:
        return [r.headers["webhook-id"] for r in receiver.for_path(path) if r.answered == 200]

    assert sorted(sent("/a")) == sorted([twice_a.delivery_id, once_a.delivery_id])
    assert sent("/b") == [twice_b.delivery_id]


async def test_a_later_copy_of_a_replayed_dead_letter_is_not_sent_again(settings: Settings, topics: Topics) -> None:
    """The second chain's dead letter arrives after the first one was replayed: a later replay skips it as
    already replayed; a new failure of the replayed delivery (it names the replay) is replayed."""
    now = time.time()
    first = DeadSpec(101, 1, now - 60, event_id="evt-forked")
    copy = DeadSpec(101, 1, now - 50, event_id="evt-forked")
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1, webhook_id=101)])

        async def run() -> Summary:
            return await replay(settings, DlqFilter(), Window.parse("1h", None), lookup=store.table.get,
                                producer=store.producer, store=store, options=Options(user="tester"))

        await produce_dead_letters(store.producer, topics.dlq, [first])
        replayed = await run()
        assert (replayed.status, replayed.enqueued) == ("done", 1)
        await produce_dead_letters(store.producer, topics.dlq, [copy])
        again = await run()
        assert again.status == "refused" and again.plan.covered_by == Counter({replayed.plan.run_id: 2})

        key, value, headers = dead_letter(DeadSpec(101, 1, now - 40, event_id="evt-forked"))
        headers = h.replace(headers, {h.REPLAY_ID: replayed.plan.run_id})  # the replayed delivery failed again
        await kafka.send(store.producer, topics.dlq, value, key=key, headers=headers, timeout=10)
        third = await run()
        assert (third.status, third.enqueued) == ("done", 1)
    sent = [h.to_dict(r.headers)[h.DELIVERY_ID] for r in await read_all(settings, topics.deliveries)]
    assert sent == [first.delivery_id, first.delivery_id]  # once per failure, never for the copy
