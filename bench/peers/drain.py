"""The drain comparison: the pipeline and its peers, each alone, draining the same backlog.

Setup, once: fresh pipeline topics (own prefix, ``partitions`` partitions), one webhook (one
account) whose URL is an nginx answering ``200 {}`` at once, and a backlog of ``events`` Chatwoot
``message_created`` events published to the events topic. Then, for each system in turn:

1. a fresh nginx (the same configuration; its access log is the arrival log);
2. the system's processes started, each in its own session, on the events topic (every peer in
   its own consumer group, so each reads the whole backlog);
3. the clock runs from process start to the arrival of the last of the ``events`` distinct
   deliveries at nginx (its ``$msec``): drain deliveries/s = events / that time;
4. at that moment, CPU seconds (user + system, all threads, all processes of the session, reaped
   children included) and peak RSS (``VmHWM``, summed) of the system's processes;
5. SIGTERM; duplicates counted; for the pipeline, the deliveries found in retry tiers and the DLQ.

Systems: ``akece`` (``akece-webhooks run --role router`` and ``--role delivery``, production
defaults), ``camel-auto`` and ``camel-each`` (the Camel route with auto-commit, and committing
after each 2xx), ``naive`` (``bench.peers.naive``).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.e2e import Hook, read_deliveries, settings_for, start_role, webhook_record
from bench.fixtures import running_store
from bench.limits import machine_busy_seconds
from bench.peers import camel
from bench.receivers import ArrivalLog, Nginx, stop_process
from schemas.examples import example
from services.contract.deliveries import delivery_id
from services.contract.topics import Topics
from services.devtools.ports import free_port
from services.publisher.events import OutgoingEvent, prepare
from services.publisher.publisher import Publisher
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import new_webhook_id

ACCOUNT = 1000
CONVERSATIONS = 500
SOURCE = "akece://bench-peers"
EVENT = "message_created"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class System:
    key: str
    title: str


SYSTEMS = {s.key: s for s in (
    System("akece", "akece-webhooks, production defaults"),
    System("camel-auto", "Apache Camel route, kafka → http, 6 consumers, auto-commit"),
    System("camel-each", "the same Camel route committing after each 2xx"),
    System("naive", "naive Python loop: aiokafka getmany, one aiohttp POST awaited at a time per "
                    "partition, commit per batch"),
)}


# ------------------------------------------------------------------ process accounting


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def session_pids(leader: int) -> list[int]:
    """The live processes of ``leader``'s session (started with ``start_new_session=True``) and their
    descendants in sessions of their own (``--processes N`` children)."""
    parents: dict[int, int] = {}
    pids: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is None:
                continue
            parents[int(entry)] = int(fields[1])  # fields[1]: parent pid
            if int(fields[3]) == leader:  # fields[3]: session id
                pids.add(int(entry))
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in pids and pid not in pids}
        pids |= found
        grew = bool(found)
    return sorted(pids)


def session_cpu_seconds(leader: int) -> float:
    """User + system CPU of a session's live processes plus the children its leader reaped."""
    total = 0.0
    for pid in session_pids(leader):
        fields = _stat(pid)
        if fields is None:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
        if pid == leader:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
    return total / CLOCK_TICKS


def session_peak_rss_mb(leader: int) -> float:
    """Sum of the peak resident sets (``VmHWM``) of a session's live processes, MiB."""
    total_kb = 0
    for pid in session_pids(leader):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


# ------------------------------------------------------------------ the run


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def message_events(n: int, *, seed: int) -> list[OutgoingEvent]:
    """``n`` Chatwoot ``message_created`` events of one account over its conversations."""
    rng = random.Random(seed)
    return [prepare(example(EVENT, account_id=ACCOUNT, conversation_id=rng.randint(1, CONVERSATIONS)),
                    source=SOURCE) for _ in range(n)]


class PeersRun:
    """One drain comparison. ``run()`` returns the ``peers`` section of the results."""

    def __init__(self, *, bootstrap: str, work: Path, events: int, systems: Sequence[str],
                 partitions: int = 6, stall_s: float = 30.0, seed: int = 7, broker_pid: int | None = None,
                 akece_processes: int | None = None, say: Callable[[str], None] = print) -> None:
        unknown = [s for s in systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown system(s) {unknown}: choose from {', '.join(SYSTEMS)}")
        self.bootstrap, self.work, self.events, self.systems = bootstrap, work, events, list(systems)
        self.partitions, self.stall_s, self.seed, self.say = partitions, stall_s, seed, say
        self.broker_pid = broker_pid
        # None: ``run --role router`` and ``run --role delivery`` (one process each); N: the ``router``
        # command (one process) and ``deliver --processes N`` (a parent and N children in the group).
        self.akece_processes = akece_processes
        self.prefix = f"peers{time.strftime('%H%M%S')}{uuid.uuid4().hex[:4]}"
        self.env = self._akece_env()
        self.settings: Settings = settings_for(self.env)
        self.topics = Topics.from_settings(self.settings)
        self.hook = Hook(new_webhook_id(), ACCOUNT)

    def _akece_env(self) -> dict[str, str]:
        """Production defaults; only what this machine needs (loopback receiver, local ports) is set.
        The caller's own ``AKECE_*`` settings win, as in the scenarios."""
        defaults = {"AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8", "AKECE_METRICS_HOST": "127.0.0.1",
                    "AKECE_API_HOST": "127.0.0.1"}
        env = {**defaults, **os.environ}
        env.update({"AKECE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "AKECE_TOPIC_PREFIX": self.prefix,
                    "AKECE_KAFKA_PARTITIONS": str(self.partitions)})
        return env

    async def run(self) -> dict[str, Any]:
        self.work.mkdir(parents=True, exist_ok=True)
        camel_reason = None
        if any(s.startswith("camel") for s in self.systems):
            try:
                camel.ensure_built(self.say)
            except camel.CamelUnavailable as exc:
                camel_reason = str(exc)
                self.say(f"Camel peer skipped: {camel_reason}")
        first_nginx = Nginx(self.work / "nginx-0", free_port()).start()
        try:
            await kafka.ensure_topics(self.settings)
            await self._create_webhook(f"{first_nginx.url}/hooks/{self.hook.id}")
            events = message_events(self.events, seed=self.seed)
            self.say(f"[peers] publishing {len(events):,} {EVENT} events to {self.topics.events}")
            started = time.perf_counter()
            async with Publisher(self.settings, source=SOURCE) as publisher:
                for i in range(0, len(events), 5000):
                    await publisher.send_prepared(events[i:i + 5000])
            publish_s = time.perf_counter() - started
        except BaseException:
            first_nginx.stop()
            raise
        results: list[dict[str, Any]] = []
        try:
            for key in self.systems:
                if key.startswith("camel") and camel_reason:
                    results.append({"system": key, "title": SYSTEMS[key].title, "skipped": camel_reason})
                    continue
                # The webhook's URL is the first nginx's: the pipeline delivers there; each peer gets its own.
                nginx = first_nginx if key == "akece" else Nginx(self.work / f"nginx-{key}", free_port()).start()
                try:
                    results.append(await self._drain(key, events, nginx))
                finally:
                    nginx.stop()
        finally:
            first_nginx.stop()
        return {"events": self.events, "event_type": EVENT, "webhooks": 1, "partitions": self.partitions,
                "avg_event_bytes": round(sum(len(e.value) for e in events) / max(len(events), 1)),
                "backlog_publish_s": round(publish_s, 2), "prefix": self.prefix, "systems": results,
                "ratios": ratios(results)}

    async def _create_webhook(self, url: str) -> None:
        async with running_store(self.settings) as store:
            await store.put(webhook_record(self.hook, url))

    def _start(self, key: str, url: str, directory: Path) -> list[Proc]:
        directory.mkdir(parents=True, exist_ok=True)
        if key == "akece" and self.akece_processes:
            return [self._command("router", ["router", "--processes", "1"], directory),
                    self._command("delivery", ["deliver", "--processes", str(self.akece_processes)], directory)]
        if key == "akece":
            return [Proc(r.name, r.proc, r.log) for r in
                    (start_role("router", 0, self.env, directory), start_role("delivery", 0, self.env, directory))]
        group = f"{self.prefix}-{key}"
        if key == "naive":
            cmd = [sys.executable, "-m", "bench.peers.naive", "--bootstrap", self.bootstrap,
                   "--topic", self.topics.events, "--group", group, "--url", url]
        else:
            cmd = camel.command(bootstrap=self.bootstrap, topic=self.topics.events, group=group, url=url,
                                commit=key.removeprefix("camel-"), consumers=self.partitions)
        log = directory / f"{key}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        return [Proc(key, proc, log)]

    def _title(self, key: str) -> str:
        if key == "akece" and self.akece_processes:
            return f"akece-webhooks, `router` + `deliver --processes {self.akece_processes}`"
        return SYSTEMS[key].title

    def _command(self, name: str, argv: list[str], directory: Path) -> Proc:
        log = directory / f"{name}.log"
        env = {**self.env, "AKECE_METRICS_PORT": str(free_port()), "AKECE_API_PORT": str(free_port())}
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services", *argv], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return Proc(name, proc, log)

    def _expected(self, key: str, events: Sequence[OutgoingEvent]) -> set[str]:
        if key == "akece":
            return {delivery_id(e.event_id, self.hook.id) for e in events}
        return {e.event_id for e in events}  # the peers send the CloudEvents id as webhook-id

    async def _drain(self, key: str, events: Sequence[OutgoingEvent], nginx: Nginx) -> dict[str, Any]:
        expected = self._expected(key, events)
        log = ArrivalLog(nginx.log_glob)
        self.say(f"[peers] {key}: draining {len(expected):,} deliveries ({SYSTEMS[key].title})")
        busy0, own0 = machine_busy_seconds(), _own_cpu(nginx.pids, self.broker_pid)
        started = time.time()
        procs = self._start(key, f"{nginx.url}/hooks/{self.hook.id}", self.work / key)
        try:
            reason, cpu, rss = await self._watch(log, expected, procs)
            wall = time.time() - started
            other = max(0.0, (machine_busy_seconds() - busy0 - _own_cpu(nginx.pids, self.broker_pid) + own0
                              - sum(cpu.values())) / max(wall, 1e-3))
        finally:
            codes = {p.name: stop_process(p.proc, grace=30) for p in procs}
        nginx.stop()  # flushes its buffered access log
        log.poll()
        times = [log.first[d] for d in expected if d in log.first]
        last = max(times) if times else started
        drain_s = last - started
        total_cpu = sum(cpu.values())
        result: dict[str, Any] = {
            "system": key, "title": self._title(key), "stopped_because": reason,
            "expected": len(expected), "delivered": len(times), "missing": len(expected) - len(times),
            "duplicates": sum(log.repeats[d] for d in expected if d in log.repeats),
            "other_statuses": dict(log.other),
            "drain_s": round(drain_s, 2),
            "first_arrival_s": round(min(times) - started, 2) if times else None,
            "per_s": round(len(times) / drain_s) if times and drain_s > 0 else 0,
            "cpu_s": round(total_cpu, 2),
            "cpu_us_per_delivery": round(total_cpu / len(times) * 1e6, 1) if times else None,
            "peak_rss_mb": round(sum(rss.values()), 1),
            "processes": {name: {"cpu_s": round(cpu[name], 2), "peak_rss_mb": round(rss[name], 1),
                                 "cpu_us_per_delivery": round(cpu[name] / len(times) * 1e6, 1) if times else None}
                          for name in cpu},
            "exit_codes": codes, "other_load_cores": round(other, 2)}
        if key == "akece":
            result["parked"] = await self._parked(expected)
        self.say(f"[peers] {key}: {len(times):,}/{len(expected):,} in {drain_s:.1f} s = {result['per_s']:,}/s, "
                 f"{result['cpu_us_per_delivery']} µs CPU/delivery, {result['peak_rss_mb']} MB peak RSS "
                 f"({reason}; other processes used {result['other_load_cores']} cores)"
                 + (f"; retry tiers {result['parked']['retried']:,}, DLQ {result['parked']['dead_lettered']:,}"
                    if "parked" in result else ""))
        return result

    async def _watch(self, log: ArrivalLog, expected: set[str],
                     procs: Sequence[Proc]) -> tuple[str, dict[str, float], dict[str, float]]:
        """Until every expected delivery arrived (or a stall, or an exit): why, and each process's
        CPU seconds and peak RSS at that moment."""
        deadline = time.monotonic() + max(300.0, len(expected) / 200)
        last_progress = time.monotonic()
        reason = "complete"
        while True:
            await asyncio.sleep(0.1)
            if log.poll():
                last_progress = time.monotonic()
                if len(log.first) >= len(expected) and all(d in log.first for d in expected):
                    break
            exited = [p for p in procs if p.proc.poll() is not None]
            if exited:
                reason = f"{exited[0].name} exited with {exited[0].proc.returncode}: {exited[0].tail()}"
                break
            if time.monotonic() - last_progress > self.stall_s:
                reason = f"stalled: no arrival for {self.stall_s:.0f} s"
                break
            if time.monotonic() > deadline:
                reason = "deadline reached"
                break
        cpu = {p.name: session_cpu_seconds(p.proc.pid) for p in procs}
        rss = {p.name: session_peak_rss_mb(p.proc.pid) for p in procs}
        return reason, cpu, rss

    async def _parked(self, expected: set[str]) -> dict[str, Any]:
        """The pipeline's deliveries found in the retry tiers and the DLQ after its drain."""
        tiers = list(self.topics.retry_topics)
        found = await read_deliveries(self.settings, [*tiers, self.topics.dlq])
        per_tier = {t: len(set(found[t]) & expected) for t in tiers}
        return {"retried": len(set().union(*(set(found[t]) for t in tiers)) & expected),
                "dead_lettered": len(set(found[self.topics.dlq]) & expected),
                "retry_records_per_tier": {t: n for t, n in per_tier.items() if n}}


def _own_cpu(nginx_pids: Sequence[int], broker_pid: int | None) -> float:
    """CPU seconds of the harness itself, the receiver and a broker it started: not 'other load'."""
    from bench.limits import cpu_seconds

    return cpu_seconds([os.getpid(), *nginx_pids, *([broker_pid] if broker_pid else [])])


def ratios(systems: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """For each peer: the pipeline's drain rate and CPU per delivery divided by the peer's."""
    by_key = {s["system"]: s for s in systems if not s.get("skipped")}
    akece = by_key.get("akece")
    if not akece:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for key, peer in by_key.items():
        if key == "akece":
            continue
        delivery = (akece.get("processes", {}).get("delivery") or {}).get("cpu_us_per_delivery")
        out[key] = {"rate": _div(akece.get("per_s"), peer.get("per_s")),
                    "cpu_per_delivery": _div(akece.get("cpu_us_per_delivery"), peer.get("cpu_us_per_delivery")),
                    "delivery_worker_cpu_per_delivery": _div(delivery, peer.get("cpu_us_per_delivery")),
                    "peak_rss": _div(akece.get("peak_rss_mb"), peer.get("peak_rss_mb"))}
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None
