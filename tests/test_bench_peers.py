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
from pathlib import Path

import pytest

from bench.peers import camel
from bench.peers.drain import SYSTEMS
from bench.receivers import nginx_binary

EVENTS = 500

pytestmark = [pytest.mark.slow, pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make tools)")]


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
