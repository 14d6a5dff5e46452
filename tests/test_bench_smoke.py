"""The benchmark harness's pieces that need no broker: receivers, arrival logs, workload, report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.__main__ import KEEP_PAIRS, WARMUP_MAX_ROUNDS, WARMUP_MIN_ROUNDS, WARMUP_QUIET_JIT_S, parse, warmed
from bench.e2e import Workload, latency_by_second, percentile, sample_cpu, steady_rate, timeline, with_speed
from bench.receivers import ArrivalLog, Nginx, PyReceiver, nginx_binary
from bench.vm_speed import probe
from services.contract.deliveries import delivery_id
from services.devtools.ports import free_port
from services.shared.processes import cpu_count


def post(url: str, delivery: str, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b'{"event":"message_created"}', method="POST",
                                     headers={"webhook-id": delivery, "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def wait_lines(log: ArrivalLog, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while log.poll() or log.lines < n:
        assert time.monotonic() < deadline, f"{log.lines} arrival lines, expected {n}"
        time.sleep(0.05)


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make tools)")
def test_nginx_receiver_answers_post_and_logs_the_delivery_id(tmp_path: Path) -> None:
    with Nginx(tmp_path, free_port()) as nginx:
        assert post(f"{nginx.url}/hooks/1", "d-1") == (200, b"{}")
        assert post(f"{nginx.url}/hooks/1", "d-1")[0] == 200
        assert post(f"{nginx.url}/hooks/2", "d-2")[0] == 200
        log = ArrivalLog(nginx.log_glob)
        wait_lines(log, 4)  # /ready and the three posts: the buffered log is written within 200 ms
    assert {"d-1", "d-2"} <= set(log.first)
    assert log.repeats["d-1"] == 1
    assert abs(log.first["d-2"] - time.time()) < 30


def test_python_receiver_delays_and_holds(tmp_path: Path) -> None:
    with PyReceiver(tmp_path, free_port(), hang_s=0.3) as receiver:
        started = time.monotonic()
        assert post(f"{receiver.url}/slow/100/7", "slow-1")[0] == 200
        assert time.monotonic() - started >= 0.1
        assert post(f"{receiver.url}/hang/8", "held-1")[0] == 200  # held 0.3 s, then answered
        log = ArrivalLog(receiver.log_glob)
        wait_lines(log, 3)  # /ready, slow, held
    assert "slow-1" in log.first
    assert log.held["held-1"] == 1 and "held-1" not in log.first


def test_arrival_log_reads_appended_and_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "arrivals-py-0.log"
    path.write_text("1.000 a 200\n1.500 b 0\n2.000 a 2")
    log = ArrivalLog(str(tmp_path / "arrivals-py-*.log"))
    assert log.poll() == 2
    with path.open("a") as handle:
        handle.write("00\n3.000 c 500\n")
    assert log.poll() == 2
    assert log.first == {"a": 1.0} and log.repeats["a"] == 1
    assert log.held["b"] == 1 and log.other[500] == 1


def test_workload_fans_out_to_the_accounts_webhooks() -> None:
    workload = Workload.plan(webhooks=20, fanout=2, hang_fraction=0.05)
    assert len(workload.accounts) == 10
    assert sum(h.hanging for h in workload.hooks) == 1
    events = workload.events(30, seed=1)
    deliveries = [d for e in events for d in workload.deliveries(e)]
    assert len(deliveries) == 60
    first = events[0]
    hook = workload.by_account[first.account_id][0]
    assert (delivery_id(first.event_id, hook.id), hook) in workload.deliveries(first)
    assert len(workload.healthy_ids(events)) + len(workload.held_ids(events)) == 60


def test_rates_and_percentiles() -> None:
    times = [i / 1000 for i in range(2000)]  # 1000 per second for 2 s
    assert steady_rate(times) == pytest.approx(1000, rel=0.01)
    assert percentile(sorted([5.0, 1.0, 3.0]), 0.5) == 3.0
    assert timeline([0.1, 0.2, 1.5], 0.0) == [2, 1]


def fake_result() -> dict[str, Any]:
    def scenario(name: str, rate: int, p99: float, hanging: int = 0) -> dict[str, Any]:
        return {"name": name, "title": name, "hanging_webhooks": hanging,
                "drain": {"expected": 1000, "delivered": 1000, "sustained_per_s": rate, "timeline": [rate] * 3,
                          "stopped_because": "complete", "ready_s": 1.0, "last_arrival_s": 4.0,
                          "cpu_us_per_delivery": {"router": 50.0, "delivery": 250.0}},
                "paced": {"target_per_s": rate // 2, "latency_ms": {"p50": 5.0, "p95": 20.0, "p99": p99},
                          "cpu_timeline": [{"s": 0.25, "machine": 1.0, "probe_ms": 0.5},
                                           {"s": 0.5, "machine": 1.9, "probe_ms": 0.9},
                                           {"s": 0.75, "machine": 1.2, "probe_ms": 0.6}],
                          "latency_by_second_ms": [{"s": 0, "n": 10, "p50": 4.0, "p99": p99, "max": p99,
                                                    "probe_ms": 0.6}]},
                "probe_ms": {"before_drain": 0.45, "before_paced": 0.47, "after_paced": 0.8},
                "processes": {"router": {"cpu_s": 1.0, "peak_rss_mb": 80.0},
                              "delivery": {"cpu_s": 3.0, "peak_rss_mb": 110.0}},
                "missing_total": 0, "duplicates": 0, "held": {"deliveries": 50, "attempts_seen": 20},
                "parked": {"retried": 10, "dead_lettered": 0, "held_unaccounted": 40}}

    limits = {"kafka": {"per_s": 20000, "produce_per_s": 25000, "consume_per_s": 100000, "records": 1000,
                        "avg_record_bytes": 2400},
              "http": {"per_s": 10000, "concurrency": 64, "client_cpu_us_per_request": 80.0},
              "receivers": {"nginx": {"capacity_per_s": 150000, "detail": "cpu"}},
              "probe_ms": {"before": 0.46, "after": 0.5}}
    meta = {"date": "2026-01-01", "machine": {"cpus": 2, "cpu_model": "test", "memory_gb": 4, "os": "Linux",
                                              "python": "3.11", "aiokafka": "0.14", "aiohttp": "3.9",
                                              "uvloop": None, "kafka": "4.1.1"},
            "config": {"events": 1000, "webhooks": 10, "accounts": 10, "fanout": 1, "avg_event_bytes": 2400,
                       "partitions": 6, "timeout_s": 5.0, "log_level": "info", "quick": True,
                       "warmup": {"rounds": 3, "each": [{"round": 1, "drain_per_s": 6130, "broker_jit_cpu_s": 5.56},
                                                        {"round": 2, "drain_per_s": 6592, "broker_jit_cpu_s": 2.32},
                                                        {"round": 3, "drain_per_s": 7606, "broker_jit_cpu_s": 0.48}]},
                       "keep_pairs": {"requested": 3, "each": [
                           {"pair": 1, "first": "instant", "instant_per_s": 4000, "hang5_per_s": 3480, "keep": 0.87},
                           {"pair": 2, "first": "hang5", "instant_per_s": 4000, "hang5_per_s": 3720, "keep": 0.93},
                           {"pair": 3, "first": "instant", "instant_per_s": 4000, "hang5_per_s": 3640, "keep": 0.91}]}}}
    return report.build(limits, [scenario("instant", 4100, 50.0), scenario("hang5", 3900, 60.0, hanging=1)],
                        meta)


def test_paced_latency_by_second_of_publishing() -> None:
    """A paced run's tail, second by second: a pause shows in the seconds it hit."""
    published = {f"e{n}": 100.0 + n * 0.01 for n in range(300)}  # 3 s at 100 events/s
    expected = {f"d{n}": f"e{n}" for n in range(300)}
    arrived = {f"d{n}": published[f"e{n}"] + (0.5 if 150 <= n < 160 else 0.02) for n in range(300) if n != 7}
    rows = latency_by_second(expected, published, arrived)
    assert [row["s"] for row in rows] == [0, 1, 2] and [row["n"] for row in rows] == [99, 100, 100]
    assert rows[0]["p99"] == pytest.approx(20, abs=0.1) and rows[2]["max"] == pytest.approx(20, abs=0.1)
    assert rows[1]["p99"] == pytest.approx(500, abs=0.1) and rows[1]["p50"] == pytest.approx(20, abs=0.1)
    assert latency_by_second({}, {}, {}) == []


def test_each_paced_second_carries_the_machine_speed_of_its_probes() -> None:
    """The probes of the CPU timeline (one per quarter second, stamped at its end) join the second they
    ended in: the median of them; a second without a probe gets none."""
    by_second = [{"s": 0, "p99": 10.0}, {"s": 1, "p99": 300.0}, {"s": 2, "p99": 12.0}]
    cpu_rows = [{"s": 0.25, "probe_ms": 0.5}, {"s": 0.5, "probe_ms": 0.4}, {"s": 1.0, "probe_ms": 0.45},
                {"s": 1.25, "probe_ms": 0.9}, {"s": 1.5, "probe_ms": 1.0}, {"s": 1.75, "probe_ms": 0.95},
                {"s": 3.25, "probe_ms": 0.5}, {"s": 3.5, "machine": 1.0}]
    rows = with_speed(by_second, cpu_rows)
    assert [row.get("probe_ms") for row in rows] == [0.45, 0.95, None]


def test_the_speed_probe_counts_cpu_for_its_fixed_work() -> None:
    """More of the fixed work takes more CPU, and a wait for a core is not counted: with four times as many
    busy processes as cores, the probe waits most of its wall time, and its figure stays the machine's."""
    small, large = probe(records=50, tries=3), probe(records=400, tries=3)  # a try of the large: several slices
    assert small > 0 and large > 4 * small
    spin = [sys.executable, "-c", "while True: sum(range(1000))"]
    spinners = [subprocess.Popen(spin) for _ in range(4 * cpu_count())]
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        crowded = probe(records=400, tries=3)
        wall = time.perf_counter() - started
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    assert wall * 1000 > 2.5 * 3 * crowded  # it waited for a core most of the time ...
    assert crowded < 3 * large  # ... which it leaves out (this VM's own speed moves by up to 2x)


async def test_cpu_timeline_samples_each_group_until_cancelled() -> None:
    rows: list[dict[str, float]] = []
    sampler = asyncio.ensure_future(sample_cpu({"me": [os.getpid()], "gone": [2**22 + 7]}, rows, time.time()))
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline:  # busy in short slices, so the sampler's turns come
        sum(range(20000))
        await asyncio.sleep(0)
    sampler.cancel()
    assert len(rows) >= 2 and [row["s"] for row in rows] == sorted(row["s"] for row in rows)
    assert all(set(row) == {"s", "machine", "me", "gone", "probe_ms"} for row in rows)
    assert all(row["gone"] == 0 and row["machine"] >= 0 and row["probe_ms"] > 0 for row in rows)
    assert max(row["me"] for row in rows) > 0.3  # this test spun a core meanwhile


def test_report_renders_targets_markdown_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = fake_result()
    assert result["limits"]["combined_per_s"] == 6667
    verdicts = {t["name"]: t["met"] for t in result["targets"]}
    assert verdicts["throughput vs combined bound (instant)"]  # 4100 / 6667 = 61%
    assert verdicts["healthy webhooks' throughput with 5% hanging (vs instant)"]  # 95%
    pairs = next(t for t in result["targets"] if t["name"].startswith("the same in 3 adjacent"))
    assert pairs["met"] and pairs["measured"] == "91% (87%, 91%, 93%)"  # the median of the pairs
    paths = report.write(result, tmp_path, "smoke")
    text = paths["md"].read_text()
    assert "| instant | 1,000 | **4,100** |" in text
    assert "combined 1/(1/a + 1/b) | 6,667" in text
    assert "warm-up: 3 unreported instant rounds before the bounds: drains 6,130/s (JIT 5.56 s), " in text
    assert "keep pairs (drains only, seconds apart, after the scenarios): instant first: instant 4,000/s, " \
           "hang5 3,480/s; hang5 first: " in text
    assert "machine speed probe around the bounds (`bench/vm_speed.py`: ms of CPU for one fixed piece of work, " \
           "lower is faster; this VM's moves by up to 2x from second to second): before 0.46, after 0.5." in text
    assert "machine speed probe (ms, lower is faster): before drain 0.45, before paced 0.47, after paced 0.8; " \
           "during the paced run 0.6 (its worst seconds: 0.6)" in text
    assert json.loads(paths["json"].read_text())["scenarios"][0]["name"] == "instant"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def rounds(*jit: float | None) -> list[dict[str, Any]]:
    return [{"round": n + 1, "drain_per_s": 7000, "broker_jit_cpu_s": j} for n, j in enumerate(jit)]


def test_warm_up_goes_on_until_the_brokers_compiler_is_quiet() -> None:
    """A fresh broker compiles for minutes; the warm-up waits for its compiler threads to go quiet."""
    busy, quiet = WARMUP_QUIET_JIT_S * 5, WARMUP_QUIET_JIT_S / 2
    assert not warmed(rounds(), None, broker_pid=1)
    assert not warmed(rounds(*[quiet] * (WARMUP_MIN_ROUNDS - 1)), None, broker_pid=1)  # never under the minimum
    assert warmed(rounds(*[quiet] * WARMUP_MIN_ROUNDS), None, broker_pid=1)
    assert not warmed(rounds(*[busy] * WARMUP_MIN_ROUNDS), None, broker_pid=1)  # still compiling: go on
    assert not warmed(rounds(busy, quiet, busy), None, broker_pid=1)  # the last round decides
    assert warmed(rounds(busy, busy, quiet), None, broker_pid=1)
    assert warmed(rounds(*[busy] * WARMUP_MAX_ROUNDS), None, broker_pid=1)  # but not forever
    # a broker the benchmark did not start, or whose compiler it cannot see: the minimum
    assert warmed(rounds(*[None] * WARMUP_MIN_ROUNDS), None, broker_pid=None)
    assert warmed(rounds(*[None] * WARMUP_MIN_ROUNDS), None, broker_pid=1)
    # an explicit count is exactly that many, quiet or not
    assert warmed(rounds(), 0, broker_pid=1)
    assert not warmed(rounds(quiet, quiet), 3, broker_pid=1) and warmed(rounds(busy, busy, busy), 3, broker_pid=1)


def test_delivery_processes_default_to_the_cpu_count_as_deliver_does() -> None:
    """``make bench`` measures what ``deliver`` runs by default: one delivery process per CPU."""
    assert parse([]).delivery_procs == cpu_count()
    assert parse(["--delivery-procs", "1"]).delivery_procs == 1
    with pytest.raises(SystemExit):
        parse(["--delivery-procs", "0"])


def test_keep_pairs_default_to_two_and_to_none_when_quick() -> None:
    assert parse([]).keep_pairs == KEEP_PAIRS == 2
    assert parse(["--quick"]).keep_pairs == 0
    assert parse(["--keep-pairs", "3"]).keep_pairs == 3
    with pytest.raises(SystemExit):
        parse(["--keep-pairs", "-1"])
