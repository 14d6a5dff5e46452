"""Memory per held delivery record: the delivery worker at its full in-flight budget.

    python -m bench.memory_per_record [--records 12000] [--webhooks 100] [--trace] [--cpu]

Against ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092), with a throwaway topic prefix
(its topics are deleted at the end). ``--webhooks`` webhooks whose receiver (``bench.receivers``,
its own process) holds every request for ten minutes, so the worker's 512 requests stay open and
the rest of ``AKECE_DELIVERY_MAX_IN_FLIGHT`` (10,000) records wait in its queues: the in-flight
budget fills and stays full. Bodies are the realistic Chatwoot mix of ``bench.e2e`` (about 2.4 KB),
headers as the router writes them.

Default: ``akece-webhooks deliver --processes 1`` as its own process. Its RSS once ready (nothing
held), then the records are produced; once it holds the whole budget: RSS, peak RSS, and
``(RSS - ready RSS) / records held``.

``--instant``: as ``bench.scaling``'s base point sees it: nginx answering at once, the records
produced first (a backlog), ``deliver --until-idle``: its peak RSS while it drains them (the budget
fills when fetching outpaces delivering) against its RSS once ready with nothing to deliver.

``--instant --slow-ms 200``: the same against a receiver answering after 200 ms (the budget fills
while deliveries go on: 10,000 records held, the oldest leaving as new ones come).

``--trace``: the worker in this process under ``tracemalloc`` (records produced first): the bytes
allocated since just before the worker started, per record held, by the line that allocated them
(the top lines, and summed per module), and one ``Job`` with everything only it references.

``--cpu``: the worker in this process against a receiver answering at once, until it is idle:
``time.process_time()`` per delivery (a sanity check between two versions, not a benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from bench.bench_delivery import rss_mb, scrape
from bench.e2e import EVENT_MIX
from bench.limits import peak_rss_mb
from bench.receivers import Nginx, PyReceiver
from schemas.examples import example
from services.contract.deliveries import delivery_key, first_attempt_headers
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.devtools.ports import free_port
from services.shared import kafka
from services.shared import logging as logs
from services.shared.metrics import Metrics
from services.shared.runtime import run_async
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import Webhook, encode_webhook, new_webhook_id

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = 500
HOLD_S = 600.0  # the receiver holds a request this long; the webhooks' timeout is longer
FULL_TIMEOUT_S = 120.0


def say(message: str) -> None:
    print(f"[memory_per_record] {message}", file=sys.stderr, flush=True)


def settings_for(prefix: str) -> Settings:
    return Settings(topic_prefix=prefix, allowed_private_cidrs=["127.0.0.0/8"], log_level="warning",
                    log_format="json")


def hooks(count: int, base_url: str, *, hold: bool, slow_ms: int = 0) -> list[Webhook]:
    stamp = now_iso()
    path = "hang/" if hold else f"slow/{slow_ms}/" if slow_ms else ""
    return [Webhook.new(id=new_webhook_id(), account_id=1000 + n, url=f"{base_url}/{path}{n}",
                        subscriptions=list(EVENT_MIX), created_at=stamp, total_timeout_s=HOLD_S * 2)
            for n in range(count)]


async def produce(settings: Settings, webhooks: list[Webhook], records: int, *, seed: int = 7) -> float:
    """Webhooks and ``records`` delivery records of the realistic mix; returns the mean body size."""
    await kafka.ensure_topics(settings)
    topics = Topics.from_settings(settings)
    rng = random.Random(seed)
    body_bytes = 0
    async with kafka.started(kafka.producer(settings)) as producer:
        acks = [await producer.send(topics.subscriptions, value=encode_webhook(w), key=str(w.id).encode())
                for w in webhooks]
        await asyncio.gather(*acks)
        for start in range(0, records, 2000):
            acks = []
            for n in range(start, min(records, start + 2000)):
                hook = webhooks[n % len(webhooks)]
                kind = rng.choices(list(EVENT_MIX), weights=list(EVENT_MIX.values()))[0]
                conversation = rng.randint(1, CONVERSATIONS)
                body = orjson.dumps(example(kind, account_id=hook.account_id, conversation_id=conversation))
                body_bytes += len(body)
                stamp = now_iso()
                headers = first_attempt_headers(event_id=str(uuid.uuid4()), event_type=kind,
                                                account_id=str(hook.account_id), webhook_id=hook.id,
                                                event_time=stamp, routed_time=stamp)
                acks.append(await producer.send(topics.deliveries, value=body,
                                                key=delivery_key(hook.id, str(conversation)), headers=headers))
            await asyncio.gather(*acks)
    return body_bytes / max(records, 1)


async def delete_topics(settings: Settings) -> None:
    prefix = f"{settings.topic_prefix}."
    async with asyncio.timeout(30), kafka.started(kafka.admin(settings)) as admin:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)


@contextmanager
def receiver(work: Path) -> Iterator[PyReceiver]:
    with PyReceiver(work / "receiver", free_port(), hang_s=HOLD_S) as rx:
        yield rx


# ------------------------------------------------------------------ the worker as its own process


async def in_process_of_its_own(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = settings_for(f"mem{uuid.uuid4().hex[:8]}")
    await kafka.ensure_topics(settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
    env.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
                "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": str(port),
                "AKECE_LOG_FORMAT": "json", "AKECE_LOG_LEVEL": "warning"})
    try:
        with receiver(work) as rx, (work / "worker.log").open("wb") as out:
            webhooks = hooks(args.webhooks, rx.url, hold=True)
            proc = subprocess.Popen([sys.executable, "-m", "services", "deliver", "--processes", "1"], cwd=ROOT,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                    await until_ready(session, f"http://127.0.0.1:{port}/readyz", proc)
                    ready_rss = rss_mb(proc.pid) or 0.0
                    body = await produce(settings, webhooks, args.records)
                    held = await until_full(session, f"http://127.0.0.1:{port}/metrics", proc)
                full_rss, peak = rss_mb(proc.pid) or 0.0, peak_rss_mb(proc.pid) or 0.0
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    finally:
        await delete_topics(settings)
    return {"mean_body_bytes": round(body), "held": held, "ready_rss_mb": round(ready_rss, 1),
            "full_rss_mb": round(full_rss, 1), "peak_rss_mb": round(peak, 1),
            "bytes_per_record": round((full_rss - ready_rss) * 1024 * 1024 / max(held, 1))}


async def draining(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = settings_for(f"mem{uuid.uuid4().hex[:8]}")
    await kafka.ensure_topics(settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
    env.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
                "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": str(port),
                "AKECE_LOG_FORMAT": "json", "AKECE_LOG_LEVEL": "info"})
    env.update(item.split("=", 1) for item in args.env)
    command = [sys.executable, "-m", "services", "deliver", "--processes", "1"]
    url = f"http://127.0.0.1:{port}"
    try:
        served = PyReceiver(work / "receiver", free_port()) if args.slow_ms else Nginx(work / "nginx", free_port())
        with served as rx, (work / "worker.log").open("wb") as out:
            webhooks = hooks(args.webhooks, rx.url, hold=False, slow_ms=args.slow_ms)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                await produce(settings, webhooks, 0)
                proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
                try:
                    await until_ready(session, f"{url}/readyz", proc)
                    ready_rss = rss_mb(proc.pid) or 0.0
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                body = await produce(settings, webhooks, args.records)
                proc = subprocess.Popen([*command, "--until-idle"], cwd=ROOT, env=env, stdout=out,
                                        stderr=subprocess.STDOUT)
                try:
                    held, peak, delivered = 0.0, 0.0, 0.0
                    async with asyncio.timeout(FULL_TIMEOUT_S * 5):
                        while proc.poll() is None:
                            values = await scrape(session, f"{url}/metrics")
                            held = max(held, values.get("in_flight", 0.0))
                            peak = peak_rss_mb(proc.pid) or peak
                            delivered = values.get("delivered", delivered)
                            if args.timeline:
                                say(f"in flight {values.get('in_flight', 0):6.0f} delivered {delivered:6.0f} "
                                    f"RSS {rss_mb(proc.pid) or 0:6.1f} MB")
                            await asyncio.sleep(0.25)
                finally:
                    if proc.poll() is None:
                        proc.terminate()
                    proc.wait(timeout=60)
    finally:
        await delete_topics(settings)
    return {"mean_body_bytes": round(body), "max_held": int(held), "delivered": int(delivered), "ready_rss_mb": round(ready_rss, 1),
            "peak_rss_mb": round(peak, 1),
            "peak_bytes_per_record": round((peak - ready_rss) * 1024 * 1024 / max(held, 1))}


async def until_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(60):
        while proc.poll() is None:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the worker exited {proc.returncode} before it was ready")


async def until_full(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> int:
    """Records held once the in-flight gauge stopped growing (three equal samples a second apart)."""
    seen: list[float] = []
    async with asyncio.timeout(FULL_TIMEOUT_S):
        while proc.poll() is None:
            seen.append((await scrape(session, url)).get("in_flight", 0.0))
            if len(seen) >= 3 and seen[-1] > 0 and seen[-1] == seen[-2] == seen[-3]:
                return int(seen[-1])
            await asyncio.sleep(1.0)
    raise RuntimeError(f"the worker exited {proc.returncode}")


# ------------------------------------------------------------------ the worker in this process


@asynccontextmanager
async def in_this_process(settings: Settings) -> AsyncIterator[Any]:
    """A delivery worker of this process (and its subscription table), stopped on exit."""
    from services.delivery.worker import DeliveryWorker

    table = SubscriptionTable(settings)
    stop = asyncio.Event()
    table_task = asyncio.create_task(table.run(stop))
    await table.wait_ready()
    async with kafka.started(kafka.producer(settings)) as producer:
        store = SubscriptionStore(settings, table, producer)
        worker = DeliveryWorker(settings, table, store, Metrics(CollectorRegistry()))
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await task
            await table_task


async def traced(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The worker in this process under tracemalloc; held: a receiver that holds every request; with
    ``--instant``: nginx answering at once (snapshot while the budget is full and records churn)."""
    settings = settings_for(f"mem{uuid.uuid4().hex[:8]}")
    logs.configure(settings)
    try:
        with (Nginx(work / "nginx", free_port()) if args.instant else receiver(work)) as rx:
            body = await produce(settings, hooks(args.webhooks, rx.url, hold=not args.instant), args.records)
            gc.collect()
            tracemalloc.start(args.frames)
            before = tracemalloc.take_snapshot()
            ready_rss = rss_mb(os.getpid()) or 0.0
            async with in_this_process(settings) as worker:
                intake = worker._intake
                async with asyncio.timeout(FULL_TIMEOUT_S * 3):
                    while intake.in_flight < intake.max_in_flight or (
                            not args.instant and len(worker._tasks) < settings.delivery.max_concurrency):
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(2.0)  # the consumer's prefetch settles; with --instant, records churn
                    while intake.in_flight < intake.max_in_flight * 0.95:
                        await asyncio.sleep(0.01)
                after = tracemalloc.take_snapshot()
                full_rss = rss_mb(os.getpid()) or 0.0
                held = intake.in_flight
                report_lines(after, before, held, args.top)
                job = one_job(worker)
                job_bytes = deep_size(job, shared(worker))
                say(f"one Job (value {len(job.value)} B, {len(job.headers)} headers): {job_bytes} B referenced "
                    f"only by it; by type: {dict(Counter(type_sizes(job, shared(worker))).most_common(12))}")
            tracemalloc.stop()
    finally:
        await delete_topics(settings)
    traced_bytes = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {"mean_body_bytes": round(body), "held": held, "traced_bytes_per_record": round(traced_bytes / held),
            "job_bytes": job_bytes, "rss_delta_mb_with_tracemalloc": round(full_rss - ready_rss, 1)}


def report_lines(after: tracemalloc.Snapshot, before: tracemalloc.Snapshot, held: int, top: int) -> None:
    by_line = after.compare_to(before, "lineno")
    say(f"top {top} allocating lines, bytes per held record (held {held}):")
    for stat in by_line[:top]:
        frame = stat.traceback[0]
        say(f"  {stat.size_diff / held:8.0f} B {stat.count_diff / held:6.2f} blocks  "
            f"{short(frame.filename)}:{frame.lineno}")
    by_module: Counter[str] = Counter()
    for stat in after.compare_to(before, "traceback"):
        by_module[origin(stat.traceback)] += stat.size_diff
    say("by the first frame of ours (services/, or the library that allocated):")
    for name, size in by_module.most_common(top):
        say(f"  {size / held:8.0f} B  {name}")


def short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def origin(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame in services/ (what of ours caused it), else the innermost frame."""
    for frame in reversed(traceback):  # tracemalloc lists the most recent frame last
        if "/services/" in frame.filename:
            return f"{short(frame.filename)}:{frame.lineno}"
    return short(traceback[-1].filename)


def one_job(worker: Any) -> Any:
    for queue in worker._dispatcher._keys.values():
        if queue:
            return queue[0][1]
    raise RuntimeError("no queued job")


def shared(worker: Any) -> set[int]:
    """Objects a job references that are not its own: the partition, its ledger, interned names."""
    job = one_job(worker)
    ids = {id(job.tp), id(job.ledger), id(job.meta.event_type)}
    ids.update(id(name) for name, _ in job.headers)
    return ids


def _walk(root: object, skip: set[int]) -> Iterator[object]:
    seen = set(skip)
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type) or sys.getrefcount(obj) > 50:  # shared: small ints, types
            continue
        seen.add(id(obj))
        yield obj
        stack.extend(gc.get_referents(obj))


def deep_size(root: object, skip: set[int]) -> int:
    return sum(sys.getsizeof(obj) for obj in _walk(root, skip))


def type_sizes(root: object, skip: set[int]) -> Counter[str]:
    sizes: Counter[str] = Counter()
    for obj in _walk(root, skip):
        sizes[type(obj).__name__] += sys.getsizeof(obj)
    return sizes


# ------------------------------------------------------------------ where a drain's RSS goes


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo() -> dict[str, float]:
    """glibc's heap in MB: ``used`` (malloc'd), ``free`` (held by malloc, not in use), ``mmapped``."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {"used": info.uordblks / 2**20, "free": info.fordblks / 2**20, "mmapped": info.hblkhd / 2**20}


def pymalloc() -> dict[str, float]:
    """pymalloc's arenas in MB: ``arenas`` (mapped), ``in_blocks`` (objects), ``free_blocks`` (free in them)."""
    read, write = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(write, 2)
        os.close(write)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name = name.strip().lstrip("#").strip()
        if name in ("arenas allocated current", "bytes in allocated blocks", "bytes in available blocks"):
            found[name] = int(value.strip().replace(",", ""))
    return {"arenas": found.get("arenas allocated current", 0) * 1.0,
            "in_blocks": found.get("bytes in allocated blocks", 0) / 2**20,
            "free_blocks": found.get("bytes in available blocks", 0) / 2**20}


async def probed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The worker in this process draining a backlog to nginx: RSS beside what malloc and Python hold."""
    settings = settings_for(f"mem{uuid.uuid4().hex[:8]}")
    logs.configure(settings)
    peak: dict[str, float] = {}
    hi: tuple[float, Any, float] = (0.0, None, 0)
    lo: tuple[float, Any, float] = (float("inf"), None, 0)
    idle = 0
    try:
        with Nginx(work / "nginx", free_port()) as rx:
            body = await produce(settings, hooks(args.webhooks, rx.url, hold=False), args.records)
            gc.collect()
            if args.trace:
                tracemalloc.start(args.frames)
            base = {"rss": rss_mb(os.getpid()) or 0.0, **mallinfo(), **pymalloc()}
            say(f"before: {base}")
            async with in_this_process(settings) as worker:
                async with asyncio.timeout(FULL_TIMEOUT_S * 5):
                    while True:
                        await asyncio.sleep(0.25)
                        sample = {"rss": rss_mb(os.getpid()) or 0.0, **mallinfo(),
                                  **pymalloc(), "in_flight": worker._intake.in_flight,
                                  "traced": tracemalloc.get_traced_memory()[0] / 2**20,
                                  "buffered": buffered(worker._consumer)}
                        if sample["rss"] > peak.get("rss", 0.0):
                            peak = sample
                        if args.trace and worker._intake.max_in_flight_seen:
                            if sample["traced"] > hi[0]:
                                hi = (sample["traced"], tracemalloc.take_snapshot(), sample["in_flight"])
                            if sample["traced"] < lo[0] and sample["in_flight"] >= 2000:
                                lo = (sample["traced"], tracemalloc.take_snapshot(), sample["in_flight"])
                        if args.timeline:
                            say(" ".join(f"{k} {v:.1f}" for k, v in sample.items()))
                        idle = idle + 1 if worker._intake.in_flight == 0 and worker._intake.max_in_flight_seen else 0
                        if idle >= 4:  # drained
                            break
    finally:
        await delete_topics(settings)
    if hi[1] is not None and lo[1] is not None:
        say(f"most traced: {hi[0]:.1f} MB at {hi[2]} in flight; least: {lo[0]:.1f} MB at {lo[2]}; the difference:")
        for stat in hi[1].compare_to(lo[1], "traceback")[:args.top]:
            where = " < ".join(f"{short(f.filename)}:{f.lineno}" for f in reversed(stat.traceback))
            say(f"  {stat.size_diff / 2**20:6.2f} MB {stat.count_diff:8d} blocks  {where}")
    return {"mean_body_bytes": round(body), "base": base, "peak": peak}


def buffered(consumer: Any) -> int:
    """Records aiokafka fetched and holds for the next ``getmany`` (not yet handed out)."""
    if consumer is None:
        return 0
    fetcher = consumer._fetcher
    return sum(1 for _ in fetcher._records)


# ------------------------------------------------------------------ CPU sanity check


async def cpu(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = settings_for(f"mem{uuid.uuid4().hex[:8]}")
    logs.configure(settings)
    try:
        with Nginx(work / "nginx", free_port()) as rx:
            await produce(settings, hooks(args.webhooks, rx.url, hold=False), args.records)
            table = SubscriptionTable(settings)
            stop = asyncio.Event()
            table_task = asyncio.create_task(table.run(stop))
            await table.wait_ready()
            from services.delivery.worker import DeliveryWorker

            async with kafka.started(kafka.producer(settings)) as producer:
                worker = DeliveryWorker(settings, table, SubscriptionStore(settings, table, producer),
                                        Metrics(CollectorRegistry()), until_idle=True)
                cpu_start, wall_start = time.process_time(), time.monotonic()
                await worker.run(asyncio.Event())
                spent, wall = time.process_time() - cpu_start, time.monotonic() - wall_start
            stop.set()
            await table_task
    finally:
        await delete_topics(settings)
    return {"records": args.records, "cpu_s": round(spent, 2), "wall_s": round(wall, 2),
            "cpu_us_per_delivery": round(spent / args.records * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_per_record", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=12_000, help="delivery records produced")
    parser.add_argument("--webhooks", type=int, default=100, help="webhooks the records go to")
    parser.add_argument("--trace", action="store_true", help="the worker in this process under tracemalloc")
    parser.add_argument("--instant", action="store_true", help="peak RSS draining a backlog to nginx")
    parser.add_argument("--slow-ms", type=int, default=0,
                        help="with --instant: an aiohttp receiver answering after this many ms instead of nginx")
    parser.add_argument("--timeline", action="store_true", help="with --instant: each sample on stderr")
    parser.add_argument("--probe", action="store_true", help="in this process, draining to nginx: malloc's view")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="with --instant: an environment variable of the worker process (repeatable)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the worker process does")
    parser.add_argument("--cpu", action="store_true", help="CPU per delivery against an instant receiver")
    parser.add_argument("--frames", type=int, default=12, help="tracemalloc frames kept per allocation")
    parser.add_argument("--top", type=int, default=25, help="lines listed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="akece-mem-") as tmp:
        run = probed if args.probe else traced if args.trace else cpu if args.cpu else draining if args.instant else in_process_of_its_own
        result = run_async(run(args, Path(tmp))) if args.uvloop else asyncio.run(run(args, Path(tmp)))
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
