"""One benchmark scenario end to end, against the real CLI processes.

Workload: K webhooks over K/F accounts (F = fan-out: every event goes to the F webhooks of its
account), each subscribed to the default events. Events are realistic payloads
(``schemas.examples``) in a Chatwoot-like mix, round-robin over the accounts, 500 conversations per
account, published with ``services.publisher``.

A scenario:
1. fresh topics (own prefix), K webhooks written with ``SubscriptionStore``, receivers started;
2. **drain**: N events pre-published, then ``akece-webhooks run --role router`` and ``--role
   delivery`` started as processes; throughput is the steady arrival rate (between the 5th and 95th
   percentile arrival) of the deliveries at the receivers;
3. **paced**: events published at half that rate for ``paced_s`` seconds; latency is each
   delivery's first arrival (receiver log) minus its event's publish time (taken here);
4. SIGTERM, per-process CPU seconds and peak RSS, loss and duplicates from the delivery ids
   (``delivery_id(event, webhook)``) the receivers logged, retry-tier and DLQ contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka.errors import KafkaError

from bench import vm_speed
from bench.fixtures import delete_topics, running_store
from bench.limits import JitMeter, cpu_seconds, machine_busy_seconds, peak_rss_mb
from bench.receivers import ArrivalLog, Nginx, PyReceiver, stop_process
from schemas import DEFAULT_SUBSCRIPTIONS
from schemas.examples import example
from services.contract import headers as h
from services.contract.deliveries import delivery_id
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.devtools.ports import free_port
from services.publisher.events import OutgoingEvent, prepare
from services.publisher.publisher import Publisher
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import Webhook, new_webhook_id

# Share of each event type, roughly as a support desk produces them (messages dominate).
EVENT_MIX = {"message_created": 45, "message_updated": 8, "conversation_updated": 15,
             "conversation_created": 6, "conversation_status_changed": 8, "webwidget_triggered": 6,
             "contact_created": 4, "contact_updated": 8}
ACCOUNT_BASE = 1000
CONVERSATIONS = 500
SOURCE = "akece://bench"


# ------------------------------------------------------------------ workload


@dataclass(frozen=True)
class Hook:
    id: int
    account: int
    hanging: bool = False


@dataclass(frozen=True)
class Workload:
    hooks: tuple[Hook, ...]
    fanout: int
    by_account: dict[str, tuple[Hook, ...]] = field(repr=False)

    @classmethod
    def plan(cls, *, webhooks: int, fanout: int, hang_fraction: float = 0.0, seed: int = 7) -> Workload:
        """``webhooks`` over ``webhooks // fanout`` accounts; ``hang_fraction`` of them (at least one) hang."""
        base = new_webhook_id()
        hanging = round(webhooks * hang_fraction)
        hang = set(random.Random(seed).sample(range(webhooks), max(1, hanging))) if hang_fraction else set()
        hooks = tuple(Hook(base + i, ACCOUNT_BASE + i // fanout, i in hang) for i in range(webhooks))
        by_account: dict[str, list[Hook]] = {}
        for hook in hooks:
            by_account.setdefault(str(hook.account), []).append(hook)
        return cls(hooks, fanout, {a: tuple(hs) for a, hs in by_account.items()})

    @property
    def accounts(self) -> list[str]:
        return list(self.by_account)

    def events(self, n: int, *, seed: int, start: int = 0, body_bytes: int | None = None) -> list[OutgoingEvent]:
        """``n`` events of the realistic mix; with ``body_bytes``, all ``message_created`` whose
        ``content`` is padded so each body is that size (for the body-size curve)."""
        rng = random.Random(seed)
        accounts = self.accounts
        kinds = (["message_created"] * n if body_bytes else
                 rng.choices(list(EVENT_MIX), weights=list(EVENT_MIX.values()), k=n))
        payloads = [example(kind, account_id=int(accounts[(start + i) % len(accounts)]),
                            conversation_id=rng.randint(1, CONVERSATIONS)) for i, kind in enumerate(kinds)]
        if body_bytes:
            payloads = [padded(payload, body_bytes) for payload in payloads]
        return [prepare(payload, source=SOURCE) for payload in payloads]

    def deliveries(self, event: OutgoingEvent) -> list[tuple[str, Hook]]:
        return [(delivery_id(event.event_id, hook.id), hook) for hook in self.by_account[event.account_id]]

    def healthy_ids(self, events: Sequence[OutgoingEvent]) -> dict[str, str]:
        """Delivery id -> event id of every delivery to a webhook that answers."""
        return {d: e.event_id for e in events for d, hook in self.deliveries(e) if not hook.hanging}

    def held_ids(self, events: Sequence[OutgoingEvent]) -> set[str]:
        return {d for e in events for d, hook in self.deliveries(e) if hook.hanging}


def padded(payload: dict[str, Any], size: int) -> dict[str, Any]:
    """``payload`` with its ``content`` grown so the JSON body is ``size`` bytes (at least its own size)."""
    short = size - len(orjson.dumps(payload))
    if short > 0:
        payload = {**payload, "content": str(payload.get("content") or "") + "x" * short}
    return payload


def webhook_record(hook: Hook, url: str) -> Webhook:
    now = now_iso()
    return Webhook.new(id=hook.id, account_id=hook.account, name=f"bench {hook.id}", url=url,
                       subscriptions=list(DEFAULT_SUBSCRIPTIONS), created_at=now)


# ------------------------------------------------------------------ scenarios and configuration


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    receiver: str  # "nginx" | "python"
    delay_ms: int = 0
    hang_fraction: float = 0.0


SCENARIOS = {
    "instant": Scenario("instant", "receiver answers at once (nginx)", "nginx"),
    "slow50": Scenario("slow50", "receiver answers after 50 ms (aiohttp)", "python", delay_ms=50),
    "hang5": Scenario("hang5", "5% of webhooks hang past the 5 s timeout, the rest answer at once (nginx)",
                      "nginx", hang_fraction=0.05),
}


@dataclass
class RunConfig:
    bootstrap: str
    work: Path
    broker_pid: int | None
    events: int = 100_000
    webhooks: int = 100
    fanout: int = 1
    paced_s: float = 20.0
    paced_rate: float | None = None  # deliveries/s; None: half the sustained rate
    stall_s: float = 30.0
    partitions: int = 6
    receiver_procs: int = 1
    router_procs: int = 1
    delivery_procs: int = 1
    timeout_s: float = 5.0
    seed: int = 7
    body_bytes: int | None = None  # every event a message_created of this many bytes (None: the realistic mix)
    profile_dir: Path | None = None  # py-spy the router and delivery processes while they drain
    env: dict[str, str] = field(default_factory=dict)  # extra AKECE_* for the pipeline processes
    keep_topics: bool = False  # leave each run's topics on the broker (otherwise deleted once it is counted)


def pipeline_env(config: RunConfig, prefix: str) -> dict[str, str]:
    """The pipeline's environment: the caller's own AKECE_* settings win over the bench defaults."""
    defaults = {"AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8", "AKECE_HTTP_TOTAL_TIMEOUT_S": str(config.timeout_s),
                "AKECE_RETRY_SCHEDULE": "1,2", "AKECE_RETRY_JITTER": "0", "AKECE_LOG_FORMAT": "json",
                "AKECE_DELIVERY_SHUTDOWN_GRACE_S": "5", "AKECE_METRICS_HOST": "127.0.0.1",
                "AKECE_API_HOST": "127.0.0.1", **config.env}
    env = {**defaults, **os.environ}
    env.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": config.bootstrap, "AKECE_TOPIC_PREFIX": prefix,
                "AKECE_KAFKA_PARTITIONS": str(config.partitions)})
    return env


@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_for(env: dict[str, str]) -> Settings:
    with environ(env):
        return Settings()


# ------------------------------------------------------------------ pipeline processes


@dataclass
class Role:
    role: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    @property
    def name(self) -> str:
        return self.role

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def generator_heap_frozen() -> Iterator[None]:
    """This process's heap out of the collector's sight while it paces events and timestamps arrivals.

    The load generator holds the workload, the arrival log and every timestamp: its full collections
    walked all of it, 17 passes of up to 407 ms (2.2 s in all) in a paced run of 2,700 deliveries/s,
    and an event stamped before such a pause was sent after it, so the pause counted as the pipeline's
    latency. Frozen, a full pass walks only what the paced run itself allocates."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def start_role(role: str, index: int, env: dict[str, str], directory: Path) -> Role:
    port = free_port()
    log = directory / f"{role}-{index}.log"
    role_env = {**env, "AKECE_METRICS_PORT": str(port), "AKECE_API_PORT": str(free_port())}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services", "run", "--role", role], env=role_env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Role(role if index == 0 else f"{role}-{index}", proc, port, log)


async def wait_ready(roles: Sequence[Role], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        for role in roles:
            while True:
                if role.proc.poll() is not None:
                    raise RuntimeError(f"{role.name} exited with {role.proc.returncode}:\n{role.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"http://127.0.0.1:{role.metrics_port}/readyz") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{role.name} not ready within {timeout:.0f} s:\n{role.tail()}")
                await asyncio.sleep(0.2)


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


def start_profilers(roles: Sequence[Role], directory: Path, scenario: str) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` (raw collapsed stacks, non-blocking, 100 Hz) on each role until SIGINT."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([binary, "record", "--pid", str(r.proc.pid), "--format", "raw", "--nonblocking",
                              "--rate", "100", "--output", str(directory / f"{scenario}-{r.name}.txt")],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for r in roles]


def stop_profilers(profilers: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in profilers:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for proc in profilers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


METRIC_LINE = re.compile(r"^(akece_[a-z_]+_total)(\{[^}]*\})? ([0-9.e+-]+)$")


async def scrape_totals(role: Role) -> dict[str, float]:
    """The ``akece_*_total`` counters of a process (non-zero ones)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                http.get(f"http://127.0.0.1:{role.metrics_port}/metrics") as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    totals = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and float(match.group(3)):
            totals[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return totals


def log_problems(role: Role) -> dict[str, int]:
    """Error-level log lines and tracebacks in a process's output."""
    try:
        text = role.log.read_text(errors="replace")
    except OSError:
        return {}
    errors = len(re.findall(r'"level":\s*"(?:error|critical)"', text))
    return {"error_lines": errors, "tracebacks": text.count("Traceback (most recent call last)")}


# ------------------------------------------------------------------ measuring helpers


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def steady_rate(times: Sequence[float]) -> float:
    """Arrivals per second between the 5th and 95th percentile arrival (ramp-up and tail left out)."""
    if len(times) < 20:
        return 0.0
    ordered = sorted(times)
    lo, hi = int(0.05 * len(ordered)), int(0.95 * len(ordered))
    span = ordered[hi] - ordered[lo]
    return (hi - lo) / span if span > 0 else 0.0


def timeline(times: Sequence[float], origin: float) -> list[int]:
    """Arrivals per whole second since ``origin``."""
    if not times:
        return []
    counts = [0] * (int(max(times) - origin) + 1)
    for t in times:
        counts[max(0, int(t - origin))] += 1
    return counts


def stage_latencies(expected: dict[str, str], published: dict[str, float], routed: dict[str, tuple[str, int]],
                    arrived: dict[str, float]) -> dict[str, dict[str, float]]:
    """Where the time goes: publish -> delivery record produced by the router (its record timestamp)
    -> arrival at the receiver. p50 and p99 of each, ms."""
    router, delivery = [], []
    for d, e in expected.items():
        if d in routed and d in arrived:
            at = routed[d][1] / 1000
            router.append((at - published[e]) * 1000)
            delivery.append((arrived[d] - at) * 1000)
    router.sort()
    delivery.sort()
    return {"publish_to_routed": {"p50": round(percentile(router, 0.5), 1), "p99": round(percentile(router, 0.99), 1)},
            "routed_to_arrival": {"p50": round(percentile(delivery, 0.5), 1),
                                  "p99": round(percentile(delivery, 0.99), 1)}}


def latency_by_second(expected: dict[str, str], published: dict[str, float],
                      arrived: dict[str, float]) -> list[dict[str, float]]:
    """Publish-to-arrival latency of the events published in each whole second of a paced run: whether its
    tail is spread over the run or gathered in a few seconds (a burst, a pause). ms."""
    if not published:
        return []
    origin = min(published.values())
    seconds: dict[int, list[float]] = {}
    for d, e in expected.items():
        if d in arrived:
            seconds.setdefault(int(published[e] - origin), []).append((arrived[d] - published[e]) * 1000)
    rows = []
    for second, values in sorted(seconds.items()):
        values.sort()
        rows.append({"s": second, "n": len(values), "p50": round(percentile(values, 0.5), 1),
                     "p99": round(percentile(values, 0.99), 1), "max": round(values[-1], 1)})
    return rows


def with_speed(by_second: list[dict[str, float]], cpu_rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Each second's row of a paced run with the machine's speed in it (``probe_ms``: the median of the
    CPU timeline's probes that ended within it, a probe stamped 1.0 ending second 0; absent where none did)."""
    probes: dict[int, list[float]] = {}
    for row in cpu_rows:
        if "probe_ms" in row:
            probes.setdefault(math.ceil(row["s"]) - 1, []).append(row["probe_ms"])
    for row in by_second:
        found = sorted(probes.get(int(row["s"]), ()))
        if found:
            row["probe_ms"] = round(percentile(found, 0.5), 3)
    return by_second


CPU_SAMPLE_S = 0.25  # a paced run's CPU timeline: cores per process group in each quarter second


async def sample_cpu(pids: dict[str, list[int]], rows: list[dict[str, float]], origin: float) -> None:
    """Until cancelled, append the cores each group of ``pids`` and the whole machine used in every
    ``CPU_SAMPLE_S`` (``s``: seconds since ``origin`` at the sample's end), and the machine's speed then
    (``probe_ms``: ``vm_speed.probe`` once, about half a millisecond of CPU). A latency tail gathered in
    a few seconds can then be matched to who was busy (a machine at two full cores, a broker's burst) and
    to a slower period of the machine itself."""
    last, busy, at = {name: cpu_seconds(group) for name, group in pids.items()}, machine_busy_seconds(), time.time()
    while True:
        await asyncio.sleep(CPU_SAMPLE_S)
        now = time.time()
        span = max(now - at, 1e-3)
        current, machine = {name: cpu_seconds(group) for name, group in pids.items()}, machine_busy_seconds()
        rows.append({"s": round(now - origin, 2), "machine": round((machine - busy) / span, 2),
                     **{name: round(max(0.0, current[name] - last[name]) / span, 2) for name in pids},
                     "probe_ms": vm_speed.probe(tries=1)})
        last, busy, at = current, machine, now


class Snapshots:
    """CPU seconds of a set of processes at named moments."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.at: dict[str, dict[str, float]] = {}

    def add(self, name: str, pids: list[int]) -> None:
        """Processes started after the moments already taken: they had used no CPU at those."""
        self.pids[name] = pids
        for moment in self.at.values():
            moment[name] = 0.0

    def take(self, moment: str) -> None:
        self.at[moment] = {name: cpu_seconds(pids) for name, pids in self.pids.items()}
        self.at[moment]["_busy"] = machine_busy_seconds()
        self.at[moment]["_wall"] = time.time()

    def delta(self, start: str, end: str) -> dict[str, float]:
        return {name: self.at[end][name] - self.at[start][name] for name in self.pids}

    def other_cores(self, start: str, end: str) -> float:
        """Cores busy with processes not ours between two moments: noise from whoever shares the machine."""
        a, b = self.at[start], self.at[end]
        ours = sum(b[n] - a[n] for n in self.pids)
        return max(0.0, (b["_busy"] - a["_busy"] - ours) / max(b["_wall"] - a["_wall"], 1e-3))


async def watch(log: ArrivalLog, expected: dict[str, str], roles: Sequence[Role], *, stall_s: float,
                deadline_s: float, on_tick: Callable[[], None] | None = None) -> str:
    """Follow the arrival log until every expected delivery arrived. Returns why it stopped."""
    started = last_progress = time.monotonic()
    lines = 0
    while True:
        await asyncio.sleep(0.5)
        new = log.poll()
        if on_tick is not None:
            on_tick()
        for role in roles:
            if role.proc.poll() is not None:
                return f"{role.name} exited with {role.proc.returncode}"
        now = time.monotonic()
        if new:
            lines += new
            last_progress = now
            if all(d in log.first for d in expected):
                return "complete"
        elif now - last_progress > stall_s:
            return f"stalled: no arrival for {stall_s:.0f} s"
        if now - started > deadline_s:
            return f"deadline of {deadline_s:.0f} s reached"


Offsets = dict[Any, int]  # TopicPartition -> offset


async def end_offsets(settings: Settings, topics: Sequence[str]) -> Offsets:
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        ends: Offsets = {}
        for topic in topics:
            ends.update(await kafka.end_offsets(consumer, topic))
        return ends


async def read_deliveries(settings: Settings, topics: Sequence[str],
                          start: Offsets | None = None) -> dict[str, dict[str, tuple[str, int]]]:
    """topic -> {delivery id: (webhook id, record timestamp in ms)} of the delivery records in
    ``topics`` from ``start`` (default: the beginning) up to their end offsets now."""
    out: dict[str, dict[str, tuple[str, int]]] = {t: {} for t in topics}
    start = start or {}
    consumer = kafka.consumer(settings, group_id=None, max_poll_records=5000)
    async with kafka.started(consumer):
        ends: Offsets = {}
        for topic in topics:
            ends.update(await kafka.end_offsets(consumer, topic))
        todo = {tp: end for tp, end in ends.items() if end > start.get(tp, 0)}
        if not todo:
            return out
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, start.get(tp, 0))
        deadline = time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    values = h.to_dict(record.headers)
                    out[tp.topic][values.get(h.DELIVERY_ID, "?")] = (values.get(h.WEBHOOK_ID, "?"), record.timestamp)
                if await consumer.position(tp) >= todo.get(tp, 0):
                    todo.pop(tp, None)
    return out


# ------------------------------------------------------------------ one scenario


class ScenarioRun:
    def __init__(self, config: RunConfig, scenario: Scenario, say: Callable[[str], None]) -> None:
        self.config = config
        self.scenario = scenario
        self.say = say
        self.prefix = f"bench{time.strftime('%H%M%S')}{scenario.name}{uuid.uuid4().hex[:4]}"
        self.dir = config.work / scenario.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = pipeline_env(config, self.prefix)
        self.settings = settings_for(self.env)
        self.workload = Workload.plan(webhooks=config.webhooks, fanout=config.fanout,
                                      hang_fraction=scenario.hang_fraction, seed=config.seed)
        self.roles: list[Role] = []
        self.nginx: Nginx | None = None
        self.py: PyReceiver | None = None

    # -- setup

    def url_of(self, hook: Hook) -> str:
        if hook.hanging:
            assert self.py is not None
            return f"{self.py.url}/hang/{hook.id}"
        if self.scenario.receiver == "nginx":
            assert self.nginx is not None
            return f"{self.nginx.url}/hooks/{hook.id}"
        assert self.py is not None
        return f"{self.py.url}/slow/{self.scenario.delay_ms}/{hook.id}"

    def start_receivers(self) -> None:
        if self.scenario.receiver == "nginx":
            self.nginx = Nginx(self.dir / "nginx", free_port()).start()
        if self.scenario.receiver == "python" or self.scenario.hang_fraction:
            procs = self.config.receiver_procs if self.scenario.receiver == "python" else 1
            self.py = PyReceiver(self.dir / "py", free_port(), procs=procs,
                                 hang_s=self.config.timeout_s * 6).start()

    def receiver_pids(self) -> list[int]:
        return [*(self.nginx.pids if self.nginx else []), *(self.py.pids if self.py else [])]

    def arrival_log(self) -> ArrivalLog:
        globs = [r.log_glob for r in (self.nginx, self.py) if r is not None]
        return ArrivalLog(*globs)

    async def create_webhooks(self) -> None:
        await kafka.ensure_topics(self.settings)
        hooks = self.workload.hooks
        async with running_store(self.settings) as store:
            for i in range(0, len(hooks), 2000):  # bounded: 100,000 puts at once overflow the producer's buffer
                chunk = hooks[i:i + 2000]
                await asyncio.gather(*(store.put(webhook_record(hook, self.url_of(hook))) for hook in chunk))

    async def start_pipeline(self) -> None:
        """The delivery processes first, until their consumer group has formed, then the routers.

        A backlog then reaches a running delivery group, as a burst does in production. Started together,
        a second delivery process could join the group after the first had its partitions and rebalance
        it in the middle of the drain: a start-up cost a long-running group does not pay, and not the
        pipeline's rate."""
        deliveries = [start_role("delivery", i, self.env, self.dir) for i in range(self.config.delivery_procs)]
        self.roles.extend(deliveries)
        await wait_ready(deliveries)
        for i in range(self.config.router_procs):
            self.roles.append(start_role("router", i, self.env, self.dir))

    def stop_all(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for role in self.roles:  # SIGTERM all first: they drain in parallel
            if role.proc.poll() is None:
                role.proc.terminate()
        for role in self.roles:
            codes[role.name] = stop_process(role.proc, grace=30, signalled=True)
        for receiver in (self.nginx, self.py):
            if receiver is not None:
                receiver.stop()
        return codes

    # -- phases

    async def publish_backlog(self, events: Sequence[OutgoingEvent]) -> float:
        started = time.perf_counter()
        async with Publisher(self.settings, source=SOURCE) as publisher:
            for i in range(0, len(events), 5000):
                await publisher.send_prepared(events[i:i + 5000])
        return time.perf_counter() - started

    async def publish_paced(self, events: Sequence[OutgoingEvent],
                            rate: float) -> tuple[dict[str, float], list[float]]:
        """Publish at ``rate`` events/s in 5 ms ticks.

        Returns event id -> publish time, and each tick's publish-to-acknowledgement time (ms).
        """
        stamps: dict[str, float] = {}
        acks: list[float] = []
        sends: list[asyncio.Task[None]] = []

        async def send(publisher: Publisher, chunk: Sequence[OutgoingEvent], stamp: float) -> None:
            await publisher.send_prepared(chunk)
            acks.append((time.time() - stamp) * 1000)

        async with Publisher(self.settings, source=SOURCE) as publisher:
            started, sent = time.time(), 0
            while sent < len(events):
                now = time.time()
                due = min(len(events), int((now - started) * rate) + 1)
                if due > sent:
                    chunk = events[sent:due]
                    for event in chunk:
                        stamps[event.event_id] = now
                    sends.append(asyncio.create_task(send(publisher, chunk, now)))
                    sent = due
                await asyncio.sleep(0.005)
            await asyncio.gather(*sends)
        return stamps, sorted(acks)

    async def run(self) -> dict[str, Any]:
        try:
            return await self._run()
        finally:
            if not self.config.keep_topics:
                await self._delete_topics()

    async def _run(self) -> dict[str, Any]:
        config, scenario, say = self.config, self.scenario, self.say
        result: dict[str, Any] = {"name": scenario.name, "title": scenario.title, "prefix": self.prefix,
                                  "hanging_webhooks": sum(h.hanging for h in self.workload.hooks)}
        self.start_receivers()
        try:
            await self.create_webhooks()
            events = self.workload.events(config.events, seed=config.seed, body_bytes=config.body_bytes)
            expected = self.workload.healthy_ids(events)
            held = self.workload.held_ids(events)
            say(f"[{scenario.name}] publishing {len(events):,} events ({len(expected) + len(held):,} deliveries)")
            result["backlog_publish_s"] = round(await self.publish_backlog(events), 2)
            held |= await self._measure(result, expected, held)
        finally:
            result["exit_codes"] = self.stop_all()
        result["log_problems"] = {r.name: log_problems(r) for r in self.roles}
        result["parked"] = await self._parked(held)
        return result

    async def _delete_topics(self) -> None:
        """This run's topics, once it is counted (or failed). A ``make bench`` run makes about a dozen runs
        (warm-up rounds, scenarios, keep pairs) of 39 partitions each with its defaults: each then meets a
        broker with the same partitions, and a broker the benchmark did not start is left as it was found
        (a development broker holding thousands of them was measured stalling for up to a second in paced
        runs)."""
        try:
            await delete_topics(self.settings)
        except (KafkaError, OSError) as exc:
            self.say(f"[{self.scenario.name}] its topics ({self.prefix}.*) were not deleted: "
                     f"{type(exc).__name__}: {exc}")

    async def _parked(self, held: set[str]) -> dict[str, int]:
        """Deliveries in the retry tiers and the DLQ after the run (all, and those of hanging webhooks)."""
        topics = Topics.from_settings(self.settings)
        found = await read_deliveries(self.settings, [*topics.retry_topics, topics.dlq])
        retried = {d for t in topics.retry_topics for d in found[t]}
        dead = set(found[topics.dlq])
        return {"retried": len(retried), "dead_lettered": len(dead),
                "held_retried": len(retried & held), "held_dead_lettered": len(dead & held),
                "held_unaccounted": len(held - retried - dead)}

    async def _measure(self, result: dict[str, Any], expected: dict[str, str], held: set[str]) -> set[str]:
        """Drain, then paced; fills ``result``. Returns the held deliveries of the paced phase."""
        config, scenario, say = self.config, self.scenario, self.say
        log = self.arrival_log()
        log.poll()
        pids = {"receiver": self.receiver_pids(), "bench": [os.getpid()]}
        if config.broker_pid:
            pids["kafka"] = [config.broker_pid]
        snaps = Snapshots(pids)
        speed = {"before_drain": vm_speed.probe()}  # the machine's speed, ms (lower is faster)
        snaps.take("start")
        started = time.time()
        await self.start_pipeline()
        for role in self.roles:
            snaps.add(role.name, [role.proc.pid])
        await wait_ready(self.roles)
        ready = time.time()
        snaps.take("ready")
        say(f"[{scenario.name}] pipeline ready after {ready - started:.1f} s; draining")
        profilers = start_profilers(self.roles, config.profile_dir, scenario.name) if config.profile_dir else []
        deadline = max(300.0, 3 * config.events * config.fanout / 1000)
        try:
            reason = await watch(log, expected, self.roles, stall_s=config.stall_s, deadline_s=deadline)
        finally:
            stop_profilers(profilers)
        snaps.take("drained")
        drained = time.time()
        times = [log.first[d] for d in expected if d in log.first]
        rate = steady_rate(times)
        in_window = sum(1 for t in times if t >= ready)
        result["drain"] = {
            "stopped_because": reason, "expected": len(expected), "delivered": len(times),
            "missing": len(expected) - len(times), "sustained_per_s": round(rate),
            "overall_per_s": round(len(times) / (max(times) - min(times))) if len(times) > 1 else 0,
            "ready_s": round(ready - started, 2), "first_arrival_s": round(min(times) - started, 2) if times else None,
            "last_arrival_s": round(max(times) - started, 2) if times else None,
            "timeline": timeline(times, started),
            "other_load_cores": round(snaps.other_cores("ready", "drained"), 2),
            "cpu_s": {k: round(v, 2) for k, v in snaps.delta("ready", "drained").items()},
            "cpu_us_per_delivery": {k: round(v / in_window * 1e6, 1) for k, v in
                                    snaps.delta("ready", "drained").items()} if in_window else {},
        }
        say(f"[{scenario.name}] drain: {len(times):,}/{len(expected):,} healthy deliveries, "
            f"{rate:,.0f}/s sustained ({reason}); other processes used "
            f"{result['drain']['other_load_cores']} cores meanwhile")
        paced_expected: dict[str, str] = {}
        paced_held: set[str] = set()
        result["paced"] = None
        if rate > 0 and reason == "complete" and config.paced_s > 0:
            speed["before_paced"] = vm_speed.probe()
            result["paced"], paced_expected, paced_held = await self._paced(log, rate, snaps)
            speed["after_paced"] = vm_speed.probe()
        result["probe_ms"] = speed
        result["processes"] = self._process_stats(snaps)
        result["metrics"] = {r.name: await scrape_totals(r) for r in self.roles}
        await asyncio.sleep(0.3)
        log.poll()
        all_expected = {**expected, **paced_expected}
        result["duplicates"] = sum(log.repeats[d] for d in all_expected if d in log.repeats)
        result["duplicate_ids"] = sum(1 for d in all_expected if d in log.repeats)
        result["missing_total"] = sum(1 for d in all_expected if d not in log.first)
        result["unexpected_arrivals"] = len(set(log.first) - set(all_expected) - {"-"})
        result["other_statuses"] = dict(log.other)
        result["held"] = {"deliveries": len(held) + len(paced_held), "attempts_seen": sum(log.held.values()),
                          "distinct_seen": len(log.held)}
        result["after_drain_s"] = round(time.time() - drained, 1)
        return paced_held

    async def _paced(self, log: ArrivalLog, rate: float,
                     snaps: Snapshots) -> tuple[dict[str, Any], dict[str, str], set[str]]:
        config, say = self.config, self.say
        deliveries_per_event = sum(len(hs) for hs in self.workload.by_account.values()) / len(self.workload.by_account)
        target = self.config.paced_rate or rate / 2
        event_rate = target / deliveries_per_event
        count = max(10, int(event_rate * config.paced_s))
        events = self.workload.events(count, seed=config.seed + 1, start=1, body_bytes=config.body_bytes)
        expected = self.workload.healthy_ids(events)
        say(f"[{self.scenario.name}] paced: {count:,} events at {event_rate:,.0f}/s for {config.paced_s:.0f} s")
        deliveries_topic = Topics.from_settings(self.settings).deliveries
        offsets = await end_offsets(self.settings, [deliveries_topic])
        cpu_rows: list[dict[str, float]] = []
        jit = JitMeter(config.broker_pid)
        with generator_heap_frozen():
            snaps.take("paced_start")
            sampler = asyncio.ensure_future(sample_cpu(snaps.pids, cpu_rows, time.time()))
            try:
                stamps, acks = await self.publish_paced(events, event_rate)
                reason = await watch(log, expected, self.roles, stall_s=min(config.stall_s, 15), deadline_s=120)
            finally:
                sampler.cancel()
            snaps.take("paced_end")
        jit_used = jit.used()
        routed = (await read_deliveries(self.settings, [deliveries_topic], offsets))[deliveries_topic]
        stages = stage_latencies(expected, stamps, routed, log.first)
        latencies = sorted((log.first[d] - stamps[e]) * 1000 for d, e in expected.items() if d in log.first)
        by_second = with_speed(latency_by_second(expected, stamps, log.first), cpu_rows)
        worst = sorted(by_second, key=lambda row: row["p99"], reverse=True)[:3]
        latency = {"p50": round(percentile(latencies, 0.50), 1), "p95": round(percentile(latencies, 0.95), 1),
                   "p99": round(percentile(latencies, 0.99), 1),
                   "max": round(latencies[-1], 1) if latencies else None}
        out: dict[str, Any] = {"target_per_s": round(target), "events": count, "expected": len(expected),
               "delivered": len(latencies), "missing": len(expected) - len(latencies),
               "stopped_because": reason,
               "latency_ms": latency,
               "publish_ack_ms": {"p50": round(percentile(acks, 0.5), 1), "p99": round(percentile(acks, 0.99), 1)},
               "stages_ms": stages,
               "latency_by_second_ms": by_second,
               "cpu_timeline": cpu_rows,
               "broker_jit_cpu_s": jit_used,
               "cpu_s": {k: round(v, 2) for k, v in snaps.delta("paced_start", "paced_end").items()},
               "other_load_cores": round(snaps.other_cores("paced_start", "paced_end"), 2)}
        say(f"[{self.scenario.name}] paced: p50 {latency['p50']} ms, p95 {latency['p95']} ms, "
            f"p99 {latency['p99']} ms ({reason}); publish acks p50 {percentile(acks, 0.5):.1f} ms, "
            f"p99 {percentile(acks, 0.99):.1f} ms; stages {stages}; worst seconds (published at s, p99 ms) "
            f"{[(row['s'], row['p99']) for row in worst]}; machine at 1.9 cores or more in "
            f"{sum(1 for row in cpu_rows if row['machine'] >= 1.9)} of {len(cpu_rows)} quarter seconds"
            + (f"; the broker's JIT compiler used {jit_used} s of CPU" if jit_used is not None else ""))
        return out, expected, self.workload.held_ids(events)

    def _process_stats(self, snaps: Snapshots) -> dict[str, dict[str, Any]]:
        snaps.take("end")
        stats: dict[str, dict[str, Any]] = {}
        for name, pids in snaps.pids.items():
            if name == "bench":
                continue
            rss = [r for r in (peak_rss_mb(pid) for pid in pids) if r is not None]
            stats[name] = {"cpu_s": round(snaps.at["end"][name] - snaps.at["start"][name], 2),
                           "peak_rss_mb": round(sum(rss), 1) if rss else None}
        return stats
