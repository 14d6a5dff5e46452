"""The soak tool (bench/soak.py): its verdicts on made-up samples, and a half-minute run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import soak
from bench.receivers import nginx_binary

ROOT = Path(__file__).resolve().parent.parent


def samples(values: dict[str, list[float]], *, lag: list[int | None] | None = None,
            step: float = 10.0) -> list[dict[str, Any]]:
    """One sample per ``step`` seconds; ``values`` maps "role.metric" to its series."""
    n = len(next(iter(values.values())))
    out = []
    for i in range(n):
        roles: dict[str, dict[str, Any]] = {r: {} for r in soak.ROLES}
        for key, series in values.items():
            role, metric = key.split(".")
            roles[role][metric] = series[i]
        out.append({"t_s": i * step, "roles": roles,
                    "lag": {"router": lag[i] if lag else 0, "delivery": lag[i] if lag else 0},
                    "delivered": i * 100, "delivered_per_s": 10.0})
    return out


def steady(n: int, value: float) -> dict[str, list[float]]:
    return {f"{r}.{m}": [value] * n for r in soak.ROLES for m in soak.FLAT_METRICS}


def test_flat_series_pass_and_a_growing_one_fails() -> None:
    n = 181  # 30 minutes of 10 s samples
    assert soak.flatness(samples(steady(n, 100.0)), 30)["flat"]
    growing = steady(n, 100.0)
    growing["delivery.rss_mb"] = [100.0 + i * 0.5 for i in range(n)]  # +0.5 MB per sample: a leak
    verdict = soak.flatness(samples(growing), 30)
    assert verdict["early_window_min"] == [5, 10] and verdict["late_window_min"] == [25, 30]
    assert not verdict["flat"]
    rss = verdict["metrics"]["delivery.rss_mb"]
    assert not rss["flat"] and rss["change"] > 0.10
    assert verdict["metrics"]["router.fds"]["flat"]


def test_lag_recovery_after_the_restart() -> None:
    gap: list[int | None] = [None, None]  # the broker is away: no figure
    lag = [10] * 10 + gap + [5000, 3000, 40, 20] + [10] * 5
    restart = soak.Restart(at_s=100, signal="kill", down_at=100.0, up_at=115.0)
    verdict = soak.lag_verdict(samples(steady(len(lag), 1.0), lag=lag), restart, rate=200, sample_s=10,
                               published_s=200)
    assert verdict["recovered"]
    assert verdict["delivery"]["peak_after_restart"] == 5000
    assert verdict["delivery"]["near_zero_after_restart_s"] == 25.0  # the sample at 140 s (40 <= 200)
    stuck = [10] * 10 + gap + [5000, 4000, 3000, 2000, 1000, 900, 800]
    verdict = soak.lag_verdict(samples(steady(len(stuck), 1.0), lag=stuck), restart, rate=200,
                               sample_s=10, published_s=200)
    assert not verdict["recovered"]


@pytest.mark.parametrize("argv", [["--minutes", "0"], ["--rate", "-1"], ["--failing-fraction", "1"],
                                  ["--minutes", "5", "--restart-at-minute", "6"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        soak.parse_args(argv)
    assert exit_.value.code == 2
    assert "must" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make tools)")
def test_half_minute_soak_accounts_for_every_delivery(tmp_path: Path) -> None:
    """The real thing, small: own broker, nginx, router and delivery processes, 1 of 20 webhooks failing."""
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "0.5", "--restart-at-minute", "0",
                           "--rate", "100", "--webhooks", "20", "--failing-fraction", "0.05", "--sample-s", "5",
                           "--out", str(tmp_path), "--name", "smoke"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]  # 1: a verdict is "no"
    result = json.loads((tmp_path / "smoke.json").read_text())
    healthy, failing = result["totals"]["healthy"], result["totals"]["failing"]
    assert healthy["expected"] > 2000 and healthy["delivered"] == healthy["expected"]
    assert healthy["lost"] == 0 and healthy["dead_lettered"] == 0
    assert failing["expected"] > 0 and failing["dead_lettered"] == failing["expected"]
    assert result["verdict"]["nothing_lost"] and result["restart"] is None
    assert len(result["samples"]) >= 6
    for sample in result["samples"]:
        for role in soak.ROLES:
            assert {"rss_mb", "fds", "tasks"} <= sample["roles"][role].keys()
            assert sample["roles"][role]["rss_mb"] > 10 and sample["roles"][role]["tasks"] > 0
        assert sample["lag"]["router"] is not None and sample["lag"]["delivery"] is not None
    assert set(result["flatness"]["metrics"]) == {f"{r}.{m}" for r in soak.ROLES for m in soak.FLAT_METRICS}
    text = (tmp_path / "smoke.md").read_text()
    assert "**Verdict**" in text and f"{healthy['delivered']:,} of {healthy['expected']:,}" in text
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
