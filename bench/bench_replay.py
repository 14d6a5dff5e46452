"""Replay benchmark: re-enqueue throughput, and `dlq list` over a large DLQ reading only its window.

    python -m bench.bench_replay [--dead-letters 100000] [--dlq-size 1000000] [--quick]

Runs against ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092) on fresh topics (deleted
afterwards). Dead letters are what the delivery worker writes (``bench.fixtures``:
Chatwoot bodies, delivery headers plus the DLQ story), stamped in time order.

1. **Replay**: ``--dead-letters`` dead letters over 100 webhooks in the last two hours; one
   unthrottled replay of all of them (planning read + re-enqueue with acks and checkpoints),
   in-process, then the same command through the CLI (``dlq replay --yes --json``, process start
   included) on a second set. Target: at least 10,000 records re-enqueued per second.
2. **List**: a DLQ of ``--dlq-size`` records spread over seven days; ``dlq list`` for a one-hour
   window in the middle (``--since``/``--until`` as ISO times), through the CLI and in-process,
   reporting the records it read against the DLQ's size; then, for contrast, a filter over the
   whole week (every record read).

Writes ``bench/results/replay-<date>.json`` and ``.md`` and prints the markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.fixtures import DeadSpec, cli_env, delete_topics, produce_dead_letters, put_webhooks, running_store, webhook
from services.contract.dead_letters import DlqFilter
from services.contract.times import iso
from services.contract.topics import Topics
from services.ops.dlq import list_dead_letters
from services.replay.dlq_source import replay
from services.replay.plans import Options
from services.replay.window import Window
from services.shared import kafka
from services.shared import logging as logs
from services.shared.runtime import run_async
from services.shared.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
WEBHOOKS = 100
CHUNK = 50_000
EVENTS = ("message_created", "conversation_updated", "contact_updated", "conversation_status_changed")


def settings_for(bootstrap: str, partitions: int) -> Settings:
    return Settings(topic_prefix=f"bench{uuid.uuid4().hex[:8]}", log_format="json",
                    kafka={"bootstrap_servers": bootstrap, "partitions": partitions},
                    retry={"schedule": [5, 300]})


def specs(count: int, start: float, end: float, *, seed: str) -> Iterator[DeadSpec]:
    """``count`` dead letters in time order between ``start`` and ``end`` over ``WEBHOOKS`` webhooks."""
    step = (end - start) / count
    for i in range(count):
        hook = i % WEBHOOKS
        yield DeadSpec(1000 + hook, 1 + hook // 10, start + i * step, EVENTS[i % len(EVENTS)],
                       conversation=i % 500, event_id=f"{seed}-{i}")


async def fill(settings: Settings, topic: str, items: Iterator[DeadSpec], count: int) -> float:
    """Produce the dead letters in chunks; returns records/s."""
    started = time.perf_counter()
    async with kafka.started(kafka.producer(settings, linger_ms=20, max_batch_size=1024 * 1024)) as producer:
        batch: list[DeadSpec] = []
        for spec in items:
            batch.append(spec)
            if len(batch) == CHUNK:
                await produce_dead_letters(producer, topic, batch, timeout=300)
                batch = []
        if batch:
            await produce_dead_letters(producer, topic, batch, timeout=300)
    return count / (time.perf_counter() - started)


def cli(settings: Settings, *args: str) -> tuple[float, dict[str, Any] | list[Any]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "services", *args], env=cli_env(settings), capture_output=True,
                          text=True, check=True, timeout=1800)
    return time.perf_counter() - started, orjson.loads(done.stdout)


async def bench_replay(settings: Settings, count: int) -> dict[str, Any]:
    topics = Topics.from_settings(settings)
    now = time.time()
    async with running_store(settings) as store:
        await put_webhooks(store, [webhook(1 + i // 10, webhook_id=1000 + i) for i in range(WEBHOOKS)])
        fill_rate = await fill(settings, topics.dlq, specs(count, now - 7200, now - 3700, seed="a"), count)
        started = time.perf_counter()
        summary = await replay(settings, DlqFilter(), Window.parse(iso(now - 7300), iso(now - 3650)),
                               lookup=store.table.get, producer=store.producer, store=store,
                               options=Options(user="bench"))
        total = time.perf_counter() - started
    assert summary.status == "done" and summary.enqueued == count, summary.status
    await fill(settings, topics.dlq, specs(count, now - 3600, now - 60, seed="b"), count)
    cli_s, result = cli(settings, "dlq", "replay", "--since", iso(now - 3650) or "", "--yes", "--json")
    assert isinstance(result, dict) and result["enqueued"] == count
    return {
        "dead_letters": count, "fill_rate": round(fill_rate),
        "plan_s": round(total - summary.seconds, 3), "send_s": round(summary.seconds, 3),
        "total_s": round(total, 3), "send_rate": round(summary.rate), "overall_rate": round(count / total),
        "records_read_planning": summary.plan.stats.records,
        "cli_wall_s": round(cli_s, 3), "cli_send_rate": round(result["rate"]),
        "cli_overall_rate": round(count / cli_s),
    }


async def bench_list(settings: Settings, size: int, full_scan: bool) -> dict[str, Any]:
    topics = Topics.from_settings(settings)
    now = time.time()
    start, end = now - 7 * 86400, now - 60
    fill_rate = await fill(settings, topics.dlq, specs(size, start, end, seed="l"), size)
    middle = (start + end) / 2
    since, until = iso(middle), iso(middle + 3600)
    step = (end - start) / size
    expected = sum(1 for i in range(size) if middle <= start + i * step < middle + 3600)
    window = Window.parse(since, until)
    started = time.perf_counter()
    listing = await list_dead_letters(settings, DlqFilter(), window, limit=100)
    inproc = time.perf_counter() - started
    cli_s, items = cli(settings, "dlq", "list", "--since", since or "", "--until", until or "", "--json",
                       "--limit", "100")
    result: dict[str, Any] = {
        "dlq_size": size, "fill_rate": round(fill_rate), "window": {"since": since, "until": until},
        "window_records": expected, "records_read": listing.stats.records, "matched": listing.matched,
        "list_s": round(inproc, 3), "cli_wall_s": round(cli_s, 3), "cli_items": len(items),
    }
    assert listing.stats.records == expected, (listing.stats.records, expected)
    if full_scan:
        started = time.perf_counter()
        everything = await list_dead_letters(settings, DlqFilter.of(webhook=1000), Window.parse("8d", None), limit=100)
        result.update(full_scan_s=round(time.perf_counter() - started, 3), full_scan_read=everything.stats.records,
                      full_scan_rate=round(everything.stats.records / (time.perf_counter() - started)))
    return result


def table(result: dict[str, Any]) -> str:
    r, li = result["replay"], result["list"]
    rows = [
        ("replay: dead letters", f"{r['dead_letters']:,}"),
        ("replay: plan (read + decide)", f"{r['plan_s']} s ({r['records_read_planning']:,} records read)"),
        ("replay: re-enqueue (acks + checkpoints)", f"{r['send_s']} s = **{r['send_rate']:,}/s**"),
        ("replay: overall (plan + re-enqueue)", f"{r['total_s']} s = **{r['overall_rate']:,}/s** (target ≥ 10,000/s)"),
        ("replay via CLI (process start included)", f"{r['cli_wall_s']} s wall = {r['cli_overall_rate']:,}/s; "
                                                    f"send phase {r['cli_send_rate']:,}/s"),
        ("list: DLQ size", f"{li['dlq_size']:,} records over 7 days"),
        ("list: one-hour window", f"{li['window_records']:,} records in the window"),
        ("list: records read", f"**{li['records_read']:,}** (= the window only)"),
        ("list: time in-process / CLI wall", f"{li['list_s']} s / {li['cli_wall_s']} s"),
    ]
    if "full_scan_s" in li:
        rows.append(("list: whole week for contrast", f"{li['full_scan_read']:,} read in {li['full_scan_s']} s "
                                                      f"({li['full_scan_rate']:,}/s)"))
    lines = ["| measure | result |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> int:
    bootstrap = os.environ.get("AKECE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "bootstrap": bootstrap,
        "partitions": args.partitions}}
    for name in ("replay", "list"):
        settings = settings_for(bootstrap, args.partitions)
        await kafka.ensure_topics(settings)
        try:
            result[name] = await (bench_replay(settings, args.dead_letters) if name == "replay"
                                  else bench_list(settings, args.dlq_size, not args.quick))
        finally:
            if not args.keep:
                await delete_topics(settings)
        print(f"{name}: {result[name]}", file=sys.stderr)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"replay-{stamp}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    (RESULTS / f"replay-{stamp}.md").write_text(f"# Replay benchmark {result['date']}\n\n{table(result)}")
    print(table(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dead-letters", type=int, default=100_000)
    parser.add_argument("--dlq-size", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="10,000 dead letters, a DLQ of 100,000, no full scan")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's topics")
    args = parser.parse_args(argv)
    logs.configure(level="warning")
    if args.quick:
        args.dead_letters, args.dlq_size = 10_000, 100_000
    return run_async(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
