"""Memory per held delivery record: the delivery worker at its full in-flight budget.

    python -m bench.memory_per_record [held|drain|cpu] [--records N] [--webhooks 100] [--slow-ms MS]

Against ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092), with a throwaway topic prefix
(its topics are deleted at the end). ``--webhooks`` webhooks get delivery records of the realistic
Chatwoot mix of ``bench.e2e`` (about 2.4 KB bodies), headers as the router writes them. Prints one
JSON line.

- ``held`` (default): ``akece-webhooks deliver`` as its own process, against a receiver
  (``bench.receivers``, its own process) that holds every request for ten minutes: the worker's
  512 requests stay open and the rest of ``AKECE_DELIVERY_MAX_IN_FLIGHT`` (10,000) records wait in
  its queues. Its RSS once ready (nothing held), then the records are produced (12,000: the budget
  fills); once the in-flight gauge stops growing: RSS, peak RSS and ``(RSS - ready RSS) / held``.
- ``drain``: as ``bench.scaling``'s base point sees it: the records produced first (a backlog), then
  ``deliver --until-idle`` against nginx answering at once (or, with ``--slow-ms``, an aiohttp
  receiver answering after that long, so the budget fills while deliveries go on): its peak RSS
  against the RSS of the same command once ready with nothing to deliver.
- ``cpu``: the worker in this process draining the records to nginx until idle:
  ``time.process_time()`` per delivery (a sanity check between two versions, not a benchmark).

Where the bytes go (tracemalloc, malloc's and pymalloc's views): ``python -m bench.memory_views``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
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
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import Webhook, encode_webhook, new_webhook_id

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = 500
HOLD_S = 600.0  # the holding receiver keeps a request this long; the webhooks' timeout is longer
FULL_TIMEOUT_S = 120.0
SAMPLE_S = 0.25


def say(message: str) -> None:
    print(f"[memory_per_record] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the workload


def new_settings() -> Settings:
    return Settings(topic_prefix=f"mem{uuid.uuid4().hex[:8]}", allowed_private_cidrs=["127.0.0.0/8"],
                    log_level="warning", log_format="json")


def hooks(count: int, base_url: str, *, path: str = "") -> list[Webhook]:
    stamp = now_iso()
    return [Webhook.new(id=new_webhook_id(), account_id=1000 + n, url=f"{base_url}/{path}{n}",
                        subscriptions=list(EVENT_MIX), created_at=stamp, total_timeout_s=HOLD_S * 2)
            for n in range(count)]


async def produce(settings: Settings, webhooks: list[Webhook], records: int, *, seed: int = 7) -> float:
    """The webhooks and ``records`` delivery records of the realistic mix; returns the mean body size."""
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
def holding(work: Path) -> Iterator[PyReceiver]:
    """A receiver holding every request under ``/hang/`` for ``HOLD_S``."""
    with PyReceiver(work / "receiver", free_port(), hang_s=HOLD_S) as rx:
        yield rx


def answering(work: Path, slow_ms: int = 0) -> AbstractContextManager[Nginx | PyReceiver]:
    """nginx answering at once, or (``slow_ms``) an aiohttp receiver answering ``/slow/<ms>/`` that late."""
    return PyReceiver(work / "receiver", free_port()) if slow_ms else Nginx(work / "nginx", free_port())


def answering_path(slow_ms: int) -> str:
    return f"slow/{slow_ms}/" if slow_ms else ""


# ------------------------------------------------------------------ the worker as its own process


class WorkerProcess:
    """``akece-webhooks deliver`` (one process) for ``settings``, its ``/metrics`` on a port of its own."""

    def __init__(self, settings: Settings, log: Path, *, until_idle: bool = False, level: str = "warning") -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
        self.env.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                         "AKECE_TOPIC_PREFIX": settings.topic_prefix, "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
                         "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": str(self.port),
                         "AKECE_LOG_FORMAT": "json", "AKECE_LOG_LEVEL": level})
        self.command = ["-m", "services", "deliver", "--processes", "1", *(["--until-idle"] if until_idle else [])]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WorkerProcess]:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(sys.executable, *self.command, cwd=ROOT, env=self.env,
                                                             stdout=out, stderr=asyncio.subprocess.STDOUT)
        try:
            yield self
        finally:
            if self.proc.returncode is None:
                self.proc.terminate()
            async with asyncio.timeout(60):
                await self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        return await scrape(session, f"http://127.0.0.1:{self.port}/metrics")

    async def until_ready(self, session: aiohttp.ClientSession) -> float:
        """Its RSS (MB) once it answers ``/readyz``."""
        async with asyncio.timeout(60):
            while self.alive:
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        if response.status == 200:
                            return rss_mb(self.pid) or 0.0
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the worker exited before it was ready: {self.log.read_text()[-2000:]}")


async def held(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = new_settings()
    await kafka.ensure_topics(settings)
    worker = WorkerProcess(settings, work / "worker.log")
    try:
        with holding(work) as rx:
            async with worker.running(), aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                ready_rss = await worker.until_ready(session)
                body = await produce(settings, hooks(args.webhooks, rx.url, path="hang/"), args.records)
                count = await until_steady(worker, session)
                full_rss, peak = rss_mb(worker.pid) or 0.0, peak_rss_mb(worker.pid) or 0.0
    finally:
        await delete_topics(settings)
    return {"mode": "held", "mean_body_bytes": round(body), "held": count, "ready_rss_mb": round(ready_rss, 1),
            "full_rss_mb": round(full_rss, 1), "peak_rss_mb": round(peak, 1),
            "bytes_per_record": round((full_rss - ready_rss) * 2**20 / max(count, 1))}


async def until_steady(worker: WorkerProcess, session: aiohttp.ClientSession) -> int:
    """Records held once the in-flight gauge stopped growing (three equal samples a second apart)."""
    seen: list[float] = []
    async with asyncio.timeout(FULL_TIMEOUT_S):
        while worker.alive:
            seen.append((await worker.metrics(session)).get("in_flight", 0.0))
            if len(seen) >= 3 and seen[-1] > 0 and seen[-1] == seen[-2] == seen[-3]:
                return int(seen[-1])
            await asyncio.sleep(1.0)
    raise RuntimeError(f"the worker exited: {worker.log.read_text()[-2000:]}")


async def drain(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = new_settings()
    try:
        with answering(work, args.slow_ms) as rx:
            webhooks = hooks(args.webhooks, rx.url, path=answering_path(args.slow_ms))
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                await produce(settings, webhooks, 0)
                async with WorkerProcess(settings, work / "worker.log").running() as idle:
                    ready_rss = await idle.until_ready(session)
                body = await produce(settings, webhooks, args.records)
                worker = WorkerProcess(settings, work / "worker.log", until_idle=True, level="info")
                async with worker.running():
                    most, peak, delivered = await sampled(worker, session, say if args.timeline else None)
    finally:
        await delete_topics(settings)
    return {"mode": f"drain{f' slow {args.slow_ms} ms' if args.slow_ms else ''}", "mean_body_bytes": round(body),
            "max_held": int(most), "delivered": int(delivered), "ready_rss_mb": round(ready_rss, 1),
            "peak_rss_mb": round(peak, 1), "peak_bytes_per_record": round((peak - ready_rss) * 2**20 / max(most, 1))}


async def sampled(worker: WorkerProcess, session: aiohttp.ClientSession,
                  show: Callable[[str], None] | None) -> tuple[float, float, float]:
    """Until the worker exits: the most records held, its peak RSS (MB), the deliveries done."""
    most, peak, delivered = 0.0, 0.0, 0.0
    async with asyncio.timeout(FULL_TIMEOUT_S * 5):
        while worker.alive:
            values = await worker.metrics(session)
            most = max(most, values.get("in_flight", 0.0))
            peak = peak_rss_mb(worker.pid) or peak
            delivered = values.get("delivered", delivered)
            if show is not None:
                show(f"in flight {values.get('in_flight', 0):6.0f} delivered {delivered:6.0f} "
                     f"RSS {rss_mb(worker.pid) or 0:6.1f} MB")
            await asyncio.sleep(SAMPLE_S)
    return most, peak, delivered


# ------------------------------------------------------------------ CPU sanity check


@asynccontextmanager
async def in_this_process(settings: Settings, *, until_idle: bool = False) -> AsyncIterator[Any]:
    """A delivery worker of this process (and its subscription table), running; on exit stopped, or with
    ``until_idle`` awaited until it is idle."""
    from services.delivery.worker import DeliveryWorker

    table = SubscriptionTable(settings)
    stop = asyncio.Event()
    table_task = asyncio.create_task(table.run(stop))
    await table.wait_ready()
    async with kafka.started(kafka.producer(settings)) as producer:
        worker = DeliveryWorker(settings, table, SubscriptionStore(settings, table, producer),
                                Metrics(CollectorRegistry()), until_idle=until_idle)
        worker_stop = asyncio.Event()
        task = asyncio.create_task(worker.run(worker_stop))
        try:
            yield worker
        finally:
            if not until_idle:
                worker_stop.set()
            await task
            stop.set()
            await table_task


async def cpu(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = new_settings()
    logs.configure(settings)
    try:
        with answering(work, args.slow_ms) as rx:
            await produce(settings, hooks(args.webhooks, rx.url, path=answering_path(args.slow_ms)), args.records)
            async with in_this_process(settings, until_idle=True):
                cpu_start, wall_start = time.process_time(), time.monotonic()
            spent, wall = time.process_time() - cpu_start, time.monotonic() - wall_start
    finally:
        await delete_topics(settings)
    return {"mode": "cpu", "records": args.records, "cpu_s": round(spent, 2), "wall_s": round(wall, 2),
            "cpu_us_per_delivery": round(spent / args.records * 1e6, 1)}


MODES = {"held": held, "drain": drain, "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_per_record", description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", choices=list(MODES), default="held", help="what to measure")
    parser.add_argument("--records", type=int, default=12_000, help="delivery records produced")
    parser.add_argument("--webhooks", type=int, default=100, help="webhooks the records go to")
    parser.add_argument("--slow-ms", type=int, default=0,
                        help="drain, cpu: an aiohttp receiver answering after this many ms instead of nginx")
    parser.add_argument("--timeline", action="store_true", help="drain: each sample on stderr")
    args = parser.parse_args(argv)
    run = MODES[args.mode]
    with tempfile.TemporaryDirectory(prefix="akece-mem-") as tmp:
        result = on_uvloop(run(args, Path(tmp)))
    print(orjson.dumps(result).decode())
    return 0


def on_uvloop(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run ``main`` on uvloop when installed, as the worker process runs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
