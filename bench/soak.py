"""Soak: a long steady load with failing webhooks and a broker restart; do the processes stay flat?

``python -m bench.soak`` (or ``make soak``): its own Kafka broker (``LocalKafka`` on free ports, its
own data dir), nginx as the receiver, ``akece-webhooks run --role router`` and ``--role delivery``
as real processes, and a paced publisher, for ``--minutes`` at ``--rate`` deliveries/s.
``--failing-fraction`` of the webhooks (at least one) answer 500 to every request: their deliveries
go through the retry tiers to the dead-letter topic. At ``--restart-at-minute`` the broker is
SIGKILLed (``--restart-signal term``: SIGTERM) and started again on the same ports and data dir;
no pipeline process is restarted, each rides out the outage on its own.

Every ``--sample-s`` (10 s) it samples, per process (router, delivery, broker): RSS
(``/proc/PID/status`` VmRSS), open file descriptors (``/proc/PID/fd``), CPU; per pipeline process
the asyncio task count (``akece_webhooks_asyncio_tasks`` from its ``/metrics``); the consumer lag
(end offsets minus committed) of the router group (events topic) and of the delivery group
(deliveries topic and retry tiers); deliveries arrived at the receiver.

At the end: every published event's deliveries are accounted for, at the receiver (healthy
webhooks: loss, duplicates) or in the dead-letter topic (failing webhooks). Flatness: the mean of
RSS, fds and tasks over minutes 5-10 against minutes 25-30 (for other lengths: the same sixths of
the run), within 10%; the lag back near zero after the restart.

Writes ``<out>/soak-<date>.json``, ``.md`` and ``.png``. The default rate, 640 deliveries/s, is half
the sustained rate of the instant scenario of ``make bench`` on a 2-core VM (1,289/s, 2026-12-03).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.e2e import Hook, RunConfig, Scenario, ScenarioRun, log_problems, percentile, read_deliveries
from bench.limits import cpu_seconds, machine_busy_seconds
from bench.receivers import ArrivalLog, Nginx
from services.contract.topics import Topics
from services.devtools.jars import kafka_version
from services.devtools.kafka_errors import PortInUseError
from services.devtools.kafka_local import LocalKafka
from services.devtools.ports import free_port
from services.publisher.events import OutgoingEvent
from services.publisher.publisher import Publisher
from services.shared import kafka
from services.shared.errors import AkeceError

HALF_SUSTAINED = 640.0  # deliveries/s: half of 1,289/s (make bench, instant receiver, 2-core VM, 2026-12-03)
FLAT_WITHIN = 0.10
FLAT_METRICS = ("rss_mb", "fds", "tasks")
ROLES = ("router", "delivery")
TASKS_LINE = "akece_webhooks_asyncio_tasks "
TICK_S = 0.05


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="how long events are published (default 30)")
    p.add_argument("--rate", type=float, default=HALF_SUSTAINED,
                   help=f"deliveries per second (default {HALF_SUSTAINED:g}: half the measured sustained rate)")
    p.add_argument("--webhooks", type=int, default=100, help="webhooks, one account each (default 100)")
    p.add_argument("--failing-fraction", type=float, default=0.01,
                   help="share of webhooks answering 500 to everything (default 0.01; at least one if > 0)")
    p.add_argument("--restart-at-minute", type=float, default=None,
                   help="restart the broker at this minute (default: the middle of the run; 0: no restart)")
    p.add_argument("--restart-signal", choices=("kill", "term"), default="kill",
                   help="how the broker is stopped: SIGKILL (default) or SIGTERM")
    p.add_argument("--sample-s", type=float, default=10.0, help="sampling interval (default 10 s)")
    p.add_argument("--partitions", type=int, default=6, help="partitions of the pipeline topics (default 6)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                   help="where the JSON, markdown and plot go (default bench/results)")
    p.add_argument("--name", default=None, help="file name stem (default soak-<date>)")
    p.add_argument("--note", default="", help="a line about the machine's conditions, kept in the results")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory (logs, broker data)")
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error("--minutes must be positive")
    if args.rate <= 0:
        p.error("--rate must be positive")
    if args.webhooks < 1:
        p.error("--webhooks must be at least 1")
    if not 0 <= args.failing_fraction < 1:
        p.error("--failing-fraction must be in [0, 1)")
    if args.sample_s <= 0:
        p.error("--sample-s must be positive")
    if args.restart_at_minute is None:
        args.restart_at_minute = args.minutes / 2
    if args.restart_at_minute < 0 or args.restart_at_minute >= args.minutes:
        p.error("--restart-at-minute must be within the run (0: no restart)")
    return args


# ------------------------------------------------------------------ process probes


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def receiver_connections(pid: int, port: int) -> int | None:
    """Established TCP connections of ``pid`` to ``127.0.0.1:<port>`` (the delivery worker's HTTP pool)."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                count += 1
        return count
    except (OSError, ValueError, IndexError):
        return None


async def asyncio_tasks(http: aiohttp.ClientSession, port: int) -> int | None:
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    for line in text.splitlines():
        if line.startswith(TASKS_LINE):
            return int(float(line[len(TASKS_LINE):]))
    return None


async def group_lag(run: SoakRun) -> dict[str, int | None]:
    """End offsets minus committed offsets of the router and delivery groups (None: broker away)."""
    topics = Topics.from_settings(run.settings)
    groups = {"router": (f"{run.prefix}.router", [topics.events]),
              "delivery": (f"{run.prefix}.delivery", topics.delivery_inputs)}

    async def measure() -> dict[str, int | None]:
        admin = kafka.admin(run.settings)
        consumer = kafka.consumer(run.settings, group_id=None)
        out: dict[str, int | None] = {}
        async with kafka.started(admin), kafka.started(consumer):
            for name, (group, names) in groups.items():
                committed = await admin.list_consumer_group_offsets(group)
                lag = 0
                for topic in names:
                    for tp, end in (await kafka.end_offsets(consumer, topic)).items():
                        meta = committed.get(tp)
                        lag += max(0, end - max(0, meta.offset if meta is not None else 0))
                out[name] = lag
        return out

    try:
        return await asyncio.wait_for(measure(), 8)
    except Exception:  # the broker may be away (AkeceError, KafkaError, timeout): no figure this time
        return {name: None for name in groups}


# ------------------------------------------------------------------ the run


@dataclass
class Restart:
    at_s: float
    signal: str
    down_at: float | None = None
    up_at: float | None = None
    error: str | None = None


class SoakRun(ScenarioRun):
    """A ``bench.e2e`` scenario whose hanging webhooks are failing ones (nginx answers 500)."""

    def url_of(self, hook: Hook) -> str:
        assert self.nginx is not None
        return f"{self.nginx.url}/{'fail' if hook.hanging else 'hooks'}/{hook.id}"

    def start_receivers(self) -> None:
        self.nginx = Nginx(self.dir / "nginx", free_port()).start()


class Soak:
    def __init__(self, args: argparse.Namespace, broker: LocalKafka, work: Path) -> None:
        self.args = args
        self.broker = broker
        status = broker.status()
        assert status.bootstrap is not None
        config = RunConfig(bootstrap=status.bootstrap, work=work, broker_pid=status.pid, webhooks=args.webhooks,
                           partitions=args.partitions, seed=args.seed, paced_s=0)
        self.run = SoakRun(config, Scenario("soak", "soak", "nginx", hang_fraction=args.failing_fraction), say)
        # The bench's own publisher waits out the restart instead of giving up after 30 s.
        self.publisher_env = {**self.run.env, "AKECE_KAFKA_SEND_TIMEOUT_S": "120"}
        self.stamps: dict[str, float] = {}  # healthy delivery id -> publish time
        self.failing: set[str] = set()
        self.unsure: set[str] = set()  # deliveries of events whose publish failed (some may have been written)
        self.published_events = 0
        self.publish_errors: list[str] = []
        self.samples: list[dict[str, Any]] = []
        self.restart = Restart(args.restart_at_minute * 60, args.restart_signal) if args.restart_at_minute else None
        self.t0 = 0.0
        self.log: ArrivalLog | None = None
        self.exits: dict[str, int | None] = {}

    # -- load

    async def publish(self, seconds: float) -> None:
        from bench.e2e import settings_for

        workload = self.run.workload
        per_event = sum(len(hs) for hs in workload.by_account.values()) / len(workload.by_account)
        event_rate = self.args.rate / per_event
        sends: set[asyncio.Task[None]] = set()

        async def send(publisher: Publisher, chunk: list[OutgoingEvent], ids: list[str]) -> None:
            try:
                await publisher.send_prepared(chunk)
            except AkeceError as exc:  # the publisher was told: not the pipeline's loss if they never arrive
                self.publish_errors.append(str(exc))
                self.unsure.update(ids)

        async with Publisher(settings_for(self.publisher_env), source="akece://bench") as publisher:
            started, sent, batch = time.time(), 0, 0
            total = int(event_rate * seconds)
            while sent < total:
                now = time.time()
                due = min(total, int((now - started) * event_rate) + 1)
                if due > sent:
                    chunk = workload.events(due - sent, seed=self.args.seed * 1_000_003 + batch, start=sent)
                    batch += 1
                    ids = []
                    for event in chunk:
                        for delivery, hook in workload.deliveries(event):
                            ids.append(delivery)
                            if hook.hanging:
                                self.failing.add(delivery)
                            else:
                                self.stamps[delivery] = now
                    task = asyncio.create_task(send(publisher, chunk, ids))
                    sends.add(task)
                    task.add_done_callback(sends.discard)
                    sent = due
                    self.published_events = sent
                await asyncio.sleep(TICK_S)
            if sends:
                await asyncio.gather(*sends)

    async def restart_broker(self) -> None:
        assert self.restart is not None
        await asyncio.sleep(max(0.0, self.t0 + self.restart.at_s - time.time()))
        status, proc = self.broker.status(), self.broker._proc
        say(f"restarting the broker (SIG{self.restart.signal.upper()} pid {status.pid})")
        try:
            assert status.pid is not None
            self.restart.down_at = time.time() - self.t0
            os.kill(status.pid, signal.SIGKILL if self.restart.signal == "kill" else signal.SIGTERM)
            if proc is not None:
                await asyncio.to_thread(proc.wait, 60)
            await asyncio.to_thread(self.broker.stop)  # forgets the pid file
            for attempt in range(3):
                try:
                    await self.broker.start_async()
                    break
                except PortInUseError:  # the old sockets may linger a moment
                    if attempt == 2:
                        raise
                    await asyncio.sleep(2)
            self.restart.up_at = time.time() - self.t0
            say(f"broker back after {self.restart.up_at - self.restart.down_at:.1f} s "
                f"(pid {self.broker.status().pid})")
        except Exception as exc:  # reported in the results
            self.restart.error = f"{type(exc).__name__}: {exc}"
            say(f"broker restart failed: {self.restart.error}")

    # -- sampling

    async def sample(self, http: aiohttp.ClientSession, previous: dict[str, Any] | None) -> dict[str, Any]:
        assert self.log is not None
        self.log.poll()
        now = time.time()
        pids = {r.name: r.proc.pid for r in self.run.roles}
        broker_pid = self.broker.status().pid
        roles: dict[str, dict[str, Any]] = {}
        for role in self.run.roles:
            alive = role.proc.poll() is None
            roles[role.name] = {"rss_mb": rss_mb(role.proc.pid) if alive else None,
                                "fds": open_fds(role.proc.pid) if alive else None,
                                "tasks": await asyncio_tasks(http, role.metrics_port) if alive else None,
                                "cpu_s": cpu_seconds([pids[role.name]]) if alive else None}
            if role.role == "delivery" and alive and self.run.nginx is not None:
                roles[role.name]["http_conns"] = receiver_connections(role.proc.pid, self.run.nginx.port)
        roles["kafka"] = {"rss_mb": rss_mb(broker_pid) if broker_pid else None,
                          "fds": open_fds(broker_pid) if broker_pid else None}
        lag = await group_lag(self.run)
        delivered = len(self.log.first) - ("-" in self.log.first)  # first 2xx arrivals (healthy deliveries)
        sample: dict[str, Any] = {"t_s": round(now - self.t0, 1), "roles": roles, "lag": lag,
                                  "published_events": self.published_events, "delivered": delivered,
                                  "busy_s": machine_busy_seconds()}
        if previous is not None:
            span = max(1e-3, now - self.t0 - previous["t_s"])
            sample["delivered_per_s"] = round((delivered - previous["delivered"]) / span, 1)
            for name in ROLES:
                a, b = previous["roles"].get(name, {}).get("cpu_s"), roles.get(name, {}).get("cpu_s")
                if a is not None and b is not None:
                    roles[name]["cpu_cores"] = round((b - a) / span, 2)
            sample["machine_cores"] = round((sample["busy_s"] - previous["busy_s"]) / span, 2)
        return sample

    async def sampler(self, stop: asyncio.Event) -> None:
        previous = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                sample = await self.sample(http, previous)
                self.samples.append(sample)
                previous = sample
                lag = sample["lag"]
                say(f"t={sample['t_s']:.0f}s delivered {sample['delivered']:,} "
                    f"({sample.get('delivered_per_s', 0):,.0f}/s) lag router {lag['router']} delivery "
                    f"{lag['delivery']}; " + ", ".join(
                        f"{n} {sample['roles'][n]['rss_mb']} MB {sample['roles'][n]['fds']} fds "
                        f"{sample['roles'][n]['tasks']} tasks" for n in ROLES if n in sample["roles"]))
                for role in self.run.roles:
                    if role.proc.poll() is not None and role.name not in self.exits:
                        self.exits[role.name] = role.proc.returncode
                        say(f"{role.name} exited with {role.proc.returncode}:\n{role.tail()}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.next_tick())
                    return

    def next_tick(self) -> float:
        """Seconds until the next multiple of the sampling interval since the start."""
        elapsed = time.time() - self.t0
        interval = float(self.args.sample_s)
        return max(0.05, interval - elapsed % interval)

    # -- the whole

    async def execute(self) -> dict[str, Any]:
        run, args = self.run, self.args
        run.start_receivers()
        try:
            await run.create_webhooks()
            self.log = run.arrival_log()
            self.log.poll()
            await run.start_pipeline()
            from bench.e2e import wait_ready

            await wait_ready(run.roles)
            say(f"pipeline ready; publishing {args.rate:g} deliveries/s for {args.minutes:g} min to "
                f"{args.webhooks} webhooks ({sum(h.hanging for h in run.workload.hooks)} failing)")
            self.t0 = time.time()
            stop_sampling = asyncio.Event()
            sampler = asyncio.create_task(self.sampler(stop_sampling))
            restarter = asyncio.create_task(self.restart_broker()) if self.restart else None
            await self.publish(args.minutes * 60)
            published_s = time.time() - self.t0
            say(f"published {self.published_events:,} events in {published_s:.0f} s; waiting for the tail")
            if restarter is not None:
                await restarter
            tail = await self.wait_tail()
            say(f"tail: {tail}")
            # Two more samples after the tail: where the processes settle with no load.
            await asyncio.sleep(self.next_tick() + 0.1)
            stop_sampling.set()
            await sampler
            result = await self.account(published_s, tail)
        finally:
            exit_codes = run.stop_all()
        result["exit_codes"] = exit_codes
        result["log_problems"] = {r.name: log_problems(r) for r in run.roles}
        return result

    async def wait_tail(self, stall_s: float = 60.0, deadline_s: float = 600.0) -> str:
        """Until every healthy delivery arrived and every failing one is dead-lettered."""
        assert self.log is not None
        started = last = time.monotonic()
        seen = len(self.log.first)
        dlq = Topics.from_settings(self.run.settings).dlq
        while time.monotonic() - started < deadline_s:
            await asyncio.sleep(1)
            self.log.poll()
            if len(self.log.first) > seen:
                seen, last = len(self.log.first), time.monotonic()
            if all(d in self.log.first for d in self.stamps if d not in self.unsure):
                dead = (await read_deliveries(self.run.settings, [dlq]))[dlq]
                if self.failing - self.unsure <= dead.keys():
                    return "complete"
            elif time.monotonic() - last > stall_s:
                return f"stalled: no arrival for {stall_s:.0f} s"
        return f"deadline of {deadline_s:.0f} s reached"

    async def account(self, published_s: float, tail: str) -> dict[str, Any]:
        assert self.log is not None
        log = self.log
        log.poll()
        topics = Topics.from_settings(self.run.settings)
        found = await read_deliveries(self.run.settings, [*topics.retry_topics, topics.dlq])
        dead = set(found[topics.dlq])
        retried = {d for t in topics.retry_topics for d in found[t]}
        # A delivery of an event whose publish failed counts only if it arrived (or was dead-lettered).
        healthy = {d: stamp for d, stamp in self.stamps.items() if d not in self.unsure or d in log.first}
        failing = self.failing - (self.unsure - dead)
        arrived = [log.first[d] for d in healthy if d in log.first]
        latencies = sorted((log.first[d] - stamp) * 1000 for d, stamp in healthy.items() if d in log.first)
        by_minute: dict[int, list[float]] = {}
        for d, stamp in healthy.items():
            if d in log.first:
                by_minute.setdefault(int((stamp - self.t0) // 60), []).append((log.first[d] - stamp) * 1000)
        return {
            "published_events": self.published_events, "published_s": round(published_s, 1),
            "publish_errors": self.publish_errors[:20], "publish_error_count": len(self.publish_errors),
            "publish_failed_deliveries": len(self.unsure),
            "publish_failed_not_arrived": len(self.stamps) + len(self.failing) - len(healthy) - len(failing),
            "tail": tail,
            "healthy": {"expected": len(healthy), "delivered": len(arrived),
                        "lost": sum(1 for d in healthy if d not in log.first),
                        "duplicates": sum(log.repeats[d] for d in healthy if d in log.repeats),
                        "duplicate_ids": sum(1 for d in healthy if d in log.repeats),
                        "dead_lettered": sum(1 for d in healthy if d in dead),
                        "delivered_per_s": round(len(arrived) / published_s, 1) if published_s else None},
            "failing": {"expected": len(failing), "dead_lettered": len(failing & dead),
                        "retried": len(failing & retried),
                        "unaccounted": len(failing - dead),
                        "attempts_answered_500": log.other.get(500, 0)},
            "unexpected_arrivals": len(set(log.first) - set(healthy) - {"-"}),
            "other_statuses": {str(k): v for k, v in log.other.items()},
            "latency_ms": {"p50": round(percentile(latencies, 0.5), 1), "p99": round(percentile(latencies, 0.99), 1),
                           "max": round(latencies[-1], 1) if latencies else None},
            "latency_by_minute_ms": {str(m): {"p50": round(percentile(sorted(v), 0.5), 1),
                                              "p99": round(percentile(sorted(v), 0.99), 1)}
                                     for m, v in sorted(by_minute.items())},
        }


# ------------------------------------------------------------------ verdicts, outputs


def window_mean(samples: list[dict[str, Any]], role: str, metric: str, lo_s: float, hi_s: float) -> float | None:
    values = [s["roles"].get(role, {}).get(metric) for s in samples if lo_s <= s["t_s"] < hi_s]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def flatness(samples: list[dict[str, Any]], minutes: float, *, early_from: float = 1 / 6,
             early_to: float = 1 / 3) -> dict[str, Any]:
    """Mean of each metric over the 2nd sixth of the run (minutes 5-10 of 30; other fractions with
    ``early_from``/``early_to``) against the last sixth (25-30)."""
    span = minutes * 60
    early, late = (span * early_from, span * early_to), (span * 5 / 6, span)
    out: dict[str, Any] = {"early_window_min": [round(early[0] / 60, 2), round(early[1] / 60, 2)],
                           "late_window_min": [round(late[0] / 60, 2), round(late[1] / 60, 2)],
                           "within": FLAT_WITHIN, "metrics": {}}
    flat = True
    for role in ROLES:
        for metric in FLAT_METRICS:
            a = window_mean(samples, role, metric, *early)
            b = window_mean(samples, role, metric, *late)
            change = (b - a) / a if a and b is not None else None
            ok = change is not None and abs(change) <= FLAT_WITHIN
            flat = flat and ok
            out["metrics"][f"{role}.{metric}"] = {"early": None if a is None else round(a, 1),
                                                  "late": None if b is None else round(b, 1),
                                                  "change": None if change is None else round(change, 3),
                                                  "flat": ok}
    out["flat"] = flat
    return out


def lag_verdict(samples: list[dict[str, Any]], restart: Restart | None, rate: float, sample_s: float,
                published_s: float) -> dict[str, Any]:
    """Lag is near zero when it is at most what arrives in one second at the rate (at least 100)."""
    near_zero = max(100, int(rate))
    out: dict[str, Any] = {"near_zero_at_most": near_zero}
    for group in ROLES:
        series = [(s["t_s"], s["lag"][group]) for s in samples if s["lag"][group] is not None]
        loaded = [v for t, v in series if t <= published_s]
        entry: dict[str, Any] = {"max": max((v for _, v in series), default=None),
                                 "mean_under_load": round(sum(loaded) / len(loaded), 1) if loaded else None,
                                 "last": series[-1][1] if series else None}
        if restart is not None and restart.up_at is not None:
            after = [(t, v) for t, v in series if t >= (restart.down_at or 0.0)]
            peak = max((v for _, v in after), default=None)
            back = next((t for t, v in after if t >= restart.up_at and v <= near_zero), None)
            entry.update({"peak_after_restart": peak,
                          "near_zero_after_restart_s": None if back is None else round(back - restart.up_at, 1)})
            entry["recovered"] = back is not None
        out[group] = entry
    out["recovered"] = all(out[g].get("recovered", True) for g in ROLES)
    return out


def build(args: argparse.Namespace, soak: Soak, totals: dict[str, Any], kafka_ver: str) -> dict[str, Any]:
    from bench.__main__ import machine

    samples = soak.samples
    for s in samples:
        s.pop("busy_s", None)
        for role in s["roles"].values():
            role.pop("cpu_s", None)
    published_s = totals.get("published_s", args.minutes * 60)
    flat = flatness(samples, args.minutes)
    # The same check between two windows both after the restart (minutes 20-25 and 25-30 of 30): what a
    # burst (the catch-up after the outage) raised and what keeps growing are told apart.
    flat_after = flatness(samples, args.minutes, early_from=2 / 3, early_to=5 / 6) if soak.restart else None
    lag = lag_verdict(samples, soak.restart, args.rate, args.sample_s, published_s)
    restart = None
    if soak.restart is not None:
        r = soak.restart
        restart = {"at_s": r.at_s, "signal": f"SIG{r.signal.upper()}", "down_at_s": r.down_at and round(r.down_at, 1),
                   "up_at_s": r.up_at and round(r.up_at, 1),
                   "outage_s": round(r.up_at - r.down_at, 1) if r.up_at and r.down_at else None, "error": r.error}
    healthy, failing = totals["healthy"], totals["failing"]
    no_loss = (healthy["lost"] == 0 and failing["unaccounted"] == 0 and healthy["dead_lettered"] == 0
               and not soak.exits)
    machine_cores = [s["machine_cores"] for s in samples if "machine_cores" in s]
    return {
        "date": time.strftime("%Y-%m-%d"), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soak.t0)),
        "machine": machine(kafka_ver), "note": args.note,
        "machine_busy_cores_mean": round(sum(machine_cores) / len(machine_cores), 2) if machine_cores else None,
        "config": {"minutes": args.minutes, "rate_per_s": args.rate, "webhooks": args.webhooks,
                   "failing_webhooks": sum(h.hanging for h in soak.run.workload.hooks),
                   "failing_fraction": args.failing_fraction, "partitions": args.partitions,
                   "sample_s": args.sample_s, "retry_schedule_s": soak.run.settings.retry.schedule,
                   "restart_at_minute": args.restart_at_minute or None, "restart_signal": args.restart_signal},
        "restart": restart, "totals": totals, "flatness": flat, "flatness_after_restart": flat_after, "lag": lag,
        "process_exits_during_run": soak.exits,
        "verdict": {"flat": flat["flat"], "lag_recovered": lag["recovered"], "nothing_lost": no_loss,
                    **({"flat_after_restart": flat_after["flat"]} if flat_after else {})},
        "samples": samples,
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(change: float | None) -> str:
    return "-" if change is None else f"{change:+.1%}"


def markdown(result: dict[str, Any]) -> str:
    cfg, totals, flat, lag = result["config"], result["totals"], result["flatness"], result["lag"]
    healthy, failing, m = totals["healthy"], totals["failing"], result["machine"]
    verdict = result["verdict"]
    lines = [f"# Soak, {result['date']}", "",
             f"{cfg['minutes']:g} minutes at {cfg['rate_per_s']:g} deliveries/s to {cfg['webhooks']} webhooks "
             f"({cfg['failing_webhooks']} answering 500 to everything), retry schedule "
             f"{', '.join(f'{s:g}' for s in cfg['retry_schedule_s'])} s, {cfg['partitions']} partitions; "
             f"1 router + 1 delivery process, nginx receiver, one local Kafka {m['kafka']} broker. "
             f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gb']} GB, Python {m['python']}; "
             f"all cores busy on average {fmt(result['machine_busy_cores_mean'])} "
             "(broker, pipeline, receiver, load generator and whatever else shares the machine).",
             ""]
    if result["note"]:
        lines += [result["note"], ""]
    r = result["restart"]
    if r:
        lines += [f"Broker restart: {r['signal']} at {fmt(r['down_at_s'])} s, serving again at {fmt(r['up_at_s'])} s "
                  f"(outage {fmt(r['outage_s'])} s){'; error: ' + r['error'] if r['error'] else ''}; "
                  "no pipeline process was restarted.", ""]
    lines += [
        f"**Verdict**: flat within {FLAT_WITHIN:.0%}: **{'yes' if verdict['flat'] else 'no'}**; "
        f"lag back near zero after the restart: **{'yes' if verdict['lag_recovered'] else 'no'}**; "
        f"nothing lost: **{'yes' if verdict['nothing_lost'] else 'no'}**.", "",
        "| delivered | delivered/s | lost | duplicates | failing webhooks' deliveries dead-lettered | "
        "healthy dead-lettered | latency p50 / p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {fmt(healthy['delivered'])} of {fmt(healthy['expected'])} | {fmt(healthy['delivered_per_s'])} | "
        f"{fmt(healthy['lost'])} | {fmt(healthy['duplicates'])} | {fmt(failing['dead_lettered'])} of "
        f"{fmt(failing['expected'])} | {fmt(healthy['dead_lettered'])} | {fmt(totals['latency_ms']['p50'])} / "
        f"{fmt(totals['latency_ms']['p99'])} ms |", "",
        f"Flatness: mean over minutes {flat['early_window_min'][0]:g}-{flat['early_window_min'][1]:g} against "
        f"{flat['late_window_min'][0]:g}-{flat['late_window_min'][1]:g}.", "",
        "| process | metric | early | late | change | flat |", "|---|---|---:|---:|---:|---|"]
    after = result.get("flatness_after_restart")
    if after:
        lines[-4] = lines[-4][:-1] + (f"; and, both after the restart, minutes {after['early_window_min'][0]:g}-"
                                      f"{after['early_window_min'][1]:g} against the same last window.")
        lines[-2] = "| process | metric | early | late | change | flat | after restart: early | change | flat |"
        lines[-1] = "|---|---|---:|---:|---:|---|---:|---:|---|"
    for key, entry in flat["metrics"].items():
        role, metric = key.split(".")
        row = (f"| {role} | {metric} | {fmt(entry['early'])} | {fmt(entry['late'])} | {pct(entry['change'])} | "
               f"{'yes' if entry['flat'] else '**no**'} |")
        if after:
            other = after["metrics"][key]
            row += f" {fmt(other['early'])} | {pct(other['change'])} | {'yes' if other['flat'] else '**no**'} |"
        lines.append(row)
    conns = [s["roles"].get("delivery", {}).get("http_conns") for s in result["samples"]]
    conns = [c for c in conns if c is not None]
    if conns:
        lines += ["", f"The delivery worker's connections to the receiver (part of its fds): "
                  f"min {min(conns)}, max {max(conns)}, last {conns[-1]}."]
    lines += ["", f"Consumer lag (records; near zero: at most {lag['near_zero_at_most']:,}):", "",
              "| group | mean under load | max | peak after restart | near zero again after | last |",
              "|---|---:|---:|---:|---:|---:|"]
    for group in ROLES:
        g = lag[group]
        back = g.get("near_zero_after_restart_s")
        lines.append(f"| {group} | {fmt(g['mean_under_load'])} | {fmt(g['max'])} | {fmt(g.get('peak_after_restart'))} "
                     f"| {'-' if back is None else f'{back:g} s'} | {fmt(g['last'])} |")
    if result["process_exits_during_run"]:
        lines += ["", f"Processes that exited during the run: {result['process_exits_during_run']}"]
    unsure = totals.get("publish_failed_not_arrived")
    lines += ["", f"Publish errors: {totals['publish_error_count']}"
              + (f" (their {unsure:,} deliveries that never arrived are not counted as expected)" if unsure else "")
              + f"; tail: {totals['tail']}."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    panels = [("RSS (MB)", "rss_mb"), ("open file descriptors", "fds"), ("asyncio tasks", "tasks")]
    fig, axes = plt.subplots(5, 1, figsize=(10, 13), sharex=True)
    for ax, (title, metric) in zip(axes, panels, strict=False):
        for role in (*ROLES, "kafka") if metric != "tasks" else ROLES:
            ys = [s["roles"].get(role, {}).get(metric) for s in samples]
            ax.plot(minutes, [float("nan") if y is None else y for y in ys], label=role)
        if metric == "fds":
            conns = [s["roles"].get("delivery", {}).get("http_conns") for s in samples]
            ax.plot(minutes, [float("nan") if c is None else c for c in conns], linestyle=":",
                    label="delivery: connections to the receiver")
        ax.set_ylabel(title)
        ax.legend(loc="upper left", fontsize=8)
    for group in ROLES:
        ys = [s["lag"][group] for s in samples]
        axes[3].plot(minutes, [float("nan") if y is None else y for y in ys], label=f"{group} group")
    axes[3].set_ylabel("consumer lag (records)")
    axes[3].legend(loc="upper left", fontsize=8)
    axes[4].plot(minutes, [s.get("delivered_per_s", float("nan")) for s in samples], label="delivered/s")
    axes[4].axhline(result["config"]["rate_per_s"] * (1 - result["config"]["failing_fraction"]), color="grey",
                    linestyle=":", label="target")
    axes[4].set_ylabel("delivered / s")
    axes[4].legend(loc="upper left", fontsize=8)
    axes[4].set_xlabel("minutes")
    flat = result["flatness"]
    r = result["restart"]
    for ax in axes:
        for lo, hi in (flat["early_window_min"], flat["late_window_min"]):
            ax.axvspan(lo, hi, color="0.92", zorder=0)
        if r and r["down_at_s"] is not None:
            ax.axvline(r["down_at_s"] / 60, color="red", linestyle="--", linewidth=1)
            if r["up_at_s"] is not None:
                ax.axvline(r["up_at_s"] / 60, color="green", linestyle="--", linewidth=1)
    cfg = result["config"]
    fig.suptitle(f"Soak {result['date']}: {cfg['minutes']:g} min at {cfg['rate_per_s']:g}/s, "
                 f"{cfg['failing_webhooks']} of {cfg['webhooks']} webhooks failing; broker restart red (down) / "
                 "green (up); grey: flatness windows", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(result: dict[str, Any], out: Path, stem: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown(result))
    try:
        plot(result, paths["png"])
    except ImportError:
        say("matplotlib is not installed (pip install -e '.[bench]'): no plot written")
        paths.pop("png")
    return paths


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the bench's own clients during the outage
    work = Path(tempfile.mkdtemp(prefix="akece-soak-"))
    broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
    say(f"starting the soak's own Kafka broker in {work}...")
    status = broker.start()
    say(f"broker {status.bootstrap} (pid {status.pid})")
    soak = Soak(args, broker, work)
    try:
        totals = asyncio.run(soak.execute())
    finally:
        broker.stop()
        if not args.keep_work:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"work directory kept: {work}")
    result = build(args, soak, totals, kafka_version())
    result["exit_codes"] = totals.pop("exit_codes", None)
    result["log_problems"] = totals.pop("log_problems", None)
    paths = write(result, args.out, args.name or f"soak-{result['date']}")
    print(markdown(result))
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if all(result["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
