"""``publish --example EVENT``, ``webhooks get ID`` and ``webhooks test ID``, run as a user runs them (a process)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

import orjson
from standardwebhooks.webhooks import Webhook as StandardWebhook

from bench.fixtures import running_store
from schemas import validate_event
from services.admin.service import webhook_view
from services.contract import headers as h
from services.contract.topics import Topics
from services.delivery.http import HttpSender
from services.delivery.ping import send_test
from services.ops import status as status_mod
from services.shared import kafka
from services.shared.exits import Exit
from services.shared.netguard import NetworkGuard
from services.shared.settings import Settings
from services.shared.webhooks import Webhook
from tests.conftest import make_settings
from tests.delivery_support import make_webhook, read_topic, stack
from tests.receiver import Receiver


@dataclass
class Done:
    code: int
    out: str
    err: str


async def cli(settings: Settings, *args: str) -> Done:
    env = {**os.environ, "AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", *args, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


async def store_webhook(settings: Settings, webhook: Webhook) -> None:
    async with running_store(settings) as store:
        await store.put(webhook)


async def test_publish_example_sends_a_realistic_event_for_the_account(settings: Settings, topics: Topics) -> None:
    done = await cli(settings, "publish", "--example", "message_created", "--account", "5", "--conversation", "77")
    assert done.code == 0, done.err
    assert done.out.startswith("published message_created")
    [record] = await read_topic(settings, topics.events, 1)
    assert record.key == b"5:77"
    headers = h.to_dict(record.headers)
    assert (headers["ce_type"], headers["ce_accountid"]) == ("message_created", "5")
    payload = validate_event("message_created", record.value)  # the full model, not only the structure
    assert payload["account"]["id"] == 5 and payload["conversation"]["id"] == 77
    assert len(record.value) > 2000, "a realistic payload, not a stub"


async def test_publish_example_refuses_a_file_too(settings: Settings) -> None:
    done = await cli(settings, "publish", "--example", "message_created", "events.json")
    assert done.code == 2
    assert "give FILE or --example, not both" in done.err


async def test_webhooks_get_shows_one_webhook_with_its_secret_masked(settings: Settings, topics: Topics) -> None:
    webhook = make_webhook("https://hooks.example.com/akece", account_id=3)
    await store_webhook(settings, webhook)
    secret = webhook.secrets[0].secret

    done = await cli(settings, "webhooks", "get", str(webhook.id))
    assert done.code == 0, done.err
    shown = dict([*line.split(None, 1), ""][:2] for line in done.out.splitlines())
    assert (shown["id"], shown["url"], shown["account_id"]) == (str(webhook.id), "https://hooks.example.com/akece", "3")
    assert (shown["enabled"], shown["subscriptions"]) == ("yes", "message_created")
    assert secret not in done.out

    as_json = await cli(settings, "webhooks", "get", str(webhook.id), "--json")
    view = orjson.loads(as_json.out)
    assert view == orjson.loads(orjson.dumps(webhook_view(webhook, 0.0)))
    assert view["secret"] != secret

    missing = await cli(settings, "webhooks", "get", "999")
    assert (missing.code, missing.err.strip()) == (Exit.NOT_FOUND, "webhook 999 not found")


async def test_webhooks_test_sends_a_signed_ping_and_records_it(settings: Settings, topics: Topics,
                                                                receiver: Receiver) -> None:
    webhook = make_webhook(receiver.url("/ping"), account_id=4)
    await store_webhook(settings, webhook)

    done = await cli(settings, "webhooks", "test", str(webhook.id))
    assert done.code == 0, done.err
    request = await receiver.next_request(timeout=5)
    ping = StandardWebhook(webhook.secrets[0].secret).verify(request.body, request.headers)
    assert (ping["event"], ping["webhook_id"], ping["account"]) == ("ping", webhook.id, {"id": 4})
    lines = done.out.splitlines()
    assert lines[0] == f"test delivery {request.headers['webhook-id']} (event ping) to webhook {webhook.id}"
    assert lines[1] == "status    HTTP 200"
    assert lines[2].startswith("latency   ") and lines[2].endswith(" ms")
    assert lines[3] == 'response  {"ok":true}'

    [attempt] = [orjson.loads(r.value) for r in await read_topic(settings, topics.attempts, 1)]
    assert attempt["delivery_id"] == request.headers["webhook-id"]
    assert (attempt["event_type"], attempt["outcome"], attempt["status"]) == ("ping", "test", 200)
    assert attempt["webhook_id"] == webhook.id

    receiver.set("/ping", status=500, body=b'{"error":"boom"}')
    failed = await cli(settings, "webhooks", "test", str(webhook.id), "--json")
    assert failed.code == 1
    result = orjson.loads(failed.out)
    assert (result["ok"], result["status"], result["response_excerpt"]) == (False, 500, '{"error":"boom"}')

    missing = await cli(settings, "webhooks", "test", "999")
    assert (missing.code, missing.err.strip()) == (Exit.NOT_FOUND, "webhook 999 not found")


async def test_failed_test_pings_open_no_circuit_in_status(kafka_bootstrap: str, receiver: Receiver) -> None:
    """A worker's circuit never sees a test ping, so ``status`` does not count failed pings as one."""
    settings = make_settings(kafka_bootstrap, circuit={"failure_threshold": 2})
    receiver.set("/down", status=500)
    webhook = make_webhook(receiver.url("/down"), account_id=6)
    guard = NetworkGuard(settings.allowed_private_cidrs)
    async with stack(settings) as s, HttpSender(settings.http, guard) as sender, \
            kafka.started(kafka.producer(settings)) as producer:
        await s.add(webhook)
        sent = [await send_test(settings, webhook, sender, producer) for _ in range(3)]
        assert [p.result.status for p in sent] == [500, 500, 500]
        report = await status_mod.collect(settings, s.table)
    assert report.circuits is not None
    assert (report.circuits.records, report.circuits.circuits) == (3, [])
