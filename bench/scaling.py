"""``python -m bench.scaling`` (``make bench-scaling``): how the pipeline scales, one knob at a time.

Each point is one end-to-end run of ``bench.e2e`` (router and delivery as their own processes, the
``instant`` nginx receiver, a fresh set of topics) draining a backlog alone; one knob moves from the
base point (fan-out 1, 100 webhooks, the realistic event mix, one router and one delivery process):

- fan-out 1, 10, 100 (webhooks per account: each event goes to that many webhooks);
- body size 1 KB, 64 KB, 1 MB (every event a ``message_created`` padded to that size);
- webhooks 10, 1,000, 100,000 (fan-out 1: more webhooks, fewer deliveries each);
- delivery processes 1, 2;
- latency: publish-to-receiver percentiles paced at 25%, 50% and 75% of the base point's rate.

Per point: sustained deliveries/s, CPU µs per delivery of the router and of the delivery worker, the
delivery worker's peak RSS (with the body-size points this gives the memory an in-flight record
costs: the worker holds at most ``AKECE_DELIVERY_MAX_IN_FLIGHT`` records and
``AKECE_DELIVERY_MAX_IN_FLIGHT_BYTES`` bytes), loss and duplicates. Writes
``bench/results/scaling-<date>.json``, ``.md`` and ``.png``.

Starts an isolated broker unless ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` is set, like ``python -m bench``,
and warms it first as that does (``--warmup``). ``--quick`` shrinks every backlog tenfold (a smoke run
of the driver, not a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.__main__ import WARMUP_EVENTS, broker, machine, say, warm_up
from bench.e2e import SCENARIOS, RunConfig, ScenarioRun
from services.shared import logging as logs

KB = 1000


@dataclass(frozen=True)
class Point:
    curve: str
    label: str
    deliveries: int  # the backlog, in deliveries
    fanout: int = 1
    webhooks: int = 100
    body_bytes: int | None = None
    delivery_procs: int = 1
    paced_share: float | None = None  # pace at this share of the base rate (latency points)


def points(deliveries: int) -> list[Point]:
    base = Point("base", "fan-out 1, 100 webhooks, mixed events", deliveries)
    return [
        base,
        *(replace(base, curve="fanout", label=f"fan-out {f}", fanout=f) for f in (10, 100)),
        *(replace(base, curve="body", label=f"body {b // KB:,} KB", body_bytes=b, deliveries=n)
          for b, n in ((1 * KB, deliveries), (64 * KB, deliveries // 5), (1000 * KB, deliveries // 33))),
        *(replace(base, curve="webhooks", label=f"{w:,} webhooks", webhooks=w) for w in (10, 1000, 100_000)),
        replace(base, curve="processes", label="2 delivery processes", delivery_procs=2),
        *(replace(base, curve="latency", label=f"paced at {round(s * 100)}%", paced_share=s,
                  deliveries=deliveries // 4) for s in (0.25, 0.5, 0.75)),
    ]


def summary(point: Point, run: dict[str, Any], paced_rate: float | None) -> dict[str, Any]:
    drain = run.get("drain") or {}
    cpu = drain.get("cpu_us_per_delivery") or {}
    processes = run.get("processes") or {}
    paced = run.get("paced") or {}
    return {
        "curve": point.curve, "label": point.label, "fanout": point.fanout, "webhooks": point.webhooks,
        "body_bytes": point.body_bytes, "delivery_procs": point.delivery_procs,
        "deliveries": drain.get("expected"), "delivered": drain.get("delivered"),
        "sustained_per_s": drain.get("sustained_per_s"),
        "router_cpu_us": sum(v for k, v in cpu.items() if k.startswith("router")),
        "delivery_cpu_us": sum(v for k, v in cpu.items() if k.startswith("delivery")),
        "delivery_peak_rss_mb": sum(v.get("peak_rss_mb") or 0 for k, v in processes.items()
                                    if k.startswith("delivery")),
        "other_load_cores": drain.get("other_load_cores"),
        "paced_rate": round(paced_rate) if paced_rate else None,
        "latency_ms": paced.get("latency_ms"), "stages_ms": paced.get("stages_ms"),
        "missing": run.get("missing_total"), "duplicates": run.get("duplicates"),
        "retried": (run.get("parked") or {}).get("retried"),
    }


async def measure(config: RunConfig, chosen: list[Point]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    base_rate: float | None = None
    for point in chosen:
        events = max(10, point.deliveries // point.fanout)
        paced_rate = base_rate * point.paced_share if base_rate and point.paced_share else None
        cfg = replace(config, events=events, fanout=point.fanout, webhooks=point.webhooks,
                      body_bytes=point.body_bytes, delivery_procs=point.delivery_procs,
                      paced_s=config.paced_s if point.paced_share else 0.0, paced_rate=paced_rate)
        say(f"{point.curve}: {point.label} ({events:,} events, {events * point.fanout:,} deliveries)")
        try:
            run = await ScenarioRun(cfg, SCENARIOS["instant"], say).run()
        except Exception as exc:  # one point's failure is that point's row, not the whole run's
            say(f"  failed: {type(exc).__name__}: {exc}")
            run = {"error": f"{type(exc).__name__}: {exc}"}
        row = summary(point, run, paced_rate)
        row["error"] = run.get("error")
        rows.append(row)
        if point.curve == "base":
            base_rate = row["sustained_per_s"]
        say(f"  {row['sustained_per_s']:,}/s; router {row['router_cpu_us']} µs, delivery "
            f"{row['delivery_cpu_us']} µs CPU per delivery; delivery RSS {row['delivery_peak_rss_mb']} MB; "
            f"missing {row['missing']}, duplicates {row['duplicates']}"
            + (f"; latency {row['latency_ms']}" if row["latency_ms"] else ""))
    return rows


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Scaling, {result['date']}", "",
             f"{m['cpus']} cores ({m['cpu_model']}), {m['memory_gb']} GB, Python {m['python']}, "
             f"Kafka {m['kafka']}; `python -m bench.scaling` in {result['duration_s']} s; instant receiver "
             "(nginx); one router process.", "",
             "| curve | point | deliveries | deliveries/s | router µs | delivery µs | delivery RSS | "
             "p50 / p95 / p99 ms | missing / dup / retried |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["points"]:
        lat = r["latency_ms"] or {}
        latency = (f"{lat.get('p50')} / {lat.get('p95')} / {lat.get('p99')} at {r['paced_rate']:,}/s"
                   if lat else r.get("error") or "-")
        lines.append(f"| {r['curve']} | {r['label']} | {r['deliveries'] or 0:,} | {r['sustained_per_s'] or 0:,} | "
                     f"{r['router_cpu_us']:.0f} | {r['delivery_cpu_us']:.0f} | {r['delivery_peak_rss_mb']:.0f} MB | "
                     f"{latency} | {r['missing']} / {r['duplicates']} / {r['retried']} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [("fanout", "fan-out", "fanout"), ("body", "body bytes", "body_bytes"),
              ("webhooks", "webhooks", "webhooks"), ("processes", "delivery processes", "delivery_procs")]
    base = next((r for r in result["points"] if r["curve"] == "base"), None)
    fig, axes = plt.subplots(1, len(curves) + 1, figsize=(20, 4.2))
    for ax, (curve, title, key) in zip(axes, curves, strict=False):
        rows = [r for r in result["points"] if r["curve"] == curve]
        if base is not None and curve != "body":
            rows = [base, *rows]
        rows.sort(key=lambda r: r[key] or 2400)
        xs = [r[key] or 2400 for r in rows]
        ax.plot(xs, [r["sustained_per_s"] or 0 for r in rows], "o-", label="deliveries/s")
        ax.set(title=title, xlabel=title, ylabel="deliveries/s")
        if curve in ("fanout", "body", "webhooks"):
            ax.set_xscale("log")
        twin = ax.twinx()
        twin.plot(xs, [r["delivery_cpu_us"] for r in rows], "s--", color="tab:red", label="delivery µs")
        twin.plot(xs, [r["router_cpu_us"] for r in rows], "^--", color="tab:green", label="router µs")
        twin.set_ylabel("CPU µs per delivery")
        twin.legend(fontsize="small", loc="upper right")
    latency = [r for r in result["points"] if r["curve"] == "latency" and r["latency_ms"]]
    ax = axes[-1]
    for q in ("p50", "p95", "p99"):
        ax.plot([r["paced_rate"] for r in latency], [r["latency_ms"][q] for r in latency], "o-", label=q)
    ax.set(title="latency against paced rate", xlabel="deliveries/s", ylabel="ms publish → receiver")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    fig.suptitle(f"Akece Webhooks scaling {result['date']} · {result['machine']['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deliveries", type=int, default=20_000, help="backlog per point in deliveries (default 20,000)")
    p.add_argument("--curves", default="base,fanout,body,webhooks,processes,latency",
                   help="comma-separated curves to run (base is needed for the latency curve's rates)")
    p.add_argument("--paced-s", type=float, default=15.0, help="length of each latency point's paced run")
    p.add_argument("--quick", action="store_true", help="a tenth of the backlogs, 5 s paced runs")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--stem", default=None, help="results file name without suffix (default scaling-<date>)")
    p.add_argument("--warmup", type=int, default=None, metavar="ROUNDS",
                   help=f"unreported rounds of the instant scenario ({WARMUP_EVENTS:,} events) before the first "
                        "point, so the broker's JIT compiler is done (default: as `python -m bench`, until its "
                        "compiler threads are quiet; quick 0)")
    args = p.parse_args(argv)
    if args.warmup is None and args.quick:
        args.warmup = 0
    deliveries = args.deliveries // 10 if args.quick else args.deliveries
    wanted = set(args.curves.split(","))
    chosen = [pt for pt in points(deliveries) if pt.curve in wanted]
    logs.configure(level="warning")
    work = Path(tempfile.mkdtemp(prefix="akece-scaling-"))
    started = time.time()
    warmup: list[dict[str, Any]] = []
    try:
        with broker(work) as (bootstrap, broker_pid, kafka):
            config = RunConfig(bootstrap=bootstrap, work=work, broker_pid=broker_pid,
                               paced_s=5.0 if args.quick else args.paced_s, env={"AKECE_LOG_LEVEL": "info"})
            warmup = asyncio.run(warm_up(args.warmup, config))
            rows = asyncio.run(measure(config, chosen))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    date = time.strftime("%Y-%m-%d")
    result = {"date": date, "duration_s": round(time.time() - started), "machine": machine(kafka),
              "quick": args.quick, "warmup_rounds": len(warmup), "warmup": warmup,
              "points": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (args.stem or f"scaling-{date}{'-quick' if args.quick else ''}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    try:
        plot(result, stem.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot written")
    print(markdown(result))
    lost = sum(r["missing"] or 0 for r in rows)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
