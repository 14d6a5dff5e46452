"""This machine's bounds, measured with the pipeline's own libraries, in the benchmark's run.

(a) ``kafka``: aiokafka produce-then-consume of the benchmark's event records (same producer and
    consumer options as the pipeline: idempotent, acks=all, lz4, linger), no processing.
    ``a = records / (produce seconds + consume seconds)``.
(b) ``http``: a POST loop with the delivery sender's own client (``services.delivery.http``, keep-alive,
    ``--concurrency`` requests in flight, a 3 KB Chatwoot-shaped body with the pipeline's headers)
    against the benchmark's receiver, no Kafka; ``--client aiohttp``: the same loop with aiohttp's
    client (the pipeline's client until 2026-12-06, and the naive peer's), for reference.

Each runs in its own process (``python -m bench.limits kafka|http ...``) on uvloop, as the pipeline
does, and prints one JSON line. ``http_probe`` also measures the receiver's CPU per request while
the loop runs: its capacity per core is the inverse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------ process accounting


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_cpu_seconds(stat: str) -> float:
    """User + system CPU seconds of a ``/proc/.../stat`` line (a process's or one thread's)."""
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds (all threads) of the live processes among ``pids``; 0 for the gone."""
    total = 0.0
    for pid in pids:
        try:
            total += stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


class OtherLoad:
    """Cores kept busy by processes that are not ours over a span: ``pids``, this process and its
    reaped children (the probes) are ours. A noisy machine shows up here."""

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self.pids = list(pids)
        self.cores = 0.0

    def _ours(self) -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return cpu_seconds(self.pids) + own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __enter__(self) -> OtherLoad:
        self._start = (machine_busy_seconds(), self._ours(), time.monotonic())
        return self

    def __exit__(self, *_: object) -> None:
        busy, ours, wall = self._start
        elapsed = max(time.monotonic() - wall, 1e-3)
        self.cores = round(max(0.0, (machine_busy_seconds() - busy - (self._ours() - ours)) / elapsed), 2)


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (``VmHWM``) in MiB, or ``None`` if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # HotSpot's compiler threads, as /proc names them


def jit_cpu_seconds(pid: int) -> float | None:
    """CPU seconds the JIT compiler threads of the JVM ``pid`` have used (``C1``/``C2 CompilerThread``:
    a thread's name in ``/proc`` is cut at 15 characters), or ``None`` if it is gone or has none. A
    broker started minutes ago still compiles its hot paths, in bursts of up to a core."""
    total, found = 0.0, False
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        if stat[stat.index("(") + 1:stat.rindex(")")].startswith(JIT_THREADS):
            total += stat_cpu_seconds(stat)
            found = True
    return total if found else None


class JitMeter:
    """The CPU seconds a broker's JIT compiler uses from the meter's start (``None`` when the benchmark
    did not start the broker, or cannot see its compiler threads)."""

    def __init__(self, broker_pid: int | None) -> None:
        self._pid = broker_pid
        self._start = jit_cpu_seconds(broker_pid) if broker_pid else None

    def used(self) -> float | None:
        now = jit_cpu_seconds(self._pid) if self._pid else None
        return round(now - self._start, 2) if now is not None and self._start is not None else None


# ------------------------------------------------------------------ (a) Kafka


async def kafka_limit(bootstrap: str, records: int, partitions: int, seed: int) -> dict[str, Any]:
    from aiokafka import TopicPartition

    from bench.e2e import Workload
    from services.contract.topics import TopicSpec
    from services.shared import kafka
    from services.shared.settings import Settings

    settings = Settings(kafka={"bootstrap_servers": bootstrap, "partitions": partitions})
    topic = f"bench-limit-{uuid.uuid4().hex[:10]}"
    await kafka.create_topics(settings, [TopicSpec(topic, partitions, {"retention.ms": "3600000"})])
    events = Workload.plan(webhooks=100, fanout=1, seed=seed).events(records, seed=seed)
    payload_bytes = sum(len(e.value) for e in events)

    producer = kafka.producer(settings)
    async with kafka.started(producer):
        started = time.perf_counter()
        futures = [await producer.send(topic, value=e.value, key=e.key, headers=e.headers) for e in events]
        await asyncio.gather(*futures)
        produce_s = time.perf_counter() - started

    consumer = kafka.consumer(settings, group_id=None, max_poll_records=5000)
    async with kafka.started(consumer):
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started, got = time.perf_counter(), 0
        while got < records:
            batch = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batch and time.perf_counter() - started > 60:
                break
            got += sum(len(r) for r in batch.values())
        consume_s = time.perf_counter() - started

    client = kafka.admin(settings)
    async with kafka.started(client):
        await client.delete_topics([topic])
    return {"records": records, "consumed": got, "avg_record_bytes": round(payload_bytes / records),
            "produce_s": round(produce_s, 3), "consume_s": round(consume_s, 3),
            "produce_per_s": round(records / produce_s), "consume_per_s": round(got / consume_s),
            "per_s": round(records / (produce_s + consume_s)), "cpu_s": round(time.process_time(), 2)}


# ------------------------------------------------------------------ (b) HTTP


def probe_headers() -> dict[str, str]:
    """The headers a delivery carries (values shaped like the real ones; the id marks a probe)."""
    return {"content-type": "application/json", "user-agent": "akece-webhooks/bench",
            "webhook-id": "limit-probe", "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1," + "A" * 44, "X-Chatwoot-Delivery": str(uuid.uuid4()),
            "X-Chatwoot-Timestamp": str(int(time.time())), "X-Chatwoot-Signature": "sha256=" + "0" * 64}


async def http_limit(url: str, concurrency: int, seconds: float, warmup: float,
                     client: str = "sender") -> dict[str, Any]:
    import aiohttp
    import orjson

    from schemas.examples import example
    from services.delivery.http import HttpSender
    from services.shared.netguard import NetworkGuard
    from services.shared.settings import HttpSettings

    body = orjson.dumps(example("message_created", account_id=1000, conversation_id=1))
    headers = probe_headers()
    counts = {"ok": 0, "failed": 0, "total": 0}
    measuring = asyncio.Event()
    done = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    sender = HttpSender(HttpSettings(pool_size=concurrency), NetworkGuard(["127.0.0.0/8"]))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30),
                                     cookie_jar=aiohttp.DummyCookieJar()) as session, sender:

        async def post() -> bool:
            if client == "sender":
                result = await sender.post(url, body, headers)
                return result.status is not None and 200 <= result.status < 300
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return 200 <= response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                return False

        async def loop() -> None:
            while not done.is_set():
                ok = await post()
                if measuring.is_set():
                    counts["ok" if ok else "failed"] += 1
                counts["total"] += 1

        tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring.set()
        started, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        ok = counts["ok"]
        done.set()
        await asyncio.gather(*tasks)
    return {"client": client, "concurrency": concurrency, "seconds": round(elapsed, 2), "ok": ok,
            "failed": counts["failed"],
            "per_s": round(ok / elapsed), "requests_total": counts["total"],
            "client_cpu_us_per_request": round(cpu / max(ok, 1) * 1e6, 1)}


def http_probe(url: str, *, concurrency: int, seconds: float, receiver_pids: list[int],
               warmup: float = 1.0, client: str = "sender") -> dict[str, Any]:
    """Run the POST loop in its own process; add the receiver's CPU per request over the whole run."""
    before = cpu_seconds(receiver_pids)
    with OtherLoad(receiver_pids) as other:
        result = run_json([sys.executable, "-m", "bench.limits", "http", "--url", url, "--concurrency",
                           str(concurrency), "--seconds", str(seconds), "--warmup", str(warmup),
                           "--client", client])
    result["other_load_cores"] = other.cores
    receiver_cpu = cpu_seconds(receiver_pids) - before
    per_request = receiver_cpu / max(result["requests_total"], 1)
    result["receiver_cpu_s"] = round(receiver_cpu, 2)
    result["receiver_cpu_us_per_request"] = round(per_request * 1e6, 1)
    result["receiver_capacity_per_core"] = round(1 / per_request) if per_request > 0 else None
    return result


def kafka_probe(bootstrap: str, *, records: int, partitions: int, broker_pid: int | None,
                seed: int = 7) -> dict[str, Any]:
    with OtherLoad([broker_pid] if broker_pid else []) as other:
        result = run_json([sys.executable, "-m", "bench.limits", "kafka", "--bootstrap", bootstrap,
                           "--records", str(records), "--partitions", str(partitions), "--seed", str(seed)])
    result["other_load_cores"] = other.cores
    return result


def run_json(cmd: list[str], timeout: float = 600) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def combined_bound(a: float, b: float) -> float:
    """Records per second if each delivery paid one Kafka round trip (a) and one POST (b) in turn."""
    return 1 / (1 / a + 1 / b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kafka", help="(a) produce-then-consume records/s")
    k.add_argument("--bootstrap", required=True)
    k.add_argument("--records", type=int, default=100_000)
    k.add_argument("--partitions", type=int, default=6)
    k.add_argument("--seed", type=int, default=7)
    h = sub.add_parser("http", help="(b) POST loop req/s (the delivery sender's client, or aiohttp's)")
    h.add_argument("--url", required=True)
    h.add_argument("--concurrency", type=int, default=64)
    h.add_argument("--seconds", type=float, default=8.0)
    h.add_argument("--warmup", type=float, default=1.0)
    h.add_argument("--client", choices=("sender", "aiohttp"), default="sender")
    args = parser.parse_args(argv)
    if args.what == "kafka":
        coro = kafka_limit(args.bootstrap, args.records, args.partitions, args.seed)
    else:
        coro = http_limit(args.url, args.concurrency, args.seconds, args.warmup, args.client)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
