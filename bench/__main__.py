"""``python -m bench`` (``make bench``): the pipeline end to end against this machine's limits.

Starts an isolated Kafka broker on free ports in a temporary directory (or uses
``AKECE_KAFKA_BOOTSTRAP_SERVERS`` when set), measures the machine's bounds, runs each scenario with
the router and the delivery worker as separate ``akece-webhooks run --role ...`` processes, and
writes ``bench/results/<date>.json``, ``.md`` and ``.png``. One router process and, as ``deliver`` runs by
default, one delivery process per CPU (``--router-procs``, ``--delivery-procs``); the delivery processes
form their consumer group before the routers start, so a second one cannot rebalance it in the middle
of the drain.

Workload: ``--webhooks K`` webhooks over K/F accounts, ``--fanout F`` (default 1: every event goes
to exactly one webhook, the router's costliest case per delivery); each event goes to the F
webhooks of its account, so a run makes ``--events N`` x F deliveries.

Scenarios: ``instant`` (nginx answers 200 at once), ``slow50`` (an aiohttp receiver answers after
50 ms), ``hang5`` (5% of the webhooks hang past the delivery timeout, the rest answer at once).
Each: a backlog of N events drained (sustained deliveries/s), then a paced run at half that rate
(end-to-end latency: publish → arrival at the receiver). Before the bounds and the scenarios,
``--warmup`` unreported rounds of ``instant`` (by default until the broker's JIT compiler threads are
quiet, 2-8 rounds) let a freshly started broker's JVM finish compiling, so the bounds and the pipeline
are measured against the same warm broker.

Peers (``bench.peers``; part of a full run, skipped by ``--quick`` and ``--no-peers``, alone with
``--peers``): the pipeline with production defaults, an Apache Camel route (auto-commit, and
committing after each 2xx) and a naive aiokafka + aiohttp loop each drain the same backlog of
``--peers-events`` Chatwoot ``message_created`` events to one webhook (nginx): drain rate from
process start, CPU per delivery, peak RSS, and the ratios.

The machine's own speed (``bench.vm_speed``) is probed beside the bounds, around each drain and paced
run, around the peers and every quarter second of a paced run: on a VM whose cores change speed by up
to 2x from second to second, a figure means something only beside the speed it was measured at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import report, vm_speed
from bench.e2e import SCENARIOS, RunConfig, ScenarioRun, Workload
from bench.limits import JitMeter, http_probe, kafka_probe
from bench.peers.drain import SYSTEMS, PeersRun
from bench.receivers import Nginx, PyReceiver
from services.devtools.jars import kafka_version
from services.devtools.kafka_errors import PortInUseError
from services.devtools.kafka_local import LocalKafka
from services.devtools.ports import BOOTSTRAP_ENV, free_port
from services.shared import logging as logs
from services.shared.processes import cpu_count

PEERS_EVENTS = {"full": 50_000, "quick": 5_000}
# A broker's JVM compiles its hot paths in its first minutes, then runs them several times cheaper: in the
# instant scenario's paced run 2 minutes after start, the broker used 0.7-0.8 cores at 3,400 deliveries/s
# (0.4 of them its C2 compiler threads), where a warm one needs a fraction of that, and p99 was 160-670 ms
# against 71 ms warm. A production broker is warm; so is the benchmark's, after these rounds. Two rounds
# were not enough: on 2026-12-07 a fresh broker's compiler threads used 5.6, 2.3, 1.2, 0.5, 0.7, 0.3, 0.2 s
# of CPU in rounds 1-7 (bursts of 0.3-0.8 cores in the paced runs), the drain rose from 6,130 to
# 8,339/s and the paced p99 fell from 177 to 48-66 ms once they were under a second. So by default the
# rounds go on until the compiler is quiet (when the benchmark started the broker and can see it).
WARMUP_EVENTS = 40_000
WARMUP_PACED_S = 10.0
WARMUP_MIN_ROUNDS = 2
WARMUP_MAX_ROUNDS = 8
WARMUP_QUIET_JIT_S = 1.0  # the broker's JIT compiler CPU seconds in a round under which it counts as warm
KEEP_PAIRS = 2  # adjacent instant/hang5 drain pairs after the scenarios (hang5's keep without the drift)
QUICK = {"events": 10_000, "webhooks": 20, "paced_s": 6.0, "stall_s": 20.0, "probe_s": 3.0, "kafka_records": 20_000}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, help="events published per scenario (default 100000; quick 10000)")
    p.add_argument("--webhooks", type=int, help="webhooks K (default 100; quick 20)")
    p.add_argument("--fanout", type=int, default=1, help="webhooks per account F: each event goes to F webhooks")
    p.add_argument("--scenarios", default="instant,slow50,hang5", help=f"comma-separated of {', '.join(SCENARIOS)}")
    p.add_argument("--quick", action="store_true", help="a small smoke run (about 1-2 minutes)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="results directory")
    p.add_argument("--paced-s", type=float, help="length of the paced (latency) run (default 20 s; quick 6 s)")
    p.add_argument("--paced-rate", type=float,
                   help="deliveries/s of the paced run (default: half the scenario's sustained rate)")
    p.add_argument("--stall-s", type=float, help="give up a drain after this long without an arrival (default 30)")
    p.add_argument("--partitions", type=int, default=6, help="partitions of the pipeline topics")
    p.add_argument("--timeout-s", type=float, default=5.0, help="delivery timeout (AKECE_HTTP_TOTAL_TIMEOUT_S)")
    p.add_argument("--receiver-procs", type=int, default=1, help="processes of the Python (slow) receiver")
    p.add_argument("--router-procs", type=int, default=1, help="router processes")
    p.add_argument("--delivery-procs", type=int, default=None,
                   help="delivery processes (default: the CPU count, as `deliver` itself runs by default)")
    p.add_argument("--log-level", default="info", help="AKECE_LOG_LEVEL of the pipeline (the environment wins)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the router and delivery processes while they drain (raw stacks and a "
                        "summary under <out>/profiles/)")
    p.add_argument("--skip-limits", action="store_true", help="do not measure the machine's bounds")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory (logs, broker data) and "
                   "each run's topics (deleted once the run is counted otherwise)")
    p.add_argument("--peers", action="store_true",
                   help="run only the drain comparison with the peers (no limits, no scenarios)")
    p.add_argument("--no-peers", action="store_true", help="leave the drain comparison out of a full run")
    p.add_argument("--peers-events", type=int,
                   help=f"backlog of the drain comparison (default {PEERS_EVENTS['full']:,}; "
                        f"quick {PEERS_EVENTS['quick']:,})")
    p.add_argument("--peers-systems", default=",".join(SYSTEMS),
                   help=f"comma-separated systems of the drain comparison, in order, of {', '.join(SYSTEMS)}")
    p.add_argument("--peers-akece-processes", type=int, default=None, metavar="N",
                   help="the pipeline in the drain comparison as `router` + `deliver --processes N` (default: "
                        "`run --role router` and `run --role delivery`, one process each)")
    p.add_argument("--warmup", type=int, default=None, metavar="ROUNDS",
                   help=f"unreported rounds of the instant scenario ({WARMUP_EVENTS:,} events, {WARMUP_PACED_S:.0f} s "
                        "paced) before the bounds and the scenarios, so a freshly started broker's JIT "
                        f"compiler is done (default: until its compiler threads use under {WARMUP_QUIET_JIT_S:.0f} s "
                        f"of CPU in a round, {WARMUP_MIN_ROUNDS}-{WARMUP_MAX_ROUNDS} rounds, or "
                        f"{WARMUP_MIN_ROUNDS} on a broker it did not start; quick 0)")
    p.add_argument("--keep-pairs", type=int, default=None, metavar="N",
                   help="after the scenarios, N pairs of adjacent instant and hang5 drains, for hang5's keep "
                        f"without the machine's drift between scenarios (default {KEEP_PAIRS}; quick 0)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.keep_pairs is None:
        args.keep_pairs = 0 if args.quick else KEEP_PAIRS
    if args.keep_pairs < 0:
        p.error(f"--keep-pairs must be 0 or more, got {args.keep_pairs}")
    if args.delivery_procs is None:
        args.delivery_procs = cpu_count()
    if args.delivery_procs < 1:
        p.error(f"--delivery-procs must be at least 1, got {args.delivery_procs}")
    if args.warmup is None and args.quick:
        args.warmup = 0
    if args.peers and args.no_peers:
        p.error("--peers and --no-peers exclude each other")
    if args.peers_events is None:
        args.peers_events = PEERS_EVENTS["quick" if args.quick else "full"]
    if args.peers_events < 1:
        p.error(f"--peers-events must be at least 1, got {args.peers_events}")
    unknown_systems = [s for s in args.peers_systems.split(",") if s not in SYSTEMS]
    if unknown_systems:
        p.error(f"unknown peer system(s) {unknown_systems}: choose from {', '.join(SYSTEMS)}")
    for key in ("events", "webhooks", "paced_s", "stall_s"):
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else {"events": 100_000, "webhooks": 100,
                                                                "paced_s": 20.0, "stall_s": 30.0}[key])
    unknown = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}: choose from {', '.join(SCENARIOS)}")
    if args.fanout < 1 or args.webhooks % args.fanout:
        p.error("--webhooks must be a multiple of --fanout")
    return args


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@contextlib.contextmanager
def broker(work: Path) -> Iterator[tuple[str, int | None, str]]:
    """(bootstrap, broker pid or None, Kafka version): the configured cluster or an isolated local broker."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        say(f"using Kafka at {external} ({BOOTSTRAP_ENV})")
        yield external, None, "external"
        return
    kafka = LocalKafka(work / "kafka")
    say("starting an isolated Kafka broker...")
    for attempt in range(3):
        try:
            status = kafka.start(port=free_port(), controller_port=free_port())
            break
        except PortInUseError:
            if attempt == 2:
                raise
    try:
        assert status.bootstrap is not None
        say(f"broker {status.bootstrap} (pid {status.pid})")
        yield status.bootstrap, status.pid, kafka_version()
    finally:
        kafka.stop()


def machine(kafka: str) -> dict[str, Any]:
    import aiohttp
    import aiokafka

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    try:
        from importlib.metadata import version

        uv: str | None = version("uvloop")
    except ImportError:  # importlib.metadata.PackageNotFoundError
        uv = None
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 1024 / 1024),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "aiokafka": aiokafka.__version__, "aiohttp": aiohttp.__version__, "uvloop": uv, "kafka": kafka}


def measure_limits(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, work: Path) -> dict[str, Any]:
    records = int(QUICK["kafka_records"] if args.quick else min(args.events, 100_000))
    seconds = QUICK["probe_s"] if args.quick else 8.0
    speed = {"before": vm_speed.probe()}
    say(f"limit (a): aiokafka produce-then-consume of {records:,} records...")
    limits: dict[str, Any] = {"kafka": kafka_probe(bootstrap, records=records, partitions=args.partitions,
                                                         broker_pid=broker_pid)}
    say(f"  {limits['kafka']['per_s']:,} records/s (produce {limits['kafka']['produce_per_s']:,}/s, "
        f"consume {limits['kafka']['consume_per_s']:,}/s)")
    receivers: dict[str, Any] = {}
    with Nginx(work / "limits-nginx", free_port()) as nginx:
        say("limit (b): POST loop with the delivery sender's client, 64 concurrent, against nginx...")
        http = http_probe(f"{nginx.url}/hooks/probe", concurrency=64, seconds=seconds, receiver_pids=nginx.pids)
        say("  and the same loop with aiohttp's client, for reference...")
        limits["http_aiohttp"] = http_probe(f"{nginx.url}/hooks/probe", concurrency=64, seconds=seconds,
                                            receiver_pids=nginx.pids, client="aiohttp")
    limits["http"] = http
    say(f"  {http['per_s']:,} requests/s (aiohttp's client: {limits['http_aiohttp']['per_s']:,}/s); "
        f"nginx {http['receiver_cpu_us_per_request']} µs CPU/request")
    receivers["nginx, answers at once (1 worker)"] = {
        "capacity_per_s": http["receiver_capacity_per_core"],
        "detail": f"from its CPU while serving (b): {http['receiver_cpu_us_per_request']} µs/request, one core"}
    if "slow50" in args.scenarios.split(","):
        concurrency = int(os.environ.get("AKECE_DELIVERY_MAX_CONCURRENCY", "512")) * args.delivery_procs
        with PyReceiver(work / "limits-py", free_port(), procs=args.receiver_procs) as py:
            say(f"receiver capacity: aiohttp receiver answering after 50 ms, {concurrency} concurrent...")
            slow = http_probe(f"{py.url}/slow/50/probe", concurrency=concurrency, seconds=seconds,
                              receiver_pids=py.pids)
        cpu_bound = (slow["receiver_capacity_per_core"] or 0) * args.receiver_procs
        receivers[f"aiohttp, answers after 50 ms ({args.receiver_procs} process)"] = {
            "capacity_per_s": min(cpu_bound, concurrency / 0.05) if cpu_bound else None,
            "detail": f"{slow['per_s']:,}/s measured with {concurrency} concurrent (client-bound); "
                      f"{slow['receiver_cpu_us_per_request']} µs CPU/request",
            "measured": slow}
        say(f"  {slow['per_s']:,}/s measured; {slow['receiver_cpu_us_per_request']} µs CPU/request")
    limits["receivers"] = receivers
    speed["after"] = vm_speed.probe()
    limits["probe_ms"] = speed
    return limits


async def warm_up(rounds: int | None, config: RunConfig) -> list[dict[str, Any]]:
    """Unreported rounds of the instant scenario: ``rounds`` of them, or (``None``) until the broker's JIT
    compiler is quiet (``warmed``). Returns each round's drain rate and the compiler's CPU seconds."""
    warm = dataclasses.replace(config, events=min(config.events, WARMUP_EVENTS), paced_s=WARMUP_PACED_S,
                               paced_rate=None, profile_dir=None)
    done: list[dict[str, Any]] = []
    while not warmed(done, rounds, config.broker_pid):
        n = len(done) + 1
        say(f"warm-up {n} of {rounds if rounds is not None else f'up to {WARMUP_MAX_ROUNDS}'} (not reported): "
            f"the instant scenario, {warm.events:,} events")
        meter = JitMeter(config.broker_pid)
        result = await ScenarioRun(warm, SCENARIOS["instant"], say).run()
        jit = meter.used()
        done.append({"round": n, "drain_per_s": (result.get("drain") or {}).get("sustained_per_s"),
                     "broker_jit_cpu_s": jit})
        if jit is not None:
            say(f"warm-up {n}: the broker's JIT compiler used {jit} s of CPU")
    return done


def warmed(done: list[dict[str, Any]], rounds: int | None, broker_pid: int | None) -> bool:
    """Whether the warm-up is over: ``rounds`` run; else at least ``WARMUP_MIN_ROUNDS`` and the last one's
    compiler CPU under ``WARMUP_QUIET_JIT_S`` (or ``WARMUP_MAX_ROUNDS``); a broker the benchmark cannot see
    (no pid, or no compiler threads found) gets the minimum."""
    if rounds is not None:
        return len(done) >= rounds
    if len(done) < WARMUP_MIN_ROUNDS:
        return False
    last = done[-1]["broker_jit_cpu_s"]
    return broker_pid is None or last is None or last < WARMUP_QUIET_JIT_S or len(done) >= WARMUP_MAX_ROUNDS


async def run_scenarios(args: argparse.Namespace, config: RunConfig) -> list[dict[str, Any]]:
    results = []
    for name in args.scenarios.split(","):
        say(f"scenario {name}: {SCENARIOS[name].title}")
        results.append(await ScenarioRun(config, SCENARIOS[name], say).run())
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logs.configure(level="warning")  # this process's own clients (subscription table, publisher)
    work = Path(tempfile.mkdtemp(prefix="akece-bench-"))
    started = time.time()
    date = time.strftime("%Y-%m-%d")
    with_peers = args.peers or not (args.quick or args.no_peers)
    limits: dict[str, Any] = {}
    scenarios: list[dict[str, Any]] = []
    warmup: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    peers: dict[str, Any] | None = None
    try:
        with broker(work) as (bootstrap, broker_pid, kafka):
            if not args.peers:
                warmup, limits, scenarios, pairs = run_pipeline(args, bootstrap, broker_pid, work)
            if with_peers:
                say(f"peers: each system drains {args.peers_events:,} events alone")
                speed = {"before": vm_speed.probe()}
                peers = asyncio.run(PeersRun(bootstrap=bootstrap, work=work / "peers", events=args.peers_events,
                                             systems=args.peers_systems.split(","), partitions=args.partitions,
                                             stall_s=args.stall_s, seed=args.seed, broker_pid=broker_pid,
                                             akece_processes=args.peers_akece_processes, say=say).run())
                peers["probe_ms"] = {**speed, "after": vm_speed.probe()}
    finally:
        if args.keep_work:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sample = Workload.plan(webhooks=args.webhooks, fanout=args.fanout).events(2000, seed=args.seed)
    meta = {"date": date, "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "duration_s": round(time.time() - started), "machine": machine(kafka),
            "config": {"events": args.events, "webhooks": args.webhooks, "fanout": args.fanout,
                       "accounts": args.webhooks // args.fanout, "partitions": args.partitions,
                       "timeout_s": args.timeout_s, "paced_s": args.paced_s, "quick": args.quick,
                       "log_level": os.environ.get("AKECE_LOG_LEVEL", args.log_level),
                       "router_procs": args.router_procs, "delivery_procs": args.delivery_procs,
                       "receiver_procs": args.receiver_procs,
                       "warmup": {"rounds": len(warmup), "requested": args.warmup,
                                  "events": min(args.events, WARMUP_EVENTS), "paced_s": WARMUP_PACED_S,
                                  "quiet_jit_cpu_s": WARMUP_QUIET_JIT_S, "each": warmup},
                       "avg_event_bytes": round(sum(len(e.value) for e in sample) / len(sample)),
                       "keep_pairs": {"requested": args.keep_pairs, "each": pairs},
                       "akece_env": {k: v for k, v in os.environ.items() if k.startswith("AKECE_")}}}
    result = report.build(limits, scenarios, meta, peers)
    stem = date + ("-peers" if args.peers else "-quick" if args.quick else "")
    if args.peers and args.peers_akece_processes:
        stem += f"-processes{args.peers_akece_processes}"
    paths = report.write(result, args.out, stem)
    print()
    print(report.markdown(result))
    if args.profile:
        for path in sorted((args.out / "profiles").glob("*.txt")):
            print(report.profile_summary(path))
    say(f"results: {', '.join(str(p) for p in paths.values())} ({result['duration_s']} s)")
    return 0 if all(t["met"] for t in result["targets"] if t["name"].startswith("loss")) else 1


def run_pipeline(args: argparse.Namespace, bootstrap: str, broker_pid: int | None,
                 work: Path) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The machine's bounds, the scenarios and the keep pairs, all on a broker the warm-up rounds warmed."""
    config = RunConfig(bootstrap=bootstrap, work=work, broker_pid=broker_pid, events=args.events,
                       webhooks=args.webhooks, fanout=args.fanout, paced_s=args.paced_s,
                       stall_s=args.stall_s, partitions=args.partitions,
                       receiver_procs=args.receiver_procs, router_procs=args.router_procs,
                       delivery_procs=args.delivery_procs, timeout_s=args.timeout_s, seed=args.seed,
                       paced_rate=args.paced_rate,
                       profile_dir=args.out / "profiles" if args.profile else None,
                       env={"AKECE_LOG_LEVEL": args.log_level}, keep_topics=args.keep_work)
    warmup = asyncio.run(warm_up(args.warmup, config))
    limits = {} if args.skip_limits else measure_limits(args, bootstrap, broker_pid, work)
    scenarios = asyncio.run(run_scenarios(args, config))
    names = args.scenarios.split(",")
    pairs = args.keep_pairs if "instant" in names and "hang5" in names else 0
    return warmup, limits, scenarios, asyncio.run(keep_pairs(pairs, config))


async def keep_pairs(pairs: int, config: RunConfig) -> list[dict[str, Any]]:
    """hang5's healthy rate against instant's in adjacent drains (no paced phase): ``pairs`` of them, in
    turn instant first and hang5 first. The scenarios run minutes apart, and this VM's speed drifts by
    as much as the 10% the keep is about; a pair's two drains are seconds apart."""
    drain = dataclasses.replace(config, paced_s=0, paced_rate=None, profile_dir=None)
    done: list[dict[str, Any]] = []
    for n in range(1, pairs + 1):
        rates: dict[str, int | None] = {}
        order = ("instant", "hang5") if n % 2 else ("hang5", "instant")
        for name in order:
            say(f"keep pair {n} of {pairs}: {name} drain, {drain.events:,} events")
            result = await ScenarioRun(drain, SCENARIOS[name], say).run()
            rates[name] = (result.get("drain") or {}).get("sustained_per_s")
        instant, hang = rates["instant"], rates["hang5"]
        keep = round(hang / instant, 3) if instant and hang else None
        done.append({"pair": n, "first": order[0], "instant_per_s": instant, "hang5_per_s": hang, "keep": keep})
        say(f"keep pair {n}: instant {instant}/s, hang5 {hang}/s, keep {keep}")
    return done


if __name__ == "__main__":
    sys.exit(main())
