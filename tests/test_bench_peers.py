"""The drain comparison with the peers (``python -m bench --peers``), end to end at a tiny size.

Runs the real command against the test broker: the pipeline (router + delivery processes), the
Apache Camel route in both commit modes (built with Maven on first use; skipped with the reason
when Java 17 or Maven is missing) and the naive loop each drain 500 events to nginx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import report
from bench.peers import camel
from bench.peers.drain import SYSTEMS, ratios, session_cpu_seconds, session_peak_rss_mb, session_pids
from bench.receivers import nginx_binary

EVENTS = 500

@pytest.mark.slow
@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make tools)")
def test_python_m_bench_peers_drains_the_same_backlog_with_every_system(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "AKECE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    done = subprocess.run([sys.executable, "-m", "bench", "--peers", "--peers-events", str(EVENTS),
                           "--stall-s", "20", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = tmp_path.glob("*-peers.json")
    peers = json.loads(path.read_text())["peers"]
    systems = {s["system"]: s for s in peers["systems"]}
    assert list(systems) == list(SYSTEMS)
    assert peers["events"] == EVENTS and peers["partitions"] == 6
    skipped = {key: s["skipped"] for key, s in systems.items() if s.get("skipped")}
    for key, s in systems.items():
        if key in skipped:
            continue
        assert (s["stopped_because"], s["delivered"], s["missing"]) == ("complete", EVENTS, 0), (key, s)
        assert s["per_s"] > 0 and s["cpu_us_per_delivery"] > 0 and s["peak_rss_mb"] > 10, (key, s)
    akece = systems["akece"]
    assert set(akece["processes"]) == {"router", "delivery"}
    assert akece["parked"]["retried"] == 0 and akece["parked"]["dead_lettered"] == 0
    assert peers["ratios"]["naive"]["rate"] == pytest.approx(akece["per_s"] / systems["naive"]["per_s"], rel=0.01)
    text = (tmp_path / path.name.replace(".json", ".md")).read_text()
    for s in systems.values():
        assert f"| {s['title']}" in text
    assert "| peers drain: deliveries moved to a retry tier (akece) | 0 | 0 | yes |" in text
    if skipped:
        assert set(skipped) == {"camel-auto", "camel-each"}
        pytest.skip(f"the Camel peer did not run: {camel.unavailable() or skipped['camel-auto']}")


def test_session_accounting_counts_child_processes_live_and_reaped(tmp_path: Path) -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    marker = tmp_path / "burnt"
    script = (f"import subprocess, sys, pathlib, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', {burn!r}])\n"
              f"child.wait()\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(30)\n")
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:  # the child burnt 0.3 s of CPU, was reaped
            assert leader.poll() is None
            time.sleep(0.05)
        assert marker.exists()
        assert session_pids(leader.pid) == [leader.pid]
        assert session_cpu_seconds(leader.pid) >= 0.3  # the reaped child's CPU is the leader's cutime
        assert session_peak_rss_mb(leader.pid) > 1
    finally:
        leader.kill()
        leader.wait()


def test_report_renders_the_peers_table_ratios_targets_and_skips() -> None:
    def system(key: str, per_s: int, cpu_us: float, **extra: object) -> dict[str, object]:
        return {"system": key, "title": SYSTEMS[key].title, "stopped_because": "complete", "expected": 1000,
                "delivered": 1000, "missing": 0, "duplicates": 0, "per_s": per_s, "cpu_us_per_delivery": cpu_us,
                "peak_rss_mb": 100.0, "first_arrival_s": 1.0, "processes": {key: {"cpu_us_per_delivery": cpu_us}},
                **extra}

    systems = [system("akece", 3000, 300.0, parked={"retried": 12, "dead_lettered": 0},
                      processes={"router": {"cpu_us_per_delivery": 100.0},
                                 "delivery": {"cpu_us_per_delivery": 200.0}}),
               {"system": "camel-auto", "title": SYSTEMS["camel-auto"].title, "skipped": "java not found"},
               system("camel-each", 5000, 250.0),
               system("naive", 10000, 80.0)]
    peers = {"events": 1000, "event_type": "message_created", "avg_event_bytes": 3000, "partitions": 6,
             "systems": systems, "ratios": ratios(systems)}
    assert peers["ratios"]["naive"] == {"rate": 0.3, "cpu_per_delivery": 3.75,
                                        "delivery_worker_cpu_per_delivery": 2.5, "peak_rss": 1.0}
    assert "camel-auto" not in peers["ratios"]
    text = "\n".join(report.peers_table(peers))
    assert (f"| {SYSTEMS['akece'].title} (router 100 + delivery 200 µs) | 3,000, 12 deliveries moved to a "
            "retry tier | 300 | 100 MB | - | - |") in text
    assert f"| {SYSTEMS['camel-auto'].title} | skipped: java not found |" in text
    assert f"| {SYSTEMS['naive'].title} | 10,000 | 80.0 | 100 MB | 0.30x | 3.75x |" in text
    verdicts = {t["name"]: (t["measured"], t["met"]) for t in report.peer_targets(peers)}
    assert verdicts["peers drain: deliveries moved to a retry tier (akece)"] == ("12", False)
    assert verdicts["peers drain: delivery worker CPU per delivery vs the naive loop"] == ("2.50x", False)
    assert "peers drain: rate vs the Camel route (auto-commit)" not in verdicts  # skipped: no verdict
    assert verdicts["loss (peers drain, akece)"] == ("0", True)
