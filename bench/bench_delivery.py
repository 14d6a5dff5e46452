"""Delivery benchmark: successful deliveries per second of ONE delivery worker process.

    python -m bench.bench_delivery [--deliveries 60000] [--slow-deliveries 30000] [--quick]
    python -m bench.bench_delivery --metrics-overhead [--deliveries 30000] [--runs 3]

Runs against ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092), broker, receivers and
worker on the same machine. Receivers (``bench.receivers``): Debian's nginx answering 200 at once
(``instant``), and an aiohttp receiver process answering after 50 ms (``slow50``). Their capacity
and the bare client loop (the sender's own client) are measured in the same run (``bench.limits.http_probe``).

Per scenario: fresh topics, ``--webhooks`` webhooks, N delivery records (3 KB Chatwoot bodies, 50
conversations per webhook) produced first; then ``akece-webhooks deliver --until-idle`` runs as its
own process with the production defaults (512 concurrent requests, 10 per webhook, 10,000 records
in flight, info logs). Sampled every 0.25 s: its ``/metrics`` (deliveries, in-flight records), RSS
and CPU. Throughput is the steady rate between 10% and 90% of the deliveries done; attempt latency
percentiles come from the attempt log (``akece.webhooks.attempts``).

Writes ``bench/results/delivery-<date>.json`` and prints a markdown table.

``--metrics-overhead``: the instant scenario ``--runs`` times with metrics on and as often with a
no-op registry (every Counter, Gauge, Histogram and Info of ``services.shared.metrics`` replaced by
``NullMetric`` in the worker process before it builds its ``Metrics``; no service code changes),
alternating on/off, off/on, ... so drift and a shared broker's noise fall on both. Nothing scrapes
``/metrics`` in these runs (a metrics-off worker has nothing to report); both modes measure the same
way: the steady rate between 10% and 90% of the attempt log's records by their Kafka timestamps,
and the worker's CPU over that window. Writes ``bench/results/delivery-metrics-overhead-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.limits import cpu_seconds, http_probe, peak_rss_mb
from bench.receivers import Nginx, PyReceiver
from schemas.examples import example
from services.contract.deliveries import delivery_key, first_attempt_headers
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.devtools.ports import free_port
from services.shared import kafka
from services.shared.runtime import run_async
from services.shared.settings import Settings
from services.shared.webhooks import Webhook, encode_webhook, new_webhook_id

RESULTS = Path(__file__).resolve().parent / "results"
SERVE_WITHOUT_METRICS = "--serve-deliver-without-metrics"  # internal: the worker process of a metrics-off run
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.25
CONVERSATIONS = 50


def say(message: str) -> None:
    print(f"[bench_delivery] {message}", file=sys.stderr, flush=True)


def webhooks(count: int, base_url: str) -> list[Webhook]:
    stamp = now_iso()
    return [Webhook.new(id=new_webhook_id(), account_id=1 + n % 20, url=f"{base_url}/{n}",
                        subscriptions=["message_created"], created_at=stamp) for n in range(count)]


async def prepare(settings: Settings, hooks: list[Webhook], deliveries: int) -> int:
    """Topics, webhooks and ``deliveries`` records; returns the body size."""
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    body = orjson.dumps(example("message_created", account_id=1, conversation_id=1))
    routed = now_iso()
    async with kafka.started(kafka.producer(settings)) as producer:
        acks = [await producer.send(topics.subscriptions, value=encode_webhook(w), key=str(w.id).encode())
                for w in hooks]
        await asyncio.gather(*acks)
        for start in range(0, deliveries, 5000):
            acks = []
            for n in range(start, min(deliveries, start + 5000)):
                hook = hooks[n % len(hooks)]
                headers = first_attempt_headers(event_id=f"bench-{n}", event_type="message_created",
                                                account_id=str(hook.account_id), webhook_id=hook.id,
                                                event_time=routed, routed_time=routed)
                key = delivery_key(hook.id, str(n // len(hooks) % CONVERSATIONS))
                acks.append(await producer.send(topics.deliveries, value=body, key=key, headers=headers))
            await asyncio.gather(*acks)
    return len(body)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    values = {"delivered": 0.0, "in_flight": 0.0, "requests_in_flight": 0.0}
    try:
        async with session.get(url) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    for line in text.splitlines():
        if line.startswith("akece_webhooks_deliveries_total{") and 'outcome="success"' in line:
            values["delivered"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("akece_webhooks_in_flight "):
            values["in_flight"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("akece_webhooks_requests_in_flight "):
            values["requests_in_flight"] = float(line.rsplit(" ", 1)[1])
    return values


class NullMetric:
    """A metric that records nothing: ``labels()`` returns itself, every other method does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def labels(self, *args: Any, **kwargs: Any) -> NullMetric:
        return self

    def __getattr__(self, name: str) -> Any:
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def serve_deliver_without_metrics() -> int:
    """``akece-webhooks deliver --until-idle`` with every metric a ``NullMetric`` (a metrics-off run)."""
    from services import cli
    from services.shared import metrics

    for name in ("Counter", "Gauge", "Histogram", "Info"):
        setattr(metrics, name, NullMetric)
    return cli.main(["deliver", "--until-idle", "--processes", "1"])


async def run_worker(settings: Settings, deliveries: int, work: Path, *, metrics: bool = True,
                     scrape_metrics: bool = True) -> dict[str, Any]:
    """``akece-webhooks deliver --until-idle`` as a process, sampled until it exits.

    ``metrics=False``: the worker's metrics are no-ops. ``scrape_metrics=False``: only CPU and RSS are sampled."""
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
    env.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
                "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": str(metrics_port),
                "AKECE_LOG_FORMAT": "json", "AKECE_LOG_LEVEL": "info"})
    log_path = work / f"worker-{settings.topic_prefix}.log"
    command = ["-m", "services", "deliver", "--until-idle", "--processes", "1"] if metrics else [
        "-m", "bench.bench_delivery", SERVE_WITHOUT_METRICS]
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, *command,
                                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    exited = asyncio.create_task(proc.wait())
    samples: list[tuple[float, dict[str, float], float | None, float]] = []
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while not exited.done():
            values = await scrape(session, url) if scrape_metrics else {"delivered": 0.0}
            if values:
                samples.append((time.monotonic(), values, rss_mb(proc.pid), cpu_seconds([proc.pid])))
            await asyncio.wait([exited], timeout=SAMPLE_S)
    peak = max((s[2] or 0.0) for s in samples) if samples else None
    if proc.returncode != 0:
        raise RuntimeError(f"worker exited {proc.returncode}: {log_path.read_text()[-3000:]}")
    return {"samples": samples, "peak_rss_mb": peak, "log": str(log_path),
            "wall_minus_monotonic": time.time() - time.monotonic()}


def steady(samples: list[tuple[float, dict[str, float], float | None, float]], total: int) -> dict[str, Any]:
    """Rate and CPU per delivery between 10% and 90% of ``total`` delivered."""
    def first_at(fraction: float) -> tuple[float, dict[str, float], float | None, float] | None:
        return next((s for s in samples if s[1]["delivered"] >= fraction * total), None)

    low, high = first_at(0.1), first_at(0.9)
    if low is None or high is None or high[0] <= low[0]:
        return {"per_s": None}
    done = high[1]["delivered"] - low[1]["delivered"]
    seconds = high[0] - low[0]
    cpu = high[3] - low[3]
    return {"per_s": round(done / seconds), "seconds": round(seconds, 2),
            "cpu_us_per_delivery": round(cpu / done * 1e6, 1), "cpu_cores": round(cpu / seconds, 2)}


async def attempt_latencies(settings: Settings, count: int) -> dict[str, Any]:
    topic = Topics.from_settings(settings).attempts
    consumer = kafka.consumer(settings, group_id=None, max_poll_records=10000)
    durations: list[float] = []
    outcomes: dict[str, int] = {}
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        deadline = time.monotonic() + 120
        while len(durations) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=10000)).values():
                for record in batch:
                    value = orjson.loads(record.value)
                    durations.append(value["duration_ms"])
                    outcomes[value["outcome"]] = outcomes.get(value["outcome"], 0) + 1
    durations.sort()

    def pct(q: float) -> float | None:
        return round(durations[min(len(durations) - 1, int(q * len(durations)))], 1) if durations else None

    return {"attempts": len(durations), "outcomes": outcomes, "p50_ms": pct(0.5), "p90_ms": pct(0.9),
            "p99_ms": pct(0.99), "max_ms": durations[-1] if durations else None}


async def scenario(name: str, base_url: str, deliveries: int, hooks: int, bootstrap: str,
                   work: Path) -> dict[str, Any]:
    settings = Settings(topic_prefix=f"bd{os.getpid()}{name}{int(time.time()) % 100000}",
                        kafka={"bootstrap_servers": bootstrap})
    say(f"{name}: producing {deliveries} deliveries for {hooks} webhooks")
    body_bytes = await prepare(settings, webhooks(hooks, base_url), deliveries)
    say(f"{name}: running one worker process")
    started = time.monotonic()
    run = await run_worker(settings, deliveries, work)
    wall = time.monotonic() - started
    samples = run["samples"]
    rate = steady(samples, deliveries)
    latencies = await attempt_latencies(settings, deliveries)
    delivered = samples[-1][1]["delivered"] if samples else 0
    result = {"scenario": name, "deliveries": deliveries, "webhooks": hooks, "body_bytes": body_bytes,
              "delivered": int(delivered), "wall_s": round(wall, 2), "steady": rate, "latency": latencies,
              "peak_rss_mb": round(run["peak_rss_mb"] or 0, 1),
              "max_records_in_flight": int(max((s[1]["in_flight"] for s in samples), default=0)),
              "max_requests_in_flight": int(max((s[1]["requests_in_flight"] for s in samples), default=0)),
              "rss_mb_at_max_in_flight": _rss_at_max_in_flight(samples)}
    say(f"{name}: {json.dumps(result)}")
    return result


def _rss_at_max_in_flight(samples: list[tuple[float, dict[str, float], float | None, float]]) -> float | None:
    if not samples:
        return None
    best = max(samples, key=lambda s: (s[1]["in_flight"], s[2] or 0))
    return round(best[2], 1) if best[2] is not None else None


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Delivery worker, one process ({result['python']}, uvloop {result['uvloop']}, "
             f"{result['cpus']} CPUs, broker and receivers on the same machine)", "",
             "| scenario | deliveries | deliveries/s (steady) | CPU µs/delivery | attempt p50 | attempt p99 "
             "| peak RSS | max records in flight | RSS at max in flight |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in result["scenarios"]:
        lat, st = s["latency"], s["steady"]
        lines.append(f"| {s['scenario']} | {s['delivered']:,} | {st.get('per_s') or 0:,} | "
                     f"{st.get('cpu_us_per_delivery')} | {lat['p50_ms']} ms | {lat['p99_ms']} ms | "
                     f"{s['peak_rss_mb']} MB | {s['max_records_in_flight']:,} | {s['rss_mb_at_max_in_flight']} MB |")
    limits = result["limits"]
    lines += ["", "| bound (same run) | req/s |", "|---|---|"]
    for name, probe in limits.items():
        lines.append(f"| {name}: the sender's client POST loop, {probe['concurrency']} in flight, no Kafka | "
                     f"{probe['per_s']:,} |")
        if probe.get("receiver_capacity_per_core"):
            lines.append(f"| {name}: receiver capacity per core (its CPU per request) | "
                         f"{probe['receiver_capacity_per_core']:,} |")
    return "\n".join(lines) + "\n"


# --- metrics on vs off -------------------------------------------------------------------------------

async def attempt_times(settings: Settings, count: int) -> list[float]:
    """Kafka timestamps (ms) of the first ``count`` successful attempts in the attempt log, sorted."""
    topic = Topics.from_settings(settings).attempts
    consumer = kafka.consumer(settings, group_id=None, max_poll_records=10000)
    times: list[float] = []
    seen = 0
    async with kafka.started(consumer):
        ends = await kafka.end_offsets(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        deadline = time.monotonic() + 120
        while seen < sum(ends.values()) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=10000)).values():
                seen += len(batch)
                times += [r.timestamp for r in batch if orjson.loads(r.value)["outcome"] == "success"]
    if len(times) < count:
        raise RuntimeError(f"{len(times)} successful attempts logged, {count} expected")
    return sorted(times)


def cpu_at(samples: list[tuple[float, dict[str, float], float | None, float]], at: float) -> float:
    """The worker's CPU seconds at monotonic time ``at`` (linear between the two nearest samples)."""
    before = [s for s in samples if s[0] <= at] or samples[:1]
    after = [s for s in samples if s[0] >= at] or samples[-1:]
    (t0, c0), (t1, c1) = (before[-1][0], before[-1][3]), (after[0][0], after[0][3])
    return c0 if t1 <= t0 else c0 + (c1 - c0) * (at - t0) / (t1 - t0)


async def overhead_run(metrics: bool, base_url: str, deliveries: int, hooks: int, bootstrap: str,
                       work: Path) -> dict[str, Any]:
    mode = "on" if metrics else "off"
    settings = Settings(topic_prefix=f"bo{os.getpid()}{mode}{int(time.time() * 10) % 1000000}",
                        kafka={"bootstrap_servers": bootstrap})
    await prepare(settings, webhooks(hooks, base_url), deliveries)
    run = await run_worker(settings, deliveries, work, metrics=metrics, scrape_metrics=False)
    times = await attempt_times(settings, deliveries)
    low, high = int(0.1 * deliveries), int(0.9 * deliveries) - 1
    seconds = (times[high] - times[low]) / 1000
    offset = run["wall_minus_monotonic"]
    cpu = cpu_at(run["samples"], times[high] / 1000 - offset) - cpu_at(run["samples"], times[low] / 1000 - offset)
    result = {"metrics": mode, "deliveries": deliveries, "per_s": round((high - low) / seconds),
              "seconds": round(seconds, 2), "cpu_us_per_delivery": round(cpu / (high - low) * 1e6, 1),
              "cpu_cores": round(cpu / seconds, 2), "peak_rss_mb": round(run["peak_rss_mb"] or 0, 1)}
    say(f"metrics {mode}: {json.dumps(result)}")
    return result


def overhead_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    by_mode = {mode: [r for r in runs if r["metrics"] == mode] for mode in ("on", "off")}
    rate = {mode: median([r["per_s"] for r in rs]) for mode, rs in by_mode.items()}
    cpu = {mode: median([r["cpu_us_per_delivery"] for r in rs]) for mode, rs in by_mode.items()}
    # Each pair ran back to back, so its ratio is the least disturbed by drift between pairs.
    pairs = [(runs[n], runs[n + 1]) for n in range(0, len(runs) - 1, 2)]
    per_pair = [round((1 - (x if x["metrics"] == "on" else y)["per_s"] / (y if x["metrics"] == "on" else x)["per_s"])
                      * 100, 1) for x, y in pairs]
    return {"median_per_s": rate, "median_cpu_us_per_delivery": cpu, "pair_throughput_overhead_pct": per_pair,
            "median_pair_throughput_overhead_pct": median(per_pair),
            "throughput_overhead_pct": round((rate["off"] - rate["on"]) / rate["off"] * 100, 1),
            "cpu_overhead_pct": round((cpu["on"] - cpu["off"]) / cpu["off"] * 100, 1),
            "target_pct": 5.0}


def overhead_markdown(result: dict[str, Any]) -> str:
    summary = result["summary"]
    lines = [f"Metrics overhead, delivery worker, one process, instant receiver (nginx), {result['cpus']} CPUs, "
             f"{result['deliveries']:,} deliveries per run, runs in order:", "",
             "| run | metrics | deliveries/s (steady) | CPU µs/delivery | CPU cores |", "|---|---|---|---|---|"]
    lines += [f"| {n + 1} | {r['metrics']} | {r['per_s']:,} | {r['cpu_us_per_delivery']} | {r['cpu_cores']} |"
              for n, r in enumerate(result["runs"])]
    lines += ["", f"Median deliveries/s: on {summary['median_per_s']['on']:,}, off {summary['median_per_s']['off']:,}"
              f" (throughput overhead {summary['throughput_overhead_pct']}%); median CPU µs/delivery: on "
              f"{summary['median_cpu_us_per_delivery']['on']}, off {summary['median_cpu_us_per_delivery']['off']}"
              f" (CPU overhead {summary['cpu_overhead_pct']}%). Per back-to-back pair: "
              f"{summary['pair_throughput_overhead_pct']}% (median {summary['median_pair_throughput_overhead_pct']}%)."
              f" Target: under {summary['target_pct']}%."]
    return "\n".join(lines) + "\n"


async def overhead_main(args: argparse.Namespace) -> int:
    bootstrap = os.environ.get("AKECE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    RESULTS.mkdir(parents=True, exist_ok=True)
    deliveries = args.deliveries or 30_000
    # on, off, off, on, on, off, ...: each mode equally often first in its pair.
    order = [metrics for n in range(args.runs) for metrics in ((True, False) if n % 2 == 0 else (False, True))]
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        work = Path(tmp)
        with Nginx(work / "nginx", free_port()) as nginx:
            runs = [await overhead_run(metrics, f"{nginx.url}/hooks", deliveries, args.webhooks, bootstrap, work)
                    for metrics in order]
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
              "cpus": os.cpu_count(), "machine": platform.machine(), "deliveries": deliveries,
              "method": "steady rate between 10% and 90% of the attempt log by Kafka timestamp; no /metrics "
                        "scrapes; off = every metric a NullMetric in the worker process",
              "runs": runs, "summary": overhead_summary(runs)}
    path = RESULTS / f"delivery-metrics-overhead-{datetime.now(UTC).date().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(overhead_markdown(result))
    say(f"wrote {path}")
    return 0


async def main_async(args: argparse.Namespace) -> int:
    if args.metrics_overhead:
        return await overhead_main(args)
    args.deliveries = args.deliveries or 60_000
    bootstrap = os.environ.get("AKECE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        work = Path(tmp)
        nginx = Nginx(work / "nginx", free_port())
        slow = PyReceiver(work / "py", free_port(), procs=1)
        with nginx, slow:
            say("measuring the receivers and the bare aiohttp client loop")
            limits = {
                "nginx": http_probe(f"{nginx.url}/probe", concurrency=64, seconds=args.probe_s,
                                    receiver_pids=nginx.pids),
                "slow50": http_probe(f"{slow.url}/slow/50/probe", concurrency=512, seconds=args.probe_s,
                                     receiver_pids=slow.pids),
            }
            scenarios = [await scenario("instant", f"{nginx.url}/hooks", args.deliveries, args.webhooks,
                                        bootstrap, work)]
            if args.slow_deliveries:
                scenarios.append(await scenario("slow50", f"{slow.url}/slow/50", args.slow_deliveries,
                                                args.webhooks, bootstrap, work))
            for proc in [*([nginx.proc] if nginx.proc else []), *slow.procs]:
                peak = peak_rss_mb(proc.pid)
                say(f"receiver pid {proc.pid} peak RSS {peak} MB")
    try:
        uv = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uv = "not installed"
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
              "uvloop": uv, "cpus": os.cpu_count(), "machine": platform.machine(), "limits": limits,
              "scenarios": scenarios,
              "targets": {"deliveries_per_s_instant": 3000, "rss_mb_at_10000_in_flight": 150}}
    path = RESULTS / f"delivery-{datetime.now(UTC).date().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    say(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == [SERVE_WITHOUT_METRICS]:
        return serve_deliver_without_metrics()
    parser = argparse.ArgumentParser(prog="python -m bench.bench_delivery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=None,
                        help="instant scenario (nginx); default 60000, 30000 per run with --metrics-overhead")
    parser.add_argument("--slow-deliveries", type=int, default=30_000, help="50 ms scenario; 0 skips it")
    parser.add_argument("--webhooks", type=int, default=100)
    parser.add_argument("--probe-s", type=float, default=5.0, help="seconds of each bound measurement")
    parser.add_argument("--quick", action="store_true", help="small run (smoke test)")
    parser.add_argument("--metrics-overhead", action="store_true",
                        help="deliveries/s with metrics on vs a no-op registry, alternating runs")
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode with --metrics-overhead")
    args = parser.parse_args(argv)
    if args.quick:
        args.deliveries, args.slow_deliveries, args.probe_s = 5000, 3000, 2.0
    return run_async(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
