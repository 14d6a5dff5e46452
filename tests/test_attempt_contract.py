"""One attempt-record contract: what a real delivery worker writes, every reader reads by the same names.

A real worker delivers to a receiver that drops the connection (a failure without an HTTP status,
so the error text is all a reader can show) and to a healthy one; then the attempt log is read
raw and through each reader: ``status``'s open circuits, the deliveries API, ``dlq show``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from bench.fixtures import cli_env
from services.contract.attempts import FIELDS, AttemptRecord, decode
from services.ops import status as status_mod
from services.ops.api import add_replay_routes
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import delivery, make_webhook, produce, read_topic, stack
from tests.receiver import Receiver

pytest_plugins = ["tests.receiver"]

ADMIN = "admin-token-0123456789"


def dlq_show(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services", "dlq", "show", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=60, check=False)


def canonical(record: dict[str, object]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


async def test_every_reader_reads_what_the_worker_writes(kafka_bootstrap: str, receiver: Receiver) -> None:
    settings = make_settings(kafka_bootstrap, circuit={"failure_threshold": 2, "open_s": 600},
                             delivery={"per_webhook_concurrency": 1}, api={"admin_token": ADMIN})
    receiver.set("/drop", drop=True)
    async with stack(settings) as s:
        dropping, healthy = make_webhook(receiver.url("/drop"), account_id=7), make_webhook(receiver.url("/ok"))
        await s.add(dropping, healthy)
        failing = [delivery(dropping, conversation=c) for c in range(3)]
        await produce(settings, [*failing, delivery(healthy)])
        await s.until_idle()

        records = await read_topic(settings, s.topics.attempts, 10)
        raw = [orjson.loads(r.value) for r in records]
        assert len(raw) == 10  # 3 deliveries x 3 attempts, and one success
        assert all(set(record) == set(FIELDS) for record in raw)
        assert [decode(r.value) for r in records] == [AttemptRecord(**record) for record in raw]
        sent = [r for r in raw if r["webhook_id"] == dropping.id and r["error_class"] != "circuit_open"]
        last_sent = max(sent, key=lambda r: r["time"])
        message = last_sent["error_message"]
        assert message and last_sent["status"] is None and message != last_sent["error_class"]

        # status: open circuits
        report = await status_mod.collect(settings, s.table)
        assert report.circuits is not None
        [circuit] = report.circuits.circuits
        assert circuit.webhook_id == dropping.id and circuit.skipped
        assert circuit.last_error == message

        # the deliveries API
        app = Application()
        add_replay_routes(app, settings, s.table, s.store)
        async with TestClient(TestServer(app)) as client:
            answer = await client.get(f"/api/v1/accounts/7/webhooks/{dropping.id}/deliveries?since=1h",
                                      headers={"api_access_token": ADMIN})
            assert answer.status == 200
            listed = (await answer.json())["payload"]["deliveries"]
        mine = [r for r in raw if r["webhook_id"] == dropping.id]
        assert sorted(listed, key=canonical) == sorted(mine, key=canonical)

    # dlq show, as JSON and as text
    target = last_sent["delivery_id"]
    shown = await asyncio.to_thread(dlq_show, settings, target, "--json")
    assert shown.returncode == 0, shown.stderr
    history = orjson.loads(shown.stdout)["attempt_history"]
    assert history == sorted((r for r in raw if r["delivery_id"] == target), key=lambda r: r["attempt"])
    text = await asyncio.to_thread(dlq_show, settings, target)
    assert text.returncode == 0 and message in text.stdout
