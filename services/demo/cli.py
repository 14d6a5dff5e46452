"""``akece-webhooks demo``: a newcomer's first look at the whole pipeline.

Starts the local broker (unless ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` is set), ensures topics, runs
api + router + delivery in this process with a demo receiver, creates two webhooks through the API
(one whose endpoint always fails), publishes a handful of realistic events and prints a live
account until Ctrl-C, which stops everything cleanly (the broker too; its data is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from aiohttp import web
from dotenv import dotenv_values
from prometheus_client import CollectorRegistry

from schemas.examples import GUIDE_EXAMPLE, example
from services.demo.receiver import FAILING_PATH, OK_PATH, DemoReceiver
from services.devtools.kafka_local import LocalKafka
from services.publisher.publisher import Publisher
from services.run import run_roles
from services.run_commands import ROLES
from services.shared import kafka
from services.shared import logging as logs
from services.shared.cli import check_env_file, load_settings
from services.shared.runtime import run_async
from services.shared.settings import Settings

DEMO_DEFAULTS = {
    "AKECE_RETRY_SCHEDULE": "2,4",  # short, so the failing webhook reaches the DLQ within seconds
    "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",  # the demo receiver is on loopback
    "AKECE_API_ADMIN_TOKEN": "demo-admin-token",
    "AKECE_API_ACCOUNT_TOKENS": "1:demo-account-1-token",  # the web console's sign-in for account 1
    "AKECE_LOG_LEVEL": "warning",
    "AKECE_LOG_FORMAT": "console",  # one readable line per dead letter between the receiver's lines
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser("demo", help="run the whole pipeline with a demo receiver and demo webhooks (make run)",
                          epilog="examples:\n  akece-webhooks demo\n"
                                 "  akece-webhooks --bootstrap-server 127.0.0.1:9092 demo --receiver-port 8091")
    demo.add_argument("--receiver-port", type=int, default=8090, help="port of the demo receiver")
    demo.add_argument("--keep-kafka", action="store_true", help="leave the local broker running on exit")
    demo.set_defaults(func=demo_command)


@contextmanager
def local_broker(settings: Settings, keep: bool) -> Iterator[None]:
    """The local broker for the demo, unless an external cluster is configured."""
    if "bootstrap_servers" in settings.kafka.model_fields_set:  # the environment, --env-file or --bootstrap-server
        print(f"using Kafka at {settings.kafka.bootstrap_servers}")
        yield
        return
    broker = LocalKafka()
    already = broker.status().running
    print("starting the local Kafka broker (first run resolves its jars with Maven)..." if not already
          else "local Kafka broker already running")
    broker.start()
    try:
        yield
    finally:
        if not already and not keep:
            print("stopping the local Kafka broker (data kept in .kafka/data)")
            broker.stop()


def demo_command(args: argparse.Namespace) -> int:
    check_env_file(args)
    given = dotenv_values(args.env_file) if args.env_file else {}
    for key, value in DEMO_DEFAULTS.items():
        if key not in given:  # the defaults give way to the environment and to --env-file
            os.environ.setdefault(key, value)
    settings = load_settings(args)
    logs.configure(settings)
    with local_broker(settings, args.keep_kafka):
        return run_async(demo(settings, args.receiver_port))


async def demo(settings: Settings, receiver_port: int) -> int:
    print("ensuring topics...")
    await kafka.ensure_topics(settings)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    receiver = DemoReceiver(settings.http.header_prefix)
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
    pipeline = asyncio.create_task(run_roles(settings, ROLES, registry=registry, stop=stop, install_signals=False))
    try:
        api = f"http://127.0.0.1:{settings.api.port}"
        await wait_ready(api, pipeline)
        receiver_url = f"http://127.0.0.1:{receiver_port}"
        await create_demo_webhooks(settings, api, receiver_url, receiver)
        await publish_demo_events(settings)
        print_urls(settings, api, receiver_url)
        await live_account(registry, stop, pipeline)
    finally:
        stop.set()
        code = await pipeline
        await runner.cleanup()
    print("pipeline stopped")
    return code


async def wait_ready(api: str, pipeline: asyncio.Task[int]) -> None:
    """Wait for the API's /readyz (the subscription table caught up); fail if the pipeline died."""
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if pipeline.done():
                raise SystemExit(f"the pipeline stopped while starting (exit {pipeline.result()})")
            try:
                async with http.get(f"{api}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the pipeline did not become ready within 60 s")


async def create_demo_webhooks(settings: Settings, api: str, receiver_url: str, receiver: DemoReceiver) -> None:
    """Two webhooks on account 1: one healthy, one whose endpoint always answers 500."""
    token = settings.api.admin_token.get_secret_value() if settings.api.admin_token else ""
    headers = {"api_access_token": token}
    base = f"{api}/api/v1/accounts/1/webhooks"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(base) as response:
            existing = {w["url"]: w for w in (await response.json())["payload"]["webhooks"]}
        for path, name in ((OK_PATH, "Demo CRM"), (FAILING_PATH, "Demo broken endpoint")):
            url = receiver_url + path
            webhook = await upsert(http, base, existing.get(url), url, name)
            receiver.secrets[path] = webhook["secret"]
            print(f"webhook {webhook['id']} {name!r} -> {url} (subscriptions: {len(webhook['subscriptions'])})")


async def upsert(http: aiohttp.ClientSession, base: str, existing: dict[str, Any] | None, url: str,
                 name: str) -> dict[str, Any]:
    """Create the webhook, or reuse it from an earlier run: rotating its secret shows us the new one."""
    if existing is None:
        body = {"webhook": {"url": url, "name": name}}
        async with http.post(base, json=body) as response:
            response.raise_for_status()
            return (await response.json())["payload"]["webhook"]  # type: ignore[no-any-return]
    if not existing.get("enabled", True):
        async with http.patch(f"{base}/{existing['id']}", json={"enabled": True}) as response:
            response.raise_for_status()
    async with http.post(f"{base}/{existing['id']}/rotate_secret") as response:
        response.raise_for_status()
        return (await response.json())["payload"]["webhook"]  # type: ignore[no-any-return]


def demo_events() -> list[dict[str, Any]]:
    return [
        GUIDE_EXAMPLE,
        example("conversation_created", account_id=1, conversation_id=1234),
        example("message_created", account_id=1, conversation_id=1234),
        example("conversation_status_changed", account_id=1, conversation_id=1234),
        example("conversation_updated", account_id=1, conversation_id=1234),
        example("contact_created", account_id=1),
        example("webwidget_triggered", account_id=1, conversation_id=1234),
    ]


async def publish_demo_events(settings: Settings) -> None:
    async with Publisher(settings, source="akece://demo") as publisher:
        published = await publisher.publish_many(demo_events())
    for item in published:
        print(f"published {item.event.event_type} (event id {item.event.event_id[:8]})")


def print_urls(settings: Settings, api: str, receiver_url: str) -> None:
    print()
    print(f"  API       {api}/api/v1/accounts/1/webhooks  (header api_access_token: "
          f"{os.environ.get('AKECE_API_ADMIN_TOKEN', '<AKECE_API_ADMIN_TOKEN>')})")
    print(f"  console   {api}/app/  (sign in with {demo_account_token()} for account 1's webhooks, "
          f"or the admin token for every account and the pipeline's status)")
    print(f"  metrics   http://127.0.0.1:{settings.metrics.port}/metrics  (also {api}/metrics)")
    print(f"  receiver  {receiver_url}{OK_PATH} (answers 200), {receiver_url}{FAILING_PATH} (answers 500)")
    print(f"  retries   every {', '.join(f'{d:g}s' for d in settings.retry.schedule)} then the DLQ; "
          "try `akece-webhooks dlq list` in another terminal")
    print("  Ctrl-C stops everything\n")


def demo_account_token() -> str:
    """Account 1's token from ``AKECE_API_ACCOUNT_TOKENS`` (the demo's own unless set otherwise)."""
    spec = os.environ.get("AKECE_API_ACCOUNT_TOKENS", "")
    for pair in spec.split(","):
        account, _, token = pair.partition(":")
        if account.strip() == "1" and token.strip():
            return token.strip()
    return "<an account 1 token of AKECE_API_ACCOUNT_TOKENS>"


def counter_total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def live_account(registry: CollectorRegistry, stop: asyncio.Event, pipeline: asyncio.Task[int]) -> None:
    last = None
    while not stop.is_set() and not pipeline.done():
        name = "akece_webhooks_deliveries_total"
        line = (f"[account] delivered={counter_total(registry, name, outcome='success'):.0f} "
                f"retried={counter_total(registry, name, outcome='retry'):.0f} "
                f"dead-lettered={counter_total(registry, name, outcome='dead_letter'):.0f}")
        if line != last:
            print(line, flush=True)
            last = line
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except TimeoutError:
            continue
