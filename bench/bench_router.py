"""Router benchmark: routed deliveries per second and CPU per delivery of one router process.

    python -m bench.bench_router [--events 10000] [--quick]

Runs against ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092) under its own topic prefix,
with the broker co-located. For each scenario the events are published first (not timed); then one
``RouterWorker`` routes them in this process, timed from its partition assignment to its last
commit. CPU is this process's user+system time over that window (the broker's is not included).
Kafka scenarios: fan-out 1 and 10, with 10 and 100,000 webhooks in the table.

Also measures the pure core (``route()`` per event, no Kafka) at fan-out 1 and 10 with 10 to 100,000
webhooks in the table, to show that routing cost does not grow with the number of webhooks.

A warm-up (one small Kafka scenario and one core scenario, not reported) runs first, so the first
row does not pay for cold connections, imports and caches.

Writes ``bench/results/router-<date>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from bench.fixtures import delete_topics
from schemas import EVENT_NAMES
from schemas.examples import example
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.publisher.events import OutgoingEvent, prepare
from services.router.core import IncomingEvent, Routed, RoutePolicy, route
from services.router.worker import RouterWorker
from services.shared import kafka
from services.shared import logging as logs
from services.shared.metrics import Metrics
from services.shared.runtime import run_async
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable
from services.shared.webhooks import Webhook, encode_webhook

REPEATS = 5
RESULTS = Path(__file__).resolve().parent / "results"
ACCOUNTS = 20  # Kafka scenarios: events spread over this many accounts, each with `fanout` webhooks


@dataclass
class Row:
    scenario: str
    validation: str
    fanout: int
    webhooks: int
    events: int
    deliveries: int
    seconds: float
    deliveries_per_s: float
    events_per_s: float
    cpu_us_per_delivery: float
    cpu_us_per_event: float


def hooks_for(fanout: int, total: int, accounts: int = ACCOUNTS) -> list[Webhook]:
    """``fanout`` webhooks for each of ``accounts`` accounts, padded with others' to ``total``."""
    stamp = now_iso()
    hooks = [Webhook(id=a * 1000 + i, account_id=a, url=f"https://example.com/{a}/{i}",
                     subscriptions=list(EVENT_NAMES), created_at=stamp, updated_at=stamp)
             for a in range(1, accounts + 1) for i in range(fanout)]
    for n in range(max(0, total - len(hooks))):  # other accounts' webhooks: 10 per account
        account = 1_000_000 + n // 10
        hooks.append(Webhook(id=10_000_000 + n, account_id=account, url=f"https://example.com/o/{n}",
                             subscriptions=list(EVENT_NAMES), created_at=stamp, updated_at=stamp))
    return hooks


def events(count: int, accounts: int = ACCOUNTS) -> list[OutgoingEvent]:
    """``count`` events of all twelve types, spread over accounts and conversations (fresh ids)."""
    bodies = [orjson.dumps(example(t, account_id=a, conversation_id=c))
              for t in EVENT_NAMES for a in range(1, accounts + 1) for c in range(1, 6)]
    return [prepare(bodies[i % len(bodies)]) for i in range(count)]


async def produce_all(producer: AIOKafkaProducer, topic: str,
                      records: Sequence[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]) -> None:
    for start in range(0, len(records), 10_000):
        futures = [await producer.send(topic, key=k, value=v, headers=h) for k, v, h in records[start:start + 10_000]]
        await asyncio.gather(*futures)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_scenario(bootstrap: str, *, validation: str, fanout: int, webhooks: int, count: int) -> Row:
    """``count`` events over as many accounts (up to ``ACCOUNTS``) as ``webhooks`` allows at ``fanout``."""
    accounts = max(1, min(ACCOUNTS, webhooks // fanout))
    settings = Settings(topic_prefix=f"bench-router-{uuid.uuid4().hex[:8]}", log_level="warning",
                        kafka={"bootstrap_servers": bootstrap},
                        router={"validation": validation},
                        metrics={"port": 0})
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    batch = events(count, accounts)
    producer = kafka.producer(settings, linger_ms=20)
    async with kafka.started(producer):
        await produce_all(producer, topics.subscriptions,
                          [(str(w.id).encode(), encode_webhook(w), []) for w in hooks_for(fanout, webhooks, accounts)])
        await produce_all(producer, topics.events, [(e.key, e.value, e.headers) for e in batch])

    stop = asyncio.Event()
    table = SubscriptionTable(settings)
    table_task = asyncio.create_task(table.run(stop))
    router = RouterWorker(settings, table, Metrics(CollectorRegistry()), max_records=count)
    router_task = asyncio.create_task(router.run(stop))
    await router.wait_assigned()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    await router_task
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    stop.set()
    await table_task
    await delete_topics(settings)
    deliveries = router.deliveries_produced
    assert deliveries == count * fanout, (deliveries, count, fanout)
    return Row("kafka", validation, fanout, len(table), count, deliveries, round(seconds, 3),
               round(deliveries / seconds), round(count / seconds), round(cpu / deliveries * 1e6, 1),
               round(cpu / count * 1e6, 1))


def core_scenario(*, validation: str, fanout: int, webhooks: int, count: int) -> Row:
    """``route()`` alone, over an in-memory table: cost per event against the table's size."""
    table = SubscriptionTable(Settings())
    for w in hooks_for(fanout, webhooks, accounts=1):
        table.apply(str(w.id).encode(), encode_webhook(w))
    records = [IncomingEvent("bench.events", 0, i, e.key, e.value, e.headers)
               for i, e in enumerate(events(count, accounts=1))]
    policy = RoutePolicy("full" if validation == "full" else "structural")
    routed_time = now_iso()
    timings = []
    for _ in range(REPEATS):  # best of: this machine is shared, a single short run is noisy
        gc.collect()
        started, cpu_started = time.perf_counter(), cpu_seconds()
        results = [route(r, table.matching, routed_time=routed_time, policy=policy) for r in records]
        timings.append((time.perf_counter() - started, cpu_seconds() - cpu_started))
        deliveries = sum(len(r.deliveries) for r in results if isinstance(r, Routed))
        assert deliveries == count * fanout, (deliveries, count, fanout)
    seconds, cpu = min(timings)
    return Row("core", validation, fanout, len(table), count, deliveries, round(seconds, 3),
               round(deliveries / seconds), round(count / seconds), round(cpu / deliveries * 1e6, 1),
               round(cpu / count * 1e6, 1))


def markdown(rows: Sequence[Row]) -> str:
    head = ("| scenario | validation | fan-out | webhooks | events | deliveries/s | events/s "
            "| CPU µs/delivery | CPU µs/event |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.scenario} | {r.validation} | {r.fanout} | {r.webhooks:,} | {r.events:,} | "
              f"{r.deliveries_per_s:,.0f} | {r.events_per_s:,.0f} | {r.cpu_us_per_delivery} | {r.cpu_us_per_event} |"
              for r in rows]
    return "\n".join(lines)


async def measure(args: argparse.Namespace) -> list[Row]:
    bootstrap = os.environ.get("AKECE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    n = args.events
    await run_scenario(bootstrap, validation="full", fanout=10, webhooks=200, count=min(n, 2000))  # warm-up
    core_scenario(validation="full", fanout=10, webhooks=10, count=min(n, 1000))
    print("(warm-up done)", flush=True)
    kafka_rows = [("structural", 10), ("full", 10)] + ([] if args.quick else [("structural", 100_000)])
    rows: list[Row] = []
    for validation, webhooks in kafka_rows:
        for fanout, count in ((1, n * 5), (10, n)):
            rows.append(await run_scenario(bootstrap, validation=validation, fanout=fanout, webhooks=webhooks,
                                           count=count))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    for webhooks in (10, 1_000, 10_000, 100_000):
        for fanout in (1, 10):
            for validation in ("structural", "full"):
                rows.append(core_scenario(validation=validation, fanout=fanout, webhooks=webhooks,
                                          count=min(n, 5000)))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    return rows


async def main(args: argparse.Namespace) -> int:
    logs.configure(level="warning")
    rows = await measure(args)
    print(markdown(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"router-{datetime.now(UTC):%Y-%m-%d}.json"
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
               "loop": args.loop, "broker": "co-located, single node"}
    out.write_text(json.dumps({"machine": machine, "at": now_iso(), "rows": [asdict(r) for r in rows]},
                              indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000, help="events at fan-out 10 (5x at fan-out 1)")
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-webhook Kafka scenario")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop (the CLI runs on uvloop when installed)")
    options = parser.parse_args()
    sys.exit(run_async(main(options)) if options.loop == "uvloop" else asyncio.run(main(options)))
