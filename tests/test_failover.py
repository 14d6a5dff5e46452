"""Broker failover on a real 3-node cluster (``kafka start --nodes 3``), with real SIGKILLs.

A module-scoped cluster of three KRaft nodes (broker + controller each) runs on free ports in a
temporary directory; it is stopped by pid at the end. Under a steady load across several webhooks
(written to the deliveries topic as the router writes it, replication 3, min.insync.replicas 2),
two ``akece-webhooks deliver`` processes deliver to a receiver that answers 200 while we SIGKILL:

1. the leader of (most of) the deliveries partitions;
2. the active controller (the KRaft quorum's leader);
3. the group coordinator's broker, while a delivery worker restarts (itself SIGKILLed just before).

Each node comes back on its ports and the next fault waits until every partition is fully in
sync again. At the receiver: every delivery id arrives, none is lost, nothing is dead-lettered,
and duplicates stay within the records in flight at the faults (produced but not committed when a
fault began, plus those produced until it was over). The CI-sized run is in ``make test``; the
20,000-delivery run is marked ``faults`` (``make faults``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from services.contract.topics import Topics
from services.devtools.kafka_errors import HOST
from services.devtools.kafka_local_cluster import LocalCluster
from services.devtools.ports import free_port
from services.devtools.processes import wait_exit
from services.shared import kafka
from services.shared.settings import Settings
from tests.conftest import make_settings
from tests.delivery_support import deliver_process, make_webhook, stack, worker_env
from tests.fault_load import (
    Campaign,
    Load,
    Tally,
    assert_clean_logs,
    assert_nothing_lost,
    dead_lettered,
    log_tails,
    tally,
    wait_all_arrived,
)
from tests.kafka_broker import kafka_cli
from tests.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

NODES = 3
WEBHOOKS = 8
IN_SYNC_TIMEOUT_S = 120.0


# ---------------------------------------------------------------- the cluster


def _free_run(count: int) -> int:
    """A port P with P .. P+count-1 all free (the cluster's nodes listen on consecutive ports)."""
    for _ in range(50):
        first = free_port()
        if first + count < 65536 and all(_free(first + n) for n in range(count)):
            return first
    raise AssertionError(f"no run of {count} free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data_dir = tmp_path_factory.mktemp("cluster") / "kafka"
    started = kafka_cli("start", "--nodes", str(NODES), "--port", str(_free_run(NODES)), "--data-dir", str(data_dir))
    assert started == 0
    local = LocalCluster(data_dir)
    try:
        yield local
    finally:
        pids = [pid for pid in (local.pid(n) for n in local.node_ids()) if pid is not None]
        kafka_cli("stop", "--grace", "10", "--data-dir", str(data_dir))
        for pid in pids:  # whatever survived the stop (it should not), by pid
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cluster_settings(cluster: LocalCluster) -> Settings:
    return make_settings(cluster.bootstrap, kafka={"replication_factor": 3, "min_insync_replicas": 2,
                                                   "partitions": 3, "request_timeout_ms": 15_000})


# ---------------------------------------------------------------- what the cluster looks like


async def partitions(settings: Settings, topics: list[str] | None = None) -> dict[str, list[dict[str, object]]]:
    """Topic -> its partitions' metadata (leader, replica_nodes, isr_nodes)."""
    async with kafka.started(kafka.admin(settings)) as admin:
        described = await admin.describe_topics(topics)
    return {t["topic"]: t["partitions"] for t in described}


def _nodes(partition: dict[str, object], field: str) -> list[int]:
    """A partition's replicas or in-sync replicas (the key name depends on the metadata version)."""
    found = partition.get(field, partition.get(f"{field}_nodes"))
    assert isinstance(found, list), partition
    return found


async def leader_of(settings: Settings, topic: str) -> int:
    """The node leading most of ``topic``'s partitions."""
    leaders = Counter(int(str(p["leader"])) for p in (await partitions(settings, [topic]))[topic])
    return leaders.most_common(1)[0][0]


async def wait_in_sync(settings: Settings, timeout: float = IN_SYNC_TIMEOUT_S) -> None:
    """Until every partition of every topic has all its replicas in sync (the node that came back caught up)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                found = await partitions(settings)
                if found and all(len(_nodes(p, "isr")) == len(_nodes(p, "replicas"))
                                 for parts in found.values() for p in parts):
                    return
            except (KafkaError, OSError, TimeoutError):  # metadata may be unavailable for a moment: ask again
                pass
            await asyncio.sleep(0.5)  # bounded by the timeout above: a condition polled


async def kill_node(cluster: LocalCluster, node_id: int) -> None:
    pid = cluster.pid(node_id)
    assert pid is not None, f"node {node_id} is not running"
    os.kill(pid, signal.SIGKILL)
    assert await asyncio.to_thread(wait_exit, pid, 10, None)


async def down_then_back(cluster: LocalCluster, campaign: Campaign, node_id: int) -> None:
    """SIGKILL the node; deliveries keep arriving without it; it comes back on its ports."""
    await kill_node(cluster, node_id)
    await campaign.progress()
    await asyncio.to_thread(cluster.start_node, node_id)


async def run_failover(cluster: LocalCluster, receiver: Receiver, minimum: int, rate: float, logs: Path) -> Tally:
    settings = cluster_settings(cluster)
    async with stack(settings) as s:
        hooks = [make_webhook(receiver.url(f"/failover/{n}")) for n in range(WEBHOOKS)]
        await s.add(*hooks)
        load = Load(settings, hooks, minimum, rate)
        campaign = Campaign(settings, load, receiver, logs, whole=lambda: wait_in_sync(settings))
        env = worker_env(settings)
        faults_over = asyncio.Event()
        async with (deliver_process(env, logs / "worker-1.log") as first,
                    deliver_process(env, logs / "worker-2.log") as second):
            campaign.workers = [first, second]
            loader = asyncio.create_task(load.run(faults_over))
            await receiver.wait_for(300, timeout=120)

            victim = await leader_of(settings, campaign.topics.deliveries)
            async with campaign.fault(f"SIGKILL node {victim}, leader of the deliveries partitions"):
                await down_then_back(cluster, campaign, victim)

            controller = cluster.quorum_leader()
            assert controller is not None
            async with campaign.fault(f"SIGKILL node {controller}, the active controller"):
                await down_then_back(cluster, campaign, controller)

            coordinator = await leader_of(settings, "__consumer_offsets")
            async with campaign.fault(f"SIGKILL node {coordinator} (group coordinator) while a worker restarts"):
                second.kill()
                await second.wait()
                async with deliver_process(env, logs / "worker-3.log") as third:
                    campaign.workers = [first, third]
                    await down_then_back(cluster, campaign, coordinator)
                    faults_over.set()
                    await loader
                    await wait_all_arrived(receiver, load.expected, timeout=180)
                    for process in (first, third):
                        assert process.returncode is None, "a delivery worker exited during the faults"
                        process.send_signal(signal.SIGTERM)
                    codes = [await asyncio.wait_for(p.wait(), 60) for p in (first, third)]
        assert codes == [0, 0], log_tails(logs)
        assert_clean_logs(logs)
        dlq = await dead_lettered(settings)
    campaign.print_log()
    result = tally("3-node cluster: SIGKILL partition leader, controller, coordinator during a worker restart",
                   f"{load.produced:,} deliveries, {WEBHOOKS} webhooks, ~{rate:g}/s, 2 workers", receiver,
                   load.expected, dlq, campaign.bound)
    print(f"\n{result.row()}")
    return result


# ---------------------------------------------------------------- the tests


async def test_cluster_runs_three_nodes_with_replicated_topics(cluster: LocalCluster,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert kafka_cli("status", "--data-dir", str(cluster.data_dir)) == 0
    out = capsys.readouterr().out
    assert "3 of 3 nodes" in out and sum(1 for line in out.splitlines() if "  running  " in line) == NODES
    assert kafka_cli("status", "--json", "--data-dir", str(cluster.data_dir)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "running" and [n["node_id"] for n in shown["nodes"]] == list(range(1, NODES + 1))
    assert all(n["running"] and n["pid"] for n in shown["nodes"]), shown
    settings = cluster_settings(cluster)
    await kafka.ensure_topics(settings)
    deliveries = Topics.from_settings(settings).deliveries
    async with asyncio.timeout(30):  # a topic just created may have no partitions in metadata for a moment
        while True:
            found = await partitions(settings, [deliveries])
            if found[deliveries]:
                break
            await asyncio.sleep(0.2)  # a condition polled, bounded by the timeout
    assert [len(_nodes(p, "replicas")) for p in found[deliveries]] == [3, 3, 3]
    async with asyncio.timeout(30), kafka.started(kafka.admin(settings)) as admin:
        while True:  # the broker asked may not know the new topic yet: it answers with an error, no entries
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, deliveries, configs={"min.insync.replicas": None})])
            [(code, _message, _type, _name, entries)] = response.resources
            if code == 0:
                break
            await asyncio.sleep(0.2)  # a condition polled, bounded by the timeout
    assert [entry[:2] for entry in entries] == [("min.insync.replicas", "2")]
    assert cluster.quorum_leader() in {1, 2, 3}


async def test_failover_loses_nothing(cluster: LocalCluster, receiver: Receiver, tmp_path: Path) -> None:
    assert_nothing_lost(await run_failover(cluster, receiver, minimum=3000, rate=60, logs=tmp_path))


@pytest.mark.faults
@pytest.mark.timeout(900)
async def test_failover_loses_nothing_at_20k(cluster: LocalCluster, receiver: Receiver, tmp_path: Path) -> None:
    assert_nothing_lost(await run_failover(cluster, receiver, minimum=20_000, rate=200, logs=tmp_path))
