"""The benchmark's results: targets checked, JSON, a markdown report and a PNG plot.

``build(limits, scenarios, meta, peers)`` adds the ratios and target verdicts to the raw measurements
(``peers``: the drain comparison of ``bench.peers.drain``, optional);
``markdown(result)`` renders the tables (docs/performance.md pastes them);
``plot(result, path)`` draws throughput over time, sustained throughput against the machine's
bounds, and latency percentiles per scenario.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.limits import combined_bound

TARGET_COMBINED = 0.60
TARGET_ABSOLUTE = 3000
TARGET_P99_MS = 100.0
TARGET_ISOLATION = 0.90
TARGET_VS_CAMEL = 1.0  # the pipeline's drain rate / the Camel route's (auto-commit)
TARGET_VS_NAIVE_CPU = 2.0  # the delivery worker's CPU per delivery / the naive loop's


def build(limits: dict[str, Any], scenarios: list[dict[str, Any]], meta: dict[str, Any],
          peers: dict[str, Any] | None = None) -> dict[str, Any]:
    a = limits.get("kafka", {}).get("per_s")
    b = limits.get("http", {}).get("per_s")
    if a and b:
        limits["combined_per_s"] = round(combined_bound(a, b))
    for s in scenarios:
        rate = (s.get("drain") or {}).get("sustained_per_s") or 0
        s["ratios"] = {"vs_kafka": _ratio(rate, a), "vs_http": _ratio(rate, b),
                       "vs_combined": _ratio(rate, limits.get("combined_per_s"))}
    pairs = ((meta.get("config") or {}).get("keep_pairs") or {}).get("each")
    result = {**meta, "limits": limits, "scenarios": scenarios, "targets": targets(limits, scenarios, pairs)}
    if peers is not None:
        result["peers"] = peers
        result["targets"] += peer_targets(peers)
    return result


def _ratio(value: float, bound: float | None) -> float | None:
    return round(value / bound, 3) if bound else None


def targets(limits: dict[str, Any], scenarios: list[dict[str, Any]],
            keep_pairs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    by_name = {s["name"]: s for s in scenarios}
    out: list[dict[str, Any]] = []
    instant = by_name.get("instant")
    if instant and instant.get("drain"):
        rate = instant["drain"]["sustained_per_s"]
        combined = limits.get("combined_per_s")
        if combined:
            out.append(_target("throughput vs combined bound (instant)", f"{rate / combined:.0%}",
                               f">= {TARGET_COMBINED:.0%}", rate >= TARGET_COMBINED * combined))
        out.append(_target("throughput, absolute (instant)", f"{rate:,}/s", f">= {TARGET_ABSOLUTE:,}/s",
                           rate >= TARGET_ABSOLUTE))
    for s in scenarios:
        paced = s.get("paced")
        if paced:
            p99 = paced["latency_ms"]["p99"]
            out.append(_target(f"p99 latency at half rate ({s['name']})", f"{p99:,.1f} ms",
                               f"< {TARGET_P99_MS:.0f} ms", p99 < TARGET_P99_MS))
    hang = by_name.get("hang5")
    if instant and hang and instant.get("drain") and hang.get("drain"):
        ratio = hang["drain"]["sustained_per_s"] / max(instant["drain"]["sustained_per_s"], 1)
        out.append(_target("healthy webhooks' throughput with 5% hanging (vs instant)", f"{ratio:.0%}",
                           f">= {TARGET_ISOLATION:.0%}", ratio >= TARGET_ISOLATION))
    keeps = sorted(p["keep"] for p in keep_pairs or () if p.get("keep") is not None)
    if keeps:
        median = statistics.median(keeps)
        each = ", ".join(f"{k:.0%}" for k in keeps)
        out.append(_target(f"the same in {len(keeps)} adjacent instant/hang5 drain pairs (median)",
                           f"{median:.0%} ({each})", f">= {TARGET_ISOLATION:.0%}", median >= TARGET_ISOLATION))
    for s in scenarios:
        out.append(_target(f"loss ({s['name']})", f"{s.get('missing_total', '?')}", "0",
                           s.get("missing_total") == 0))
    return out


def peer_targets(peers: dict[str, Any]) -> list[dict[str, Any]]:
    """The drain comparison's targets: no retry tier for a healthy webhook, at least the Camel route's
    rate, the delivery worker within 2x the naive loop's CPU per delivery, no loss."""
    by_key = {s["system"]: s for s in peers.get("systems", []) if not s.get("skipped")}
    akece = by_key.get("akece")
    if not akece:
        return []
    out = []
    retried = (akece.get("parked") or {}).get("retried")
    if retried is not None:
        out.append(_target("peers drain: deliveries moved to a retry tier (akece)", f"{retried:,}", "0", retried == 0))
    ratios = peers.get("ratios") or {}
    rate = (ratios.get("camel-auto") or {}).get("rate")
    if rate is not None:
        out.append(_target("peers drain: rate vs the Camel route (auto-commit)", f"{rate:.2f}x",
                           f">= {TARGET_VS_CAMEL:.1f}x", rate >= TARGET_VS_CAMEL))
    cpu = (ratios.get("naive") or {}).get("delivery_worker_cpu_per_delivery")
    if cpu is not None:
        out.append(_target("peers drain: delivery worker CPU per delivery vs the naive loop", f"{cpu:.2f}x",
                           f"<= {TARGET_VS_NAIVE_CPU:.1f}x", cpu <= TARGET_VS_NAIVE_CPU))
    out.append(_target("loss (peers drain, akece)", f"{akece.get('missing', '?')}", "0", akece.get("missing") == 0))
    return out


def _target(name: str, measured: str, target: str, met: bool) -> dict[str, Any]:
    return {"name": name, "measured": measured, "target": target, "met": bool(met)}


# ------------------------------------------------------------------ markdown


def _n(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:,.1f}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _processes(count: int, role: str) -> str:
    return f"{count} {role} process{'' if count == 1 else 'es'}"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"### Benchmark {result['date']}{' (quick)' if result['config'].get('quick') else ''}", ""]
    m, c = result["machine"], result["config"]
    lines += [f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gb']} GB RAM, {m['os']}; "
              f"Python {m['python']}, aiokafka {m['aiokafka']}, aiohttp {m['aiohttp']}, "
              f"{'uvloop ' + m['uvloop'] if m.get('uvloop') else 'no uvloop'}; Apache Kafka {m['kafka']} "
              f"(single local broker). Broker, pipeline ({_processes(c.get('router_procs', 1), 'router')} + "
              f"{_processes(c.get('delivery_procs', 1), 'delivery')}), receiver and load generator share the "
              "machine.", ""]
    if result["scenarios"]:
        lines += [f"Workload: {c['events']:,} events to {c['webhooks']} webhooks over {c['accounts']} accounts "
                  f"(fan-out {c['fanout']}), realistic Chatwoot payloads (avg {c['avg_event_bytes']:,} B), "
                  f"{c['partitions']} partitions; delivery timeout {c['timeout_s']:g} s; "
                  f"log level {c['log_level']}.", ""]
        lines += [*limits_table(result["limits"]), "", *scenario_table(result), ""]
        lines += [*process_table(result), ""]
    if result.get("peers"):
        lines += [*peers_table(result["peers"]), ""]
    if result["targets"]:
        lines += [*target_table(result["targets"]), ""]
    lines += notes(result)
    return "\n".join(lines) + "\n"


def peers_table(peers: dict[str, Any]) -> list[str]:
    n = peers["events"]
    lines = [f"Peers: each system alone drains the same backlog of {n:,} Chatwoot `{peers['event_type']}` events "
             f"(avg {peers['avg_event_bytes']:,} B) in a {peers['partitions']}-partition topic to one webhook "
             f"(nginx answering 200 at once), measured from process start to the {n:,}th distinct delivery at "
             "nginx; CPU (all threads, all processes of the system) and peak RSS at that moment.", "",
             "| system | drain deliveries/s | CPU µs per delivery | peak RSS | akece's rate ÷ this "
             "| akece's CPU/delivery ÷ this |", "|---|---:|---:|---:|---:|---:|"]
    ratios = peers.get("ratios") or {}
    for s in peers["systems"]:
        if s.get("skipped"):
            lines.append(f"| {s['title']} | skipped: {s['skipped'].splitlines()[0]} | | | | |")
            continue
        title, rate = s["title"], _n(s.get("per_s"))
        if s["system"] == "akece":
            per = {k: v.get("cpu_us_per_delivery") for k, v in s.get("processes", {}).items()}
            title += " (" + " + ".join(f"{k} {_n(v)}" for k, v in per.items()) + " µs)"
            retried = (s.get("parked") or {}).get("retried")
            if retried:
                rate += f", {retried:,} deliveries moved to a retry tier"
        if s.get("missing"):
            rate += f" ({s['delivered']:,}/{s['expected']:,} delivered: {s['stopped_because'].splitlines()[0]})"
        r = ratios.get(s["system"]) or {}
        lines.append(f"| {title} | {rate} | {_n(s.get('cpu_us_per_delivery'))} | {_n(s.get('peak_rss_mb'), ' MB')} | "
                     f"{_x(r.get('rate'))} | {_x(r.get('cpu_per_delivery'))} |")
    return lines


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def limits_table(limits: dict[str, Any]) -> list[str]:
    rows = ["| machine bound (same run) | per second | detail |", "|---|---:|---|"]
    k = limits.get("kafka")
    if k:
        rows.append(f"| (a) aiokafka produce-then-consume, no processing | {_n(k['per_s'])} | "
                    f"produce {_n(k['produce_per_s'])}/s, consume {_n(k['consume_per_s'])}/s, "
                    f"{k['records']:,} records of {_n(k['avg_record_bytes'])} B avg |")
    b = limits.get("http")
    if b:
        client = "aiohttp" if b.get("client") == "aiohttp" else "the delivery sender's client"
        rows.append(f"| (b) POST loop → nginx, {client} ({b['concurrency']} concurrent, keep-alive) | "
                    f"{_n(b['per_s'])} | client {b['client_cpu_us_per_request']} µs CPU/request |")
    reference = limits.get("http_aiohttp")
    if reference:
        rows.append(f"| (reference, not in the bound) the same loop with aiohttp's client | {_n(reference['per_s'])} | "
                    f"client {reference['client_cpu_us_per_request']} µs CPU/request |")
    if limits.get("combined_per_s"):
        rows.append(f"| combined 1/(1/a + 1/b) | {_n(limits['combined_per_s'])} | |")
    for name, r in (limits.get("receivers") or {}).items():
        rows.append(f"| receiver capacity: {name} | {_n(r.get('capacity_per_s'))} | {r.get('detail', '')} |")
    return rows


def scenario_table(result: dict[str, Any]) -> list[str]:
    rows = ["| scenario | deliveries | sustained /s | vs a | vs b | vs combined | paced /s | p50 ms | p95 ms "
            "| p99 ms | loss | dup |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in result["scenarios"]:
        d, p, r = s.get("drain") or {}, s.get("paced") or {}, s.get("ratios") or {}
        lat = p.get("latency_ms") or {}
        held = f" (+{s['held']['deliveries']:,} to hanging)" if s.get("hanging_webhooks") else ""
        rows.append(f"| {s['name']} | {d.get('expected', 0):,}{held} | **{_n(d.get('sustained_per_s'))}** | "
                    f"{_pct(r.get('vs_kafka'))} | {_pct(r.get('vs_http'))} | {_pct(r.get('vs_combined'))} | "
                    f"{_n(p.get('target_per_s'))} | {_n(lat.get('p50'))} | {_n(lat.get('p95'))} | "
                    f"{_n(lat.get('p99'))} | {s.get('missing_total', '?')} | {s.get('duplicates', '?')} |")
    return rows


def process_table(result: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for s in result["scenarios"]:
        names += [n for n in s.get("processes", {}) if n not in names]
    rows = ["| scenario | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for s in result["scenarios"]:
        per = (s.get("drain") or {}).get("cpu_us_per_delivery") or {}
        cells = []
        for n in names:
            p = s.get("processes", {}).get(n)
            if not p:
                cells.append("-")
                continue
            cell = f"{p['cpu_s']:.1f} s"
            if per.get(n) is not None:
                cell += f" · {per[n]:.0f} µs/dlv"
            cells.append(cell + (f" · {p['peak_rss_mb']:.0f} MB" if p.get("peak_rss_mb") else ""))
        rows.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    return ["CPU seconds over the whole scenario · CPU µs per delivery while draining · peak RSS:", "", *rows]


def target_table(items: list[dict[str, Any]]) -> list[str]:
    rows = ["| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    rows += [f"| {t['name']} | {t['measured']} | {t['target']} | {'yes' if t['met'] else '**no**'} |"
             for t in items]
    return rows


def notes(result: dict[str, Any]) -> list[str]:
    out = []
    noisy = {k: v.get("other_load_cores") for k, v in result["limits"].items()
             if isinstance(v, dict) and v.get("other_load_cores")}
    if noisy:
        out.append(f"- limits: other processes used {noisy} cores while they were measured.")
    if result["limits"].get("probe_ms"):
        out.append("- machine speed probe around the bounds (`bench/vm_speed.py`: ms of CPU for one fixed piece of "
                   "work, lower is faster; this VM's moves by up to 2x from second to second): "
                   f"{_probes(result['limits']['probe_ms'])}.")
    warmup = result["config"].get("warmup") or {}
    if warmup.get("each"):
        rounds = ", ".join(f"{w['drain_per_s']:,}/s" + (f" (JIT {w['broker_jit_cpu_s']} s)"
                                                          if w.get("broker_jit_cpu_s") is not None else "")
                           for w in warmup["each"])
        out.append(f"- warm-up: {warmup['rounds']} unreported instant rounds before the bounds: drains {rounds}; "
                   "JIT: the CPU seconds of the broker's compiler threads in the round.")
    pairs = (result["config"].get("keep_pairs") or {}).get("each")
    if pairs:
        each = "; ".join(f"{p['first']} first: instant {p['instant_per_s'] or 0:,}/s, hang5 {p['hang5_per_s'] or 0:,}/s"
                         for p in pairs)
        out.append(f"- keep pairs (drains only, seconds apart, after the scenarios): {each}.")
    for s in result["scenarios"]:
        d = s.get("drain") or {}
        parked = s.get("parked") or {}
        bits = [f"drain {d.get('stopped_because', '?')}"]
        if d.get("other_load_cores"):
            bits.append(f"other processes on the machine used {d['other_load_cores']} cores while it drained")
        paced = s.get("paced") or {}
        if paced.get("broker_jit_cpu_s"):
            bits.append(f"the broker's JIT compiler used {paced['broker_jit_cpu_s']} s of CPU in the paced run")
        speed = s.get("probe_ms") or {}
        if speed:
            bits.append(speed_note(speed, paced))
        if d.get("ready_s") is not None:
            bits.append(f"ready in {d['ready_s']} s, last arrival at {d.get('last_arrival_s')} s")
        if parked.get("retried") or parked.get("dead_lettered"):
            bits.append(f"{parked.get('retried', 0):,} deliveries went to a retry tier, "
                        f"{parked.get('dead_lettered', 0):,} to the DLQ")
        if s.get("hanging_webhooks"):
            bits.append(f"{s['hanging_webhooks']} hanging webhooks: {s['held']['deliveries']:,} deliveries, "
                        f"{s['held']['attempts_seen']:,} attempts reached them, "
                        f"{parked.get('held_unaccounted', '?'):,} not yet in a retry tier or the DLQ at stop")
        problems = {k: v for k, v in (s.get("log_problems") or {}).items() if any(v.values())}
        if problems:
            bits.append(f"log problems: {problems}")
        codes = {k: v for k, v in (s.get("exit_codes") or {}).items() if v not in (0, None)}
        if codes:
            bits.append(f"exit codes: {codes}")
        out.append(f"- {s['name']}: " + "; ".join(bits) + ".")
    peer_speed = (result.get("peers") or {}).get("probe_ms")
    if peer_speed:
        out.append(f"- machine speed probe around the peers (ms): {_probes(peer_speed)}.")
    for p in (result.get("peers") or {}).get("systems", []):
        if p.get("skipped"):
            continue
        bits = [f"drain {p['stopped_because'].splitlines()[0]}",
                f"first arrival {p.get('first_arrival_s')} s after start", f"duplicates {p.get('duplicates', 0):,}"]
        if p.get("other_load_cores"):
            bits.append(f"other processes on the machine used {p['other_load_cores']} cores meanwhile")
        parked = p.get("parked")
        if parked is not None:
            tiers = parked.get("retry_records_per_tier")
            bits.append(f"{parked['retried']:,} deliveries went to a retry tier during the drain"
                        f"{f' {tiers}' if tiers else ''}, {parked['dead_lettered']:,} to the DLQ")
        out.append(f"- peers, {p['system']}: " + "; ".join(bits) + ".")
    return out


def _probes(speed: dict[str, float]) -> str:
    """Probes taken at named moments, as ``before drain 0.45, before paced 0.47``."""
    return ", ".join(f"{moment.replace('_', ' ')} {value:g}" for moment, value in speed.items())


def speed_note(speed: dict[str, float], paced: dict[str, Any]) -> str:
    """The machine's speed around a scenario (``bench.vm_speed``: ms of CPU for one fixed piece of work,
    lower is faster), and during its paced run: the median of its probes and of its three worst seconds'."""
    text = f"machine speed probe (ms, lower is faster): {_probes(speed)}"
    probes = sorted(row["probe_ms"] for row in paced.get("cpu_timeline") or () if "probe_ms" in row)
    if probes:
        worst = sorted((row for row in paced.get("latency_by_second_ms") or () if "probe_ms" in row),
                       key=lambda row: row["p99"], reverse=True)[:3]
        text += f"; during the paced run {probes[len(probes) // 2]:g}"
        if worst:
            text += " (its worst seconds: " + ", ".join(f"{row['probe_ms']:g}" for row in worst) + ")"
    return text


# ------------------------------------------------------------------ profiles


def profile_summary(path: Path, top: int = 25) -> str:
    """The hottest frames of a ``py-spy record --format raw`` file: self and inclusive share of samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"== {path.name}: {total:,} samples", "-- self:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines.append("-- inclusive:")
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


# ------------------------------------------------------------------ plot


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = result["scenarios"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.8))
    for s in scenarios:
        series = (s.get("drain") or {}).get("timeline") or []
        ax1.plot(range(len(series)), series, label=s["name"])
    ax1.set(title="deliveries/s while draining the backlog", xlabel="seconds since pipeline start",
            ylabel="deliveries/s")
    ax1.legend()

    names = [s["name"] for s in scenarios]
    rates = [(s.get("drain") or {}).get("sustained_per_s") or 0 for s in scenarios]
    bars = ax2.bar(names, rates, color="tab:blue")
    ax2.bar_label(bars, fmt="{:,.0f}")
    limits = result["limits"]
    for key, label, style in (("combined_per_s", "combined bound", "--"), ):
        if limits.get(key):
            ax2.axhline(limits[key], linestyle=style, color="tab:red", label=f"{label} {limits[key]:,}/s")
            ax2.axhline(limits[key] * TARGET_COMBINED, linestyle=":", color="tab:red",
                        label=f"60% of it {limits[key] * TARGET_COMBINED:,.0f}/s")
    ax2.axhline(TARGET_ABSOLUTE, linestyle=":", color="tab:gray", label=f"{TARGET_ABSOLUTE:,}/s target")
    ax2.set(title="sustained deliveries/s", ylabel="deliveries/s")
    ax2.legend(fontsize="small")

    width = 0.25
    for i, q in enumerate(("p50", "p95", "p99")):
        values = [((s.get("paced") or {}).get("latency_ms") or {}).get(q) or 0 for s in scenarios]
        ax3.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=q)
    ax3.axhline(TARGET_P99_MS, linestyle="--", color="tab:red", label="p99 target")
    ax3.set_xticks(range(len(names)), names)
    ax3.set(title="end-to-end latency at half the sustained rate", ylabel="ms (publish → receiver)")
    ax3.set_yscale("log")
    ax3.legend(fontsize="small")
    fig.suptitle(f"Akece Webhooks benchmark {result['date']} · {result['machine']['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict[str, Any], out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown(result))
    if not result["scenarios"]:  # the drain comparison alone: its table says it all
        del paths["png"]
        return paths
    try:
        plot(result, paths["png"])
    except ImportError:  # matplotlib is in the `bench` extra
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot written")
        del paths["png"]
    return paths
