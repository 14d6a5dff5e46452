"""One broker's data dir and the files in it: properties, cluster id, formatted storage, pid, info.

    server.properties   rendered from deploy/kafka/server.properties.template on every start
    cluster.id          drawn once, reused by every start (the formatted storage stays valid)
    logs/               Kafka's log.dirs: topics and the KRaft metadata log (durable)
    broker.log          the broker's stdout and stderr (the previous run's: broker.log.1)
    broker.pid          present while a broker of ours runs
    broker.json         pid, ports and bootstrap of the latest start (the controller port is reused)
    secure/             with ``start --secure``: CA, certificates, SCRAM password (kafka_local_secure)
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from services.devtools import kafka_local_secure as secure
from services.devtools.jars import JVM_OPTS, deploy_dir
from services.devtools.kafka_errors import HOST, LocalKafkaError
from services.devtools.processes import is_our_broker

NODE_ID = 1
PROXIED_LISTENER = "PROXIED"  # advertised as a fault proxy's address (network-fault tests)
OWN_FILES = frozenset({"server.properties", "cluster.id", "logs", "broker.log", "broker.log.1",
                       "broker.pid", "broker.json", ".lock", "secure"})


@dataclass(frozen=True)
class Quorum:
    """This node's place in a cluster: its id, the static voter set, and the replication it sets up."""

    node_id: int = NODE_ID
    voters: str | None = None  # ``id@host:controller_port,...``; None: this node alone
    replication: int = 1  # default and internal topics' replication factor
    min_isr: int = 1  # min.insync.replicas, default and internal topics


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, never containing '-' (argparse trips on it)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if "-" not in cluster_id:
            return cluster_id


@dataclass(frozen=True)
class BrokerDir:
    """The files of one broker's data dir; reads and writes them, starts nothing."""

    path: Path

    @property
    def props_file(self) -> Path:
        return self.path / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.path / "broker.pid"

    @property
    def info_file(self) -> Path:
        return self.path / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.path / "broker.log"

    @property
    def secure_files(self) -> secure.SecureFiles:
        return secure.SecureFiles(self.path / "secure")

    def foreign(self) -> list[str]:
        """Names in the dir that a broker of ours did not create (a wipe refuses them)."""
        return sorted(p.name for p in self.path.iterdir()
                      if p.name not in OWN_FILES and not p.name.startswith(("hs_err", ".secure-")))

    def live_pid(self) -> int | None:
        """The pid of the broker of ours running on this dir, if one runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if is_our_broker(pid, self.props_file) else None

    def read_info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads(self.info_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return info

    def write_info(self, info: dict[str, Any]) -> None:
        self.info_file.write_text(json.dumps(info, indent=1) + "\n")

    def write_props(self, quorum: Quorum, proxied: tuple[int, int] | None, port: int, controller_port: int,
                    extra: dict[str, str]) -> None:
        template = Template((deploy_dir() / "server.properties.template").read_text())
        q = quorum
        self.props_file.write_text(template.substitute(
            node_id=q.node_id, voters=q.voters or f"{q.node_id}@{HOST}:{controller_port}", port=port,
            controller_port=controller_port, log_dir=self.path / "logs", replication=q.replication,
            min_isr=q.min_isr, **_proxy_values(proxied), **extra))

    def cluster_id(self) -> str:
        path = self.path / "cluster.id"
        if not path.exists():
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()

    def formatted(self) -> bool:
        """The storage is formatted for this dir's cluster id."""
        try:
            meta = (self.path / "logs" / "meta.properties").read_text()
        except FileNotFoundError:
            return False
        return f"cluster.id={self.cluster_id()}" in meta.splitlines()

    def format(self, java: str, jars: Path, files: secure.SecureFiles | None) -> None:
        """Format the storage once (skipped when meta.properties already names our cluster: -0.8 s).

        With ``files`` (``--secure``) the first format also creates the SCRAM user."""
        if self.formatted():
            return
        cluster_id = self.cluster_id()
        scram = secure.scram_format_arguments(files) if files else []
        cmd = [java, *JVM_OPTS, "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format",
               "-t", cluster_id, "-c", str(self.props_file), "--ignore-formatted", *scram]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.path)
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise LocalKafkaError(f"formatting {self.path / 'logs'} failed:\n{output}")
        if files is not None:
            files.formatted_marker.write_text(f"{cluster_id}\n")


def _proxy_values(proxied: tuple[int, int] | None) -> dict[str, str]:
    if proxied is None:
        return {"proxy_listener": "", "proxy_advertised": "", "proxy_protocol": ""}
    listen, advertised = proxied
    return {"proxy_listener": f",{PROXIED_LISTENER}://{HOST}:{listen}",
            "proxy_advertised": f",{PROXIED_LISTENER}://{HOST}:{advertised}",
            "proxy_protocol": f",{PROXIED_LISTENER}:PLAINTEXT"}


__all__ = ["NODE_ID", "OWN_FILES", "PROXIED_LISTENER", "BrokerDir", "Quorum", "new_cluster_id"]
