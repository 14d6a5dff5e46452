"""Subscriptions benchmark: table rebuild, ``matching()`` lookups, and the management API.

    python -m bench.bench_subscriptions [--webhooks 100000] [--quick]

Runs against ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092) under its own topic prefix
(deleted afterwards), with the broker co-located on this machine.

- **rebuild**: N webhook records (5 per account, 1-12 events each) are produced to a fresh
  subscriptions topic (not timed); then a new ``SubscriptionTable`` is timed from ``run()`` to ready.
- **matching**: tables of 10 to 100,000 webhooks built in memory; 200,000 random (account, event)
  lookups against each. The issue's target: the cost is flat in the number of webhooks.
- **api**: ``akece-webhooks api`` in its own process (so client and server do not share a core's
  event loop); a keep-alive aiohttp client sends POST (create: a Kafka write acknowledged and read
  back before answering), then GET one webhook and GET an account's list, each at fixed concurrency.

Writes ``bench/results/subscriptions-<date>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from schemas import EVENT_NAMES
from services.contract.topics import Topics, topic_specs
from services.devtools.ports import free_port
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable

RESULTS = Path(__file__).resolve().parent / "results"
PER_ACCOUNT = 5
LOOKUPS = 200_000
TOKEN = "bench-admin-token"
Row = dict[str, Any]


def record(webhook_id: int, rng: random.Random) -> bytes:
    """One webhook record as the API writes it (JSON of ``Webhook``), without pydantic's cost."""
    now = "2026-11-25T00:00:00.000Z"
    return orjson.dumps({
        "id": webhook_id, "account_id": webhook_id // PER_ACCOUNT, "name": f"hook {webhook_id}",
        "url": f"https://hooks.example.com/{webhook_id}", "subscriptions": rng.sample(EVENT_NAMES, rng.randint(1, 12)),
        "enabled": rng.random() > 0.05, "disabled_reason": None, "created_at": now, "updated_at": now,
        "secrets": [{"secret": "whsec_" + "A" * 43 + "=", "created_at": now, "expires_at": None}],
        "connect_timeout_s": None, "total_timeout_s": None,
    })


def bench_settings() -> Settings:
    settings = Settings()
    return settings.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}"})


async def create_subscriptions_topic(settings: Settings) -> str:
    topic = Topics.from_settings(settings).subscriptions
    await kafka.create_topics(settings, [s for s in topic_specs(settings) if s.name == topic])
    return topic


async def delete_topic(settings: Settings, topic: str) -> None:
    async with kafka.started(kafka.admin(settings)) as client:
        await client.delete_topics([topic])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- rebuild -----------------------------------------------------------------------------------
async def bench_rebuild(count: int) -> Row:
    settings = bench_settings()
    topic = await create_subscriptions_topic(settings)
    rng = random.Random(1)
    try:
        started = time.perf_counter()
        async with kafka.started(kafka.producer(settings, linger_ms=20)) as producer:
            for chunk in range(0, count, 10_000):
                futures = [await producer.send(topic, record(i, rng), key=str(i).encode())
                           for i in range(chunk + 1, min(chunk + 10_000, count) + 1)]
                await asyncio.gather(*futures)
        produced_s = time.perf_counter() - started
        rss_before = rss_mb()
        table, stop = SubscriptionTable(settings), asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(table.run(stop))
        await table.wait_ready()
        rebuild_s = time.perf_counter() - started
        stop.set()
        await task
        assert len(table) == count, len(table)
        return {"webhooks": count, "produce_s": round(produced_s, 2), "rebuild_s": round(rebuild_s, 2),
                "records_per_s": round(count / rebuild_s), "max_rss_mb_before": round(rss_before),
                "max_rss_mb_after": round(rss_mb())}
    finally:
        await delete_topic(settings, topic)


# --- matching ----------------------------------------------------------------------------------
class _Record:
    """What the table's consumer hands it: key, value, partition, offset."""

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self.key, self.value, self.partition, self.offset = key, value, 0, offset


async def filled_table(size: int, rng: random.Random) -> SubscriptionTable:
    """A table fed the way ``run()`` feeds it: batches of 5,000 records (the consumer's max poll)."""
    table = SubscriptionTable(bench_settings())
    records = [_Record(str(i).encode(), record(i, rng), i) for i in range(1, size + 1)]
    for start in range(0, size, 5000):
        await table._apply_batch(records[start:start + 5000])
    return table


def lookups_ns(table: SubscriptionTable, queries: list[tuple[str, str]]) -> tuple[float, int]:
    """Best of three passes: ns per ``matching()`` call, and the webhooks found in a pass."""
    matching, best, found = table.matching, float("inf"), 0
    for _ in range(3):
        found = 0
        started = time.perf_counter()
        for account, event in queries:
            found += len(matching(account, event))
        best = min(best, (time.perf_counter() - started) / len(queries) * 1e9)
    return best, found


async def bench_matching(sizes: list[int]) -> list[Row]:
    """Uniform: accounts drawn evenly from all (cache-cold at 100k); hot: 100 busy accounts."""
    rows = []
    for size in sizes:
        rng = random.Random(size)
        table = await filled_table(size, rng)
        accounts = max(1, size // PER_ACCOUNT)
        uniform = [(str(rng.randrange(accounts)), rng.choice(EVENT_NAMES)) for _ in range(LOOKUPS)]
        hot = [(str(rng.randrange(min(accounts, 100))), rng.choice(EVENT_NAMES)) for _ in range(LOOKUPS)]
        uniform_ns, found = lookups_ns(table, uniform)
        hot_ns, _ = lookups_ns(table, hot)
        rows.append({"webhooks": size, "accounts": accounts, "lookups": LOOKUPS,
                     "uniform_ns_per_lookup": round(uniform_ns), "uniform_lookups_per_s": round(1e9 / uniform_ns),
                     "hot_ns_per_lookup": round(hot_ns), "hot_lookups_per_s": round(1e9 / hot_ns),
                     "mean_matches": round(found / LOOKUPS, 2)})
    return rows


# --- api ---------------------------------------------------------------------------------------
async def start_api(settings: Settings, port: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_API_HOST": "127.0.0.1",
           "AKECE_API_PORT": str(port), "AKECE_METRICS_PORT": "0", "AKECE_METRICS_HOST": "127.0.0.1",
           "AKECE_API_ADMIN_TOKEN": TOKEN, "AKECE_LOG_LEVEL": "warning",
           "AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", "api", env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.returncode is None:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    _, stderr = await process.communicate()
    raise RuntimeError(f"the API did not become ready: {stderr.decode()[-2000:]}")


async def load(count: int, concurrency: int, request: Callable[[int], Awaitable[int]]) -> Row:
    """``count`` requests, ``concurrency`` at a time; returns rate and latency percentiles."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = iter(range(count))

    async def client() -> None:
        for index in next_index:
            started = time.perf_counter()
            status = await request(index)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": count, "concurrency": concurrency, "requests_per_s": round(count / elapsed),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


async def bench_api(posts: int, gets: int) -> list[Row]:
    settings = bench_settings()
    topic = await create_subscriptions_topic(settings)
    port = free_port()
    process = await start_api(settings, port)
    base = f"http://127.0.0.1:{port}/api/v1/accounts"
    accounts = 200
    ids: list[tuple[int, int]] = []
    try:
        connector = aiohttp.TCPConnector(limit=128)
        async with aiohttp.ClientSession(connector=connector, headers={"api_access_token": TOKEN}) as http:
            async def create(i: int) -> int:
                account = i % accounts
                body = {"url": f"https://93.184.215.14/hooks/{i}", "name": f"bench {i}"}
                async with http.post(f"{base}/{account}/webhooks", json=body) as response:
                    answer = await response.json()
                    ids.append((account, answer["payload"]["webhook"]["id"]))
                    return response.status

            async def get_one(i: int) -> int:
                account, webhook_id = ids[i % len(ids)]
                async with http.get(f"{base}/{account}/webhooks/{webhook_id}") as response:
                    await response.read()
                    return response.status

            async def get_list(i: int) -> int:
                async with http.get(f"{base}/{i % accounts}/webhooks") as response:
                    await response.read()
                    return response.status

            rows = [{"request": "POST create", **await load(posts, 32, create)},
                    {"request": "GET one", **await load(gets, 64, get_one)},
                    {"request": f"GET list ({posts // accounts}/account)", **await load(gets, 64, get_list)}]
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), 30)
        await delete_topic(settings, topic)
    for row in rows:
        row["server_exit_code"] = exit_code
    return rows


# --- report ------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    r = result["rebuild"]
    lines = ["| measurement | result |", "|---|---|",
             f"| table rebuild, {r['webhooks']:,} webhooks | {r['rebuild_s']} s ({r['records_per_s']:,} records/s; "
             f"max RSS {r['max_rss_mb_after']} MB) |"]
    for m in result["matching"]:
        lines.append(f"| matching(), {m['webhooks']:,} webhooks | {m['uniform_lookups_per_s']:,} lookups/s uniform "
                     f"({m['uniform_ns_per_lookup']} ns), {m['hot_lookups_per_s']:,}/s over 100 hot accounts "
                     f"({m['hot_ns_per_lookup']} ns); {m['mean_matches']} matches each |")
    for a in result["api"]:
        lines.append(f"| API {a['request']}, concurrency {a['concurrency']} | {a['requests_per_s']:,} req/s "
                     f"(p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms; statuses {a['statuses']}) |")
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [10, 100, 1_000, 10_000, 100_000]
    return {
        "rebuild": await bench_rebuild(args.webhooks),
        "matching": await bench_matching(sizes if not args.quick else sizes[:4]),
        "api": await bench_api(args.posts, args.gets),
    }


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--webhooks", type=int, default=100_000, help="webhooks in the rebuild")
    parser.add_argument("--posts", type=int, default=2_000, help="POST requests")
    parser.add_argument("--gets", type=int, default=10_000, help="GET requests per kind")
    parser.add_argument("--quick", action="store_true", help="10,000 webhooks, fewer requests")
    args = parser.parse_args()
    if args.quick:
        args.webhooks, args.posts, args.gets = 10_000, 400, 2_000
    result = asyncio.run(main(args))
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform(), "broker": "co-located, shared dev broker"}
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"subscriptions-{datetime.now(UTC).date().isoformat()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(markdown(result) + f"\nwrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
