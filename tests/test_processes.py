"""``deliver --processes N`` and ``router --processes N``: a parent of N real processes of one consumer group.

The Kafka tests start the real commands against the broker; the others run the parent on small real
child commands (no Kafka) to see restarts, giving up and exit codes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.contract.topics import Topics
from services.shared import kafka
from services.shared.metrics import Metrics, ProcessMetrics
from services.shared.process_health import merge_expositions
from services.shared.processes import ProcessGroup, RestartPolicy, cgroup_cpu_quota, cpu_count
from tests.conftest import make_settings
from tests.delivery_support import delivery, make_webhook, produce, stack, worker_env
from tests.log_capture import captured_logs
from tests.process_support import alive, parent, until, until_gone, until_split
from tests.receiver import Receiver
from tests.test_router import (
    assert_complete,
    events_for,
    expected_pairs,
    publish,
    read_topic,
    wait_for_pairs,
    write_webhooks,
)
from tests.test_router import webhook as router_webhook

FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, give_up_after=3, stable_after_s=60)


def samples(text: str, name: str) -> dict[str, float]:
    """``process`` label -> the sum of the samples called ``name`` in an exposition."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get("process", "")
                sums[key] = sums.get(key, 0.0) + sample.value
    return sums


# --- no Kafka ------------------------------------------------------------------------------------
def test_children_metrics_are_served_once_each_labelled_with_its_process() -> None:
    pages = {}
    for index, delivered in (("0", 3), ("1", 5)):
        metrics = Metrics(CollectorRegistry())
        metrics.deliveries.labels(*["x"] * len(metrics.deliveries._labelnames)).inc(delivered)
        pages[index] = generate_latest(metrics.registry).decode()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(type("Families", (), {"collect": lambda self: merge_expositions(pages)})())
    text = generate_latest(registry).decode()
    assert text.count("# TYPE akece_webhooks_deliveries_total counter") == 1
    assert samples(text, "akece_webhooks_deliveries_total") == {"0": 3.0, "1": 5.0}


def test_cgroup_cpu_quota_caps_the_default_process_count(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    (tmp_path / "kubepods" / "pod1").mkdir(parents=True)
    (tmp_path / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path, proc) == 1.5
    (tmp_path / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path, proc) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1, tmp_path / "none") == 2.0
    assert 1 <= cpu_count() <= (os.cpu_count() or 1)


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(60)"


async def test_a_child_that_keeps_dying_is_restarted_then_the_parent_gives_up_with_exit_1() -> None:
    registry = CollectorRegistry()
    group = ProcessGroup("delivery", lambda index, fd: child("import sys; sys.exit(1)" if index else SLEEPER), 2,
                         deadline_s=10, metrics=ProcessMetrics(registry), policy=FAST)
    with captured_logs() as logs:
        async with asyncio.timeout(20):
            assert await group.run() == 1
    (gave_up,) = logs.events("processes.gave_up")
    assert gave_up["process"] == 1 and gave_up["exits_in_a_row"] == 3
    assert gave_up["message"] == "delivery process 1 exited 3 times in a row (last exit code 1); stopping the others"
    assert len(logs.events("processes.child_exited")) == 2
    assert registry.get_sample_value("akece_webhooks_process_restarts_total", {"role": "delivery"}) == 2
    assert [c.code for c in group.children] == [0, 1]  # the healthy one was stopped (SIGTERM) and exited 0


async def test_children_done_by_themselves_end_the_parent_and_a_refused_one_stops_the_others() -> None:
    registry = CollectorRegistry()
    done = ProcessGroup("router", lambda index, fd: child("pass"), 2, deadline_s=10,
                        metrics=ProcessMetrics(registry), policy=FAST)
    async with asyncio.timeout(20):
        assert await done.run() == 0
    assert registry.get_sample_value("akece_webhooks_process_restarts_total", {"role": "router"}) == 0
    refused = ProcessGroup("router", lambda index, fd: child("import sys; sys.exit(2)" if index else SLEEPER), 2,
                           deadline_s=10, metrics=ProcessMetrics(CollectorRegistry()), policy=FAST)
    async with asyncio.timeout(20):
        assert await refused.run() == 2  # bad configuration: not restarted; the worst code


async def test_a_child_past_the_deadline_is_killed_and_the_exit_is_1() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); " \
               "time.sleep(60)"
    group = ProcessGroup("delivery", lambda index, fd: child(stubborn), 1, deadline_s=0.5,
                         metrics=ProcessMetrics(CollectorRegistry()), policy=FAST)
    running = asyncio.create_task(group.run())
    await until(lambda: group.children[0].running, "child started", timeout=10)
    group.stop.set()
    async with asyncio.timeout(10):
        assert await running == 1


@pytest.mark.parametrize(("args", "line"), [
    (["deliver", "--processes", "0"], "argument --processes: must be a whole number of at least 1, not '0'"),
    (["router", "--processes", "2", "--max-records", "5"],
     "akece-webhooks: --max-records counts one process's events: use it with --processes 1"),
])
def test_bad_process_counts_are_refused_in_one_line(args: list[str], line: str) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("AKECE_")}
    done = subprocess.run([sys.executable, "-m", "services", *args], env={**env, "AKECE_METRICS_PORT": "0"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(line)


@pytest.mark.slow
async def test_children_drain_and_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """Kafka unreachable: the children run (healthy, not ready); the parent SIGKILLed, they stop by themselves.
    The count comes from the setting here (the other tests give the flag)."""
    env = worker_env(make_settings("127.0.0.1:1"), AKECE_DELIVERY_SHUTDOWN_GRACE_S="2", AKECE_DELIVERY_PROCESSES="2")
    async with parent(["deliver"], env, tmp_path / "parent.log") as proc:
        body = await proc.until("/healthz", lambda status, body: status == 200 and all(
            entry["pid"] and "workers" in entry for entry in body["processes"].values()), timeout=40)
        pids = [entry["pid"] for entry in body["processes"].values()]
        assert len(pids) == 2
        status, ready = await proc.get("/readyz")
        assert status == 503 and ready["status"] == "not_ready", ready
        proc.process.kill()
        await proc.process.wait()
        await until_gone(pids, timeout=30)


# --- against the broker ----------------------------------------------------------------------------

@pytest.mark.slow
async def test_deliver_processes_split_the_group_survive_a_killed_child_and_stop_on_sigterm(
        kafka_bootstrap: str, receiver: Receiver, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, kafka={"partitions": 4})
    async with stack(settings) as s:
        hooks = [make_webhook(receiver.url(f"/procs/{n}")) for n in range(10)]
        for n in range(10):
            receiver.set(f"/procs/{n}", delay=0.05)  # 50 keys, one request each at a time: ~1,000/s
        await s.add(*hooks)
        async with parent(["deliver", "--processes", "2"], worker_env(settings), tmp_path / "deliver.log") as proc:
            pids = await proc.pids()
            held = await until_split(settings, f"{settings.topic_prefix}.delivery", s.topics.deliveries, 2)
            assert sorted(p for member in held for p in member) == [0, 1, 2, 3]  # split, each partition once

            first = [delivery(hooks[n % 10], conversation=n % 50, seq=n) for n in range(400)]
            await produce(settings, first)
            await receiver.wait_for(400, timeout=30)
            seen = Counter(r.headers["webhook-id"] for r in receiver.requests)
            assert seen == Counter({item.delivery_id: 1 for item in first})  # each exactly once
            text = await proc.until("/metrics", lambda status, text: sum(  # counted once the answer is read
                samples(text or "", "akece_webhooks_deliveries_total").values()) == 400)
            assert set(samples(text, "akece_webhooks_deliveries_total")) == {"0", "1"}  # one page, both children

            second = [delivery(hooks[n % 10], conversation=n % 50, seq=n) for n in range(3000)]
            await produce(settings, second)
            await receiver.wait_for(400 + 300, timeout=30)
            os.kill(pids["0"], signal.SIGKILL)
            at_kill = len(receiver.requests)
            assert at_kill < 3400, "the load was over before the kill: nothing was tested"
            restarted = await proc.until("/readyz", lambda status, body: status == 200 and
                                         body["processes"]["0"]["pid"] not in (None, pids["0"]), timeout=40)
            assert restarted["processes"]["1"]["pid"] == pids["1"]
            expected = {item.delivery_id for item in second}
            async with asyncio.timeout(45):
                while not expected <= {r.headers["webhook-id"] for r in receiver.requests}:
                    await receiver.next_request(timeout=45)
            _, text = await proc.get("/metrics")
            assert samples(text, "akece_webhooks_process_restarts_total") == {"": 1.0}

            children = [restarted["processes"]["0"]["pid"], pids["1"]]
            proc.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(40):
                assert await proc.process.wait() == 0, proc.output()
        assert not any(alive(pid) for pid in children)
    duplicates = sum(Counter(r.headers["webhook-id"] for r in receiver.requests).values()) - 3400
    print(f"\nprocesses: 3400 deliveries, SIGKILL of one of two processes after {at_kill} requests, "
          f"{duplicates} sent again")


@pytest.mark.slow
async def test_router_processes_split_the_group_route_everything_and_stop_on_sigterm(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, kafka={"partitions": 4})
    await kafka.ensure_topics(settings)
    hooks = [router_webhook(11, 1), router_webhook(21, 2)]
    await write_webhooks(settings, hooks)
    topics = Topics.from_settings(settings)
    async with parent(["router", "--processes", "2"], worker_env(settings), tmp_path / "router.log") as proc:
        await proc.pids()
        held = await until_split(settings, f"{settings.topic_prefix}.router", topics.events, 2)
        assert sorted(p for member in held for p in member) == [0, 1, 2, 3]
        events = events_for(accounts=[1, 2], conversations=range(1, 21), types=["message_created"], repeat=5)
        await publish(settings, events)
        expected = expected_pairs(events, hooks)
        await wait_for_pairs(settings, topics.deliveries, expected, timeout=40)
        proc.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(40):
            assert await proc.process.wait() == 0, proc.output()
    assert assert_complete(await read_topic(settings, topics.deliveries), expected) == 0
