"""The benchmark's view of a broker's JIT compiler (``bench.limits.jit_cpu_seconds``), read from a real
broker's threads: what the warm-up waits on and each paced run reports."""

from __future__ import annotations

import os
from pathlib import Path

from bench.limits import JitMeter, jit_cpu_seconds


def kafka_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"kafka.Kafka" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_running_brokers_compiler_threads_have_used_cpu(kafka_bootstrap: str) -> None:
    brokers = kafka_pids()
    assert brokers, f"no broker process found for {kafka_bootstrap}"
    for pid in brokers:
        used = jit_cpu_seconds(pid)
        assert used is not None and used > 0, f"broker {pid}: compiler threads {used}"


def test_no_figure_for_a_process_without_compiler_threads_or_a_gone_one() -> None:
    assert jit_cpu_seconds(os.getpid()) is None
    assert jit_cpu_seconds(2**22 + 7) is None


def test_a_meter_counts_from_its_start_and_says_nothing_without_a_broker(kafka_bootstrap: str) -> None:
    [pid, *_] = kafka_pids()
    used = JitMeter(pid).used()
    assert used is not None and 0 <= used < jit_cpu_seconds(pid)  # since the meter's start, not the JVM's
    assert JitMeter(None).used() is None and JitMeter(2**22 + 7).used() is None
