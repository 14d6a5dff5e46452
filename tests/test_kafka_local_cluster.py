"""``kafka start --nodes N``: the layout, and bad input refused in one line before anything starts.

The cluster itself runs in tests/test_failover.py (start, status, SIGKILL and restart of nodes, stop).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.devtools.kafka_local_cluster import LocalCluster
from services.devtools.ports import free_port
from services.shared.settings import Settings
from tests.kafka_broker import kafka_cli


def test_three_nodes_make_one_quorum_with_replication_three_and_min_isr_two(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    cluster = LocalCluster(tmp_path / "c", 3, ports=ports, controller_ports=[free_port() for _ in range(3)])
    layout = cluster.layout
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{p}" for p in ports)
    assert (layout.replication, layout.min_isr) == (3, 2)
    assert layout.voters == ",".join(f"{n}@127.0.0.1:{p}" for n, p in enumerate(layout.controller_ports, 1))
    second = cluster.node(2)
    assert second.data_dir == (tmp_path / "c" / "node-2").resolve()
    assert (second.port, second.quorum.node_id, second.quorum.voters) == (ports[1], 2, layout.voters)
    assert "-Xmx384m" in second.heap


def test_a_cluster_dir_remembers_its_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "c"
    data_dir.mkdir()
    (data_dir / "cluster.json").write_text(json.dumps(
        {"nodes": 3, "ports": [1, 2, 3], "controller_ports": [4, 5, 6], "cluster_id": "x"}))
    assert kafka_cli("start", "--nodes", "1", "--data-dir", str(data_dir)) == 1
    assert capsys.readouterr().err.strip() == (
        f"kafka start: {data_dir.resolve()} holds a 3-node cluster: start it without --nodes, or wipe it with "
        "`akece-webhooks kafka reset` first")
    assert kafka_cli("status", "--data-dir", str(data_dir)) == 3
    out = capsys.readouterr().out
    assert "kafka cluster stopped: 0 of 3 nodes" in out
    assert sum(1 for line in out.splitlines() if "  stopped  " in line) == 3


@pytest.mark.parametrize(("argv", "error"), [
    (["--nodes", "0"], "--nodes must be 1 or more, not 0"),
    (["--nodes", "3", "--secure"], "--secure serves a single node only: start the cluster without it"),
    (["--nodes", "3", "--controller-port", "1234"], "--controller-port applies to a single node"),
])
def test_bad_cluster_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                         error: str) -> None:
    assert kafka_cli("start", *argv, "--data-dir", str(tmp_path / "c")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kafka start: {error}") and err.count("\n") == 1


def test_a_single_node_dir_is_not_turned_into_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "single"
    (data_dir / "logs").mkdir(parents=True)
    assert kafka_cli("start", "--nodes", "3", "--data-dir", str(data_dir)) == 1
    assert "holds a single-node broker: use another --data-dir" in capsys.readouterr().err


def test_reset_refuses_a_dir_holding_foreign_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    cluster = LocalCluster(data_dir, 3, ports=[free_port() for _ in range(3)])
    data_dir.mkdir()
    cluster.layout_file.write_text(cluster.layout.to_json())
    (data_dir / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match=r"refusing to wipe .*notes\.txt"):
        cluster.reset()
    assert (data_dir / "notes.txt").exists()


def test_min_insync_replicas_cannot_exceed_the_replication_factor() -> None:
    assert Settings(kafka={"replication_factor": 3, "min_insync_replicas": 2}).kafka.min_insync_replicas == 2
    assert Settings().kafka.min_insync_replicas is None  # the brokers' default, as before
    with pytest.raises(ValueError, match=r"min_insync_replicas \(2\) cannot exceed replication_factor \(1\)"):
        Settings(kafka={"min_insync_replicas": 2})
