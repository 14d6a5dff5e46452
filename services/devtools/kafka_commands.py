"""``akece-webhooks kafka start|stop|status|reset``: the local broker's commands, on one node
(``kafka_local.LocalKafka``) or on a cluster (``kafka_local_cluster.LocalCluster``, ``--nodes``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from services.devtools import kafka_local_secure as secure
from services.devtools.jars import HOME_ENV, find_java, find_maven, kafka_home, kafka_version
from services.devtools.kafka_errors import HOST, LocalKafkaError
from services.devtools.kafka_local import KafkaStatus, LocalKafka
from services.devtools.kafka_local_cluster import LocalCluster, is_cluster
from services.devtools.ports import BOOTSTRAP_ENV, DEFAULT_PORT
from services.shared import output


def add_kafka_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``kafka start|stop|status|reset``; each sets ``func`` to ``kafka_cli``."""
    kafka = subparsers.add_parser("kafka", help="run a local Apache Kafka broker, or a cluster with --nodes (KRaft)")
    kafka.set_defaults(func=kafka_cli, kafka_action=None, kafka_parser=kafka)
    actions = kafka.add_subparsers(dest="kafka_action", metavar="{start,stop,status,reset}")
    helps = {"start": "start the broker and wait until it serves", "stop": "stop the broker (SIGTERM)",
             "status": "show whether the broker runs (exit 3 when stopped)",
             "reset": "stop the broker and delete its data"}
    for name, text in helps.items():
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--data-dir", type=Path, default=None,
                            help=f"broker data directory (default: ${HOME_ENV}/data or <repo>/.kafka/data)")
        action.set_defaults(func=kafka_cli)
    start = actions.choices["start"]
    start.add_argument("--port", type=int, default=None,
                       help=f"PLAINTEXT port on {HOST} (default: from ${BOOTSTRAP_ENV}, else {DEFAULT_PORT})")
    start.add_argument("--controller-port", type=int, default=None, help="controller port (default: free)")
    start.add_argument("--secure", action="store_true",
                       help="also serve a SASL_SSL (SCRAM-SHA-512) and an mTLS listener with locally generated "
                            "certificates; prints the environment variables that connect to them")
    start.add_argument("--sasl-ssl-port", type=int, default=None,
                       help="SASL_SSL port with --secure (default: the previous one, else PORT+1, else free)")
    start.add_argument("--mtls-port", type=int, default=None,
                       help="mTLS port with --secure (default: the previous one, else PORT+2, else free)")
    start.add_argument("--nodes", type=int, default=None,
                       help="run a cluster of this many KRaft nodes (broker + controller each, one quorum) on "
                            "PORT, PORT+1, ...; 3 nodes: replication factor 3, min.insync.replicas 2 "
                            "(default: 1, or the node count of the cluster already in the data dir)")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    actions.choices["stop"].add_argument("--grace", type=float, default=15.0,
                                         help="seconds between SIGTERM and SIGKILL")
    output.add_json_option(actions.choices["status"], "the state of the broker or of each node")
    return kafka


def kafka_cli(args: argparse.Namespace) -> int:
    """Run one ``kafka`` action and print a one-line result. 0 ok, 1 error, 2 usage, 3 not running."""
    actions: dict[str, Callable[[LocalKafka, argparse.Namespace], int]] = {
        "start": _cli_start, "stop": _cli_stop, "status": _cli_status, "reset": _cli_reset}
    action = actions.get(args.kafka_action or "")
    if action is None:
        args.kafka_parser.print_help(sys.stderr)
        return 2

    try:
        nodes = getattr(args, "nodes", None)
        if nodes is not None and nodes < 1:
            raise LocalKafkaError(f"--nodes must be 1 or more, not {nodes}")
        data_dir = (args.data_dir or kafka_home() / "data").resolve()
        if (nodes or 1) > 1 or is_cluster(data_dir):
            return cluster_cli(LocalCluster(data_dir, nodes), args)
        return action(LocalKafka(args.data_dir), args)
    except LocalKafkaError as exc:
        print(f"kafka {args.kafka_action}: {exc}", file=sys.stderr)
        return 1

def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _describe(status: KafkaStatus) -> str:
    return f"{status.bootstrap} (pid {status.pid}, data {_shown(status.data_dir)})"


def _print_secured(kafka: LocalKafka, status: KafkaStatus) -> None:
    if status.sasl_ssl_port is None or status.mtls_port is None:
        return
    print(f"secured listeners (CA, client certificate and SCRAM password in {_shown(kafka.secure_files.directory)}):")
    for line in secure.env_lines(kafka.secure_files, status.sasl_ssl_port, status.mtls_port):
        print(f"  {line}")


def _cli_start(kafka: LocalKafka, args: argparse.Namespace) -> int:
    kafka.secure, kafka.sasl_ssl_port, kafka.mtls_port = args.secure, args.sasl_ssl_port, args.mtls_port
    before = kafka.status()
    if before.running and args.port in (None, before.port) and (before.sasl_ssl_port or not args.secure):
        print(f"kafka already running on {_describe(before)}")
        _print_secured(kafka, before)
        return 0
    if not kafka.jars_cached():
        find_java()
        find_maven()  # before the progress line: a missing tool is the one line shown
        print(f"fetching the Kafka {kafka_version()} jars with Maven (once) ...", file=sys.stderr, flush=True)
    began = time.monotonic()
    status = kafka.start(port=args.port, controller_port=args.controller_port, timeout=args.timeout)
    print(f"kafka running on {_describe(status)}, started in {time.monotonic() - began:.1f} s")
    _print_secured(kafka, status)
    return 0


def _cli_stop(kafka: LocalKafka, args: argparse.Namespace) -> int:
    pid = kafka.status().pid
    if kafka.stop(grace=args.grace):
        print(f"kafka stopped (pid {pid}, data {_shown(kafka.data_dir)})")
    else:
        print(f"kafka was not running (data {_shown(kafka.data_dir)})")
    return 0


def _node_json(status: KafkaStatus) -> dict[str, object]:
    return {"running": status.running, "pid": status.pid, "bootstrap": status.bootstrap, "port": status.port,
            "controller_port": status.controller_port, "sasl_ssl_port": status.sasl_ssl_port,
            "mtls_port": status.mtls_port}


def _cli_status(kafka: LocalKafka, args: argparse.Namespace) -> int:
    status = kafka.status()
    if args.json:
        output.emit_json({"state": "running" if status.running else "stopped", "data_dir": str(status.data_dir),
                          "nodes": [_node_json(status)]})
        return 0 if status.running else 3
    if status.running:
        print(f"kafka running on {_describe(status)}")
        _print_secured(kafka, status)
        return 0
    print(f"kafka stopped (data {_shown(status.data_dir)})")
    return 3


def _cli_reset(kafka: LocalKafka, _: argparse.Namespace) -> int:
    existed = kafka.data_dir.exists()
    kafka.reset()
    print(f"kafka data {'wiped' if existed else 'already absent'} ({_shown(kafka.data_dir)})")
    return 0


# ---------------------------------------------------------------- on a cluster


def cluster_cli(cluster: LocalCluster, args: argparse.Namespace) -> int:
    """``kafka start|stop|status|reset`` on a cluster data dir. 0 ok, 3 not (fully) running."""
    actions: dict[str, Callable[[LocalCluster, argparse.Namespace], int]] = {
        "start": _cluster_start, "stop": _cluster_stop, "status": _cluster_status,
        "reset": _cluster_reset}
    return actions[args.kafka_action](cluster, args)


def _describe_cluster(cluster: LocalCluster, statuses: list[KafkaStatus]) -> str:
    pids = ", ".join(str(s.pid) if s.running else "-" for s in statuses)
    return f"{cluster.bootstrap} (pids {pids}, data {cluster.data_dir})"


def _print_env(cluster: LocalCluster) -> None:
    layout = cluster.layout
    print("connect the pipeline with:")
    print(f"  AKECE_KAFKA_BOOTSTRAP_SERVERS={layout.bootstrap}")
    print(f"  AKECE_KAFKA_REPLICATION_FACTOR={layout.replication}")
    print(f"  AKECE_KAFKA_MIN_INSYNC_REPLICAS={layout.min_isr}")


def _cluster_start(cluster: LocalCluster, args: argparse.Namespace) -> int:
    if args.secure:
        raise LocalKafkaError("--secure serves a single node only: start the cluster without it")
    if args.controller_port is not None:
        raise LocalKafkaError("--controller-port applies to a single node: a cluster picks free controller ports")
    if args.port is not None and not cluster.layout_file.exists():
        cluster.first_port = args.port
    before = cluster.status()
    if all(s.running for s in before):
        print(f"kafka cluster already running on {_describe_cluster(cluster, before)}")
        _print_env(cluster)
        return 0
    began = time.monotonic()
    statuses = cluster.start(timeout=max(args.timeout, 90.0))
    print(f"kafka cluster of {len(statuses)} nodes running on {_describe_cluster(cluster, statuses)}, "
          f"started in {time.monotonic() - began:.1f} s")
    _print_env(cluster)
    return 0


def _cluster_stop(cluster: LocalCluster, args: argparse.Namespace) -> int:
    stopped = cluster.stop(grace=args.grace)
    word = "stopped" if stopped else "was not running"
    print(f"kafka cluster {word} ({cluster.layout.nodes} nodes, data {cluster.data_dir})")
    return 0


def _cluster_status(cluster: LocalCluster, args: argparse.Namespace) -> int:
    statuses = cluster.status()
    running = sum(s.running for s in statuses)
    state = "running" if running == len(statuses) else "stopped" if not running else "degraded"
    layout = cluster.layout
    nodes = [{**_node_json(status), "node_id": node_id, "port": layout.ports[node_id - 1],
              "controller_port": layout.controller_ports[node_id - 1]}
             for node_id, status in zip(cluster.node_ids(), statuses, strict=True)]
    if args.json:
        output.emit_json({"state": state, "bootstrap": cluster.bootstrap, "data_dir": str(cluster.data_dir),
                          "nodes": nodes})
        return 0 if state == "running" else 3
    print(f"kafka cluster {state}: {running} of {len(statuses)} nodes on {_describe_cluster(cluster, statuses)}")
    output.emit(output.table(["node", "state", "pid", "address", "controller"],
                             [[n["node_id"], "running" if n["running"] else "stopped", n["pid"] or "-",
                               f"{HOST}:{n['port']}", n["controller_port"]] for n in nodes]))
    return 0 if state == "running" else 3


def _cluster_reset(cluster: LocalCluster, _: argparse.Namespace) -> int:
    existed = cluster.data_dir.exists()
    cluster.reset()
    print(f"kafka data {'wiped' if existed else 'already absent'} ({cluster.data_dir})")
    return 0


__all__ = ["add_kafka_parser", "cluster_cli", "kafka_cli"]
