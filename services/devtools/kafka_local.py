"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) on this machine.

No Docker: ``kafka.Kafka`` runs on Java 17+ from the jars that Maven copies once, as pinned by
``deploy/kafka/pom.xml``, into ``<home>/jars/<kafka-version>/``. Used by
``akece-webhooks kafka start|stop|status|reset`` and by the test suite (``tests/kafka_broker.py``).

``<home>`` is ``$AKECE_KAFKA_HOME`` or ``<repo>/.kafka``. A data dir (default ``<home>/data``) holds::

    server.properties   rendered from deploy/kafka/server.properties.template on every start
    cluster.id          drawn once, reused by every start (the formatted storage stays valid)
    logs/               Kafka's log.dirs: topics and the KRaft metadata log (durable)
    broker.log          the broker's stdout and stderr (the previous run's: broker.log.1)
    broker.pid          present while a broker of ours runs
    broker.json         pid, ports and bootstrap of the latest start (the controller port is reused)
    secure/             with ``start --secure``: CA, certificates, SCRAM password (kafka_local_secure)

``start()`` is synchronous: it returns once the broker serves (metadata lists a broker and a
scratch topic can be created), running its asyncio probe with ``asyncio.run``. In async code use
``await kafka.start_async()`` or ``async with LocalKafka(...)``, which run it in a worker thread.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import TracebackType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from services.devtools import kafka_local_secure as secure
from services.shared.errors import AkeceError

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
NODE_ID = 1
BOOTSTRAP_ENV = "AKECE_KAFKA_BOOTSTRAP_SERVERS"
HOME_ENV = "AKECE_KAFKA_HOME"
JVM_OPTS_ENV = "AKECE_KAFKA_JVM_OPTS"
PROXIED_LISTENER = "PROXIED"  # advertised as a fault proxy's address (network-fault tests)
# Small heap. SerialGC: fewer threads and less memory than G1 at this size, same start time
# (measured ~2.0 s warm either way). -XX:TieredStopAtLevel=1 would save ~0.7 s but caps the JIT
# at C1 and slows the broker under load (make bench), so it is not used.
JVM_OPTS = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JARS_MARKER = "COMPLETE.json"
JAVA_HINT = "install openjdk-17-jre-headless (or set JAVA_HOME)"
MAVEN_HINT = "install maven (needed once, to download the Kafka jars from Maven Central)"
OWN_FILES = frozenset({"server.properties", "cluster.id", "logs", "broker.log", "broker.log.1",
                       "broker.pid", "broker.json", ".lock", "secure"})


class LocalKafkaError(AkeceError):
    """The local broker could not be resolved, started, stopped or wiped. The message says why."""


class PortInUseError(LocalKafkaError):
    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use on {HOST}: stop what listens there or pick another port")
        self.port = port


@dataclass(frozen=True)
class Quorum:
    """This node's place in a cluster: its id, the static voter set, and the replication it sets up."""

    node_id: int = NODE_ID
    voters: str | None = None  # ``id@host:controller_port,...``; None: this node alone
    replication: int = 1  # default and internal topics' replication factor
    min_isr: int = 1  # min.insync.replicas, default and internal topics


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    bootstrap: str | None
    data_dir: Path
    port: int | None = None
    controller_port: int | None = None
    sasl_ssl_port: int | None = None  # the secured listeners, when started with ``secure``
    mtls_port: int | None = None


# ---------------------------------------------------------------- locations and small helpers


def repo_root() -> Path:
    """The directory holding pyproject.toml, found upwards from this file."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise LocalKafkaError(f"no pyproject.toml above {__file__}: run from a checkout of the repository")


def kafka_home() -> Path:
    """Root of the jar cache and the default data dir: $AKECE_KAFKA_HOME or <repo>/.kafka."""
    override = os.environ.get(HOME_ENV, "").strip()
    return Path(override).expanduser().resolve() if override else repo_root() / ".kafka"


def deploy_dir() -> Path:
    return repo_root() / "deploy" / "kafka"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    """True when binding 127.0.0.1:port fails the way Kafka's own bind would (SO_REUSEADDR, like Java)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def default_port() -> int:
    """The port of $AKECE_KAFKA_BOOTSTRAP_SERVERS when it points at this machine, else 9092."""
    first = os.environ.get(BOOTSTRAP_ENV, "").split(",")[0].strip()
    match = re.fullmatch(r"(?:\w+://)?(127\.0\.0\.1|localhost):(\d+)", first)
    return int(match.group(2)) if match else DEFAULT_PORT


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, never containing '-' (argparse trips on it)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if "-" not in cluster_id:
            return cluster_id


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise start/stop/reset on one data dir across processes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- Java and the jars


def find_java() -> str:
    """The java executable (JAVA_HOME first), checked to be 17 or newer."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise LocalKafkaError(f"Java 17+ not found: {JAVA_HINT}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(2) if match and match.group(1) == "1" else match.group(1)) if match else 0
    if major < 17:
        raise LocalKafkaError(f"Java 17+ required, {java} is Java {major or '?'}: {JAVA_HINT}")
    return java


def find_maven() -> str:
    """The mvn executable on PATH. It honours MAVEN_OPTS (e.g. ``-Dmaven.repo.local=DIR``)."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalKafkaError(f"Maven not found: {MAVEN_HINT}")
    return mvn


def kafka_version(pom: Path | None = None) -> str:
    """The Kafka release pinned by the pom's <kafka.version> property."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(pom or deploy_dir() / "pom.xml").findtext("m:properties/m:kafka.version", None, ns)
    if not version:
        raise LocalKafkaError("deploy/kafka/pom.xml has no <kafka.version> property")
    return version.strip()


def _jars_complete(jar_dir: Path, pom_digest: str) -> bool:
    try:
        marker = json.loads((jar_dir / JARS_MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return bool(marker.get("pom_sha256") == pom_digest
                and all((jar_dir / name).is_file() for name in marker.get("jars", [])))


def resolve_jars(home: Path | None = None) -> Path:
    """The directory of the broker's jars, copied by Maven on first use (once per Kafka version)."""
    pom = deploy_dir() / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    jar_dir = (home or kafka_home()) / "jars" / kafka_version(pom)
    if _jars_complete(jar_dir, digest):
        return jar_dir
    staging = jar_dir.with_name(f"{jar_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        _copy_dependencies(pom, staging)
        jars = sorted(p.name for p in staging.glob("*.jar"))
        (staging / JARS_MARKER).write_text(json.dumps({"pom_sha256": digest, "jars": jars}, indent=1))
        _install_staging(staging, jar_dir, digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jar_dir


def _copy_dependencies(pom: Path, out: Path) -> None:
    cmd = [find_maven(), "-q", "-B", "-f", str(pom), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
           f"-DoutputDirectory={out}", "-DincludeScope=runtime"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise LocalKafkaError(f"mvn could not copy the Kafka jars (exit {done.returncode}):\n{output}")


def _install_staging(staging: Path, jar_dir: Path, digest: str) -> None:
    """Move the staged jars into place; a concurrent resolver that finished first wins."""
    jar_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(jar_dir)
    except OSError:
        if _jars_complete(jar_dir, digest):
            return
        shutil.rmtree(jar_dir)  # stale: an older pom's jars for the same Kafka version
        staging.rename(jar_dir)


# ---------------------------------------------------------------- processes


def _is_our_broker(pid: int, props: Path) -> bool:
    """The pid runs kafka.Kafka on this data dir's properties file (guards against pid reuse)."""
    if not Path("/proc/self").exists():  # no procfs (macOS): trust a live pid
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in args and str(props).encode() in args


def _raise_open_files_limit() -> None:
    """In the broker's child before exec: as many open files as the system allows (root), else the hard limit.

    A broker keeps files open per partition; a long test session creates thousands of topics, and at the
    limit the broker fails its log directory and shuts down ("Too many open files").
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        most = int(Path("/proc/sys/fs/nr_open").read_text())
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(most, hard), max(most, hard)))
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_exit(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> bool:
    """Wait up to timeout for pid to exit (a child via wait, others via a pidfd). True if it exited."""
    if proc is not None and proc.pid == pid:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    exited = _wait_pidfd(pid, timeout)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was a child launched by another instance
    return exited


def _wait_pidfd(pid: int, timeout: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfd (not Linux): poll until the deadline
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


async def _serves(bootstrap: str) -> bool:
    """One readiness probe: a broker is listed in metadata and a scratch topic can be created."""
    # The broker's own PLAINTEXT listener, probed before any settings exist: not a pipeline client
    # (those are built by services.shared.kafka with the security settings).
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    scratch = f"akece-ready-{uuid.uuid4().hex[:12]}"
    try:
        await admin.start()
        cluster: dict[str, Any] = await admin.describe_cluster()
        if not cluster.get("brokers"):
            return False
        created = await admin.create_topics([NewTopic(scratch, 1, 1)])
        if any(error_code not in (0, 36) for _, error_code, *_ in created.topic_errors):
            return False
        await admin.delete_topics([scratch])
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


async def _wait_serving(bootstrap: str, port: int, exit_code: Callable[[], int | None], budget: float) -> None:
    """Probe until the broker serves; raise LocalKafkaError if it dies or the budget runs out."""
    deadline = time.monotonic() + budget
    while exit_code() is None:
        if port_in_use(port) and await _serves(bootstrap):
            return
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"the broker did not serve {bootstrap} within {budget:g} s")
        await asyncio.sleep(0.2)
    raise LocalKafkaError(f"the broker process exited during startup (exit code {exit_code()})")


async def _secured_serve(files: secure.SecureFiles, sasl_port: int, mtls_port: int) -> None:
    """Describe the cluster through each secured listener with the pipeline's own client settings."""
    from services.shared import kafka
    from services.shared.settings import KafkaSettings, Settings

    for env in secure.client_env(files, sasl_port, mtls_port).values():
        fields = {name.removeprefix("AKECE_KAFKA_").lower(): value for name, value in env.items()}
        settings = Settings.model_construct(kafka=KafkaSettings(**fields, request_timeout_ms=10_000))
        async with kafka.started(kafka.admin(settings)) as admin:
            await admin.describe_cluster()


# ---------------------------------------------------------------- the broker


class LocalKafka:
    """One local broker bound to one data dir. ``start``/``stop`` are idempotent; so is ``close``.

    As a (sync or async) context manager it starts the broker on enter and, if this instance
    started it, stops it on exit.
    """

    def __init__(self, data_dir: Path | None = None, *, port: int | None = None,
                 controller_port: int | None = None, home: Path | None = None, secure: bool = False,
                 sasl_ssl_port: int | None = None, mtls_port: int | None = None, quorum: Quorum | None = None,
                 proxied: tuple[int, int] | None = None, heap: tuple[str, ...] = ()) -> None:
        self.home = home or kafka_home()
        self.quorum = quorum or Quorum()
        # (listen port, advertised port): a second PLAINTEXT listener advertised as a fault proxy's address
        self.proxied = proxied
        self.heap = heap  # JVM heap options replacing the defaults' (a cluster runs three brokers)
        self.data_dir = (data_dir or self.home / "data").resolve()
        self.port = port
        self.controller_port = controller_port
        self.secure = secure  # also serve SASL_SSL and mTLS listeners (kafka_local_secure)
        self.sasl_ssl_port = sasl_ssl_port
        self.mtls_port = mtls_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    # -- paths

    @property
    def props_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def info_file(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def secure_files(self) -> secure.SecureFiles:
        return secure.SecureFiles(self.data_dir / "secure")

    # -- public API

    def resolve_jars(self) -> Path:
        return resolve_jars(self.home)

    def jars_cached(self) -> bool:
        pom = deploy_dir() / "pom.xml"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        return _jars_complete(self.home / "jars" / kafka_version(pom), digest)

    def status(self) -> KafkaStatus:
        pid = self._live_pid()
        info = self._read_info() if pid else {}
        port = info.get("port")
        return KafkaStatus(running=pid is not None, pid=pid, data_dir=self.data_dir,
                           bootstrap=f"{HOST}:{port}" if port else None, port=port,
                           controller_port=info.get("controller_port"), sasl_ssl_port=info.get("sasl_ssl_port"),
                           mtls_port=info.get("mtls_port"))

    def start(self, port: int | None = None, data_dir: Path | None = None,
              controller_port: int | None = None, timeout: float = 60.0) -> KafkaStatus:
        """Start the broker (or find it already running on this data dir) and wait until it serves.

        Arguments override the constructor's and stick to this instance. The port defaults to
        ``default_port()``; the controller port to the previous start's, else a free one.
        """
        _refuse_running_loop()
        self._adopt(port, data_dir, controller_port)
        with _locked(self.data_dir):
            running = self.status()
            if running.running:
                return self._already_running(running)
            self.pid_file.unlink(missing_ok=True)
            port, controller_port = self._ports()
            secured = self._secure_ports(port, controller_port) if self.secure else None
            java, jars = find_java(), self.resolve_jars()
            files = self._secure_material() if secured else None
            self._write_props(port, controller_port, secure.template_values(files, *(secured or (None, None))))
            self._format(java, jars, files)
            self._launch(java, jars, port, controller_port, secured)
            self._await_serving(port, timeout)
            if files is not None and secured is not None:
                self._await_secured(files, *secured)
            return self.status()

    async def start_async(self, port: int | None = None, data_dir: Path | None = None,
                          controller_port: int | None = None,
                          timeout: float = 60.0,
                          ) -> KafkaStatus:
        return await asyncio.to_thread(self.start, port, data_dir, controller_port, timeout)

    def stop(self, grace: float = 15.0) -> bool:
        """SIGTERM the broker, SIGKILL it after ``grace`` seconds. False if none was running."""
        if not self.data_dir.is_dir():
            return False
        with _locked(self.data_dir):
            pid = self._live_pid()
            if pid is not None:
                self._terminate(pid, grace)
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            return pid is not None

    def reset(self) -> None:
        """Stop the broker if it runs and wipe the data dir.

        A dir holding files kafka_local did not create is refused before anything is stopped.
        """
        if not self.data_dir.exists():
            return
        foreign = sorted(p.name for p in self.data_dir.iterdir()
                         if p.name not in OWN_FILES and not p.name.startswith(("hs_err", ".secure-")))
        if foreign:
            raise LocalKafkaError(f"refusing to wipe {self.data_dir}: it holds files kafka_local did "
                                  f"not create ({', '.join(foreign[:5])}); the broker was left as it was")
        self.stop()
        shutil.rmtree(self.data_dir)

    def close(self) -> None:
        """Stop the broker if this instance started it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._proc is not None:
            self.stop()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> LocalKafka:
        await self.start_async()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # -- steps of start

    def _adopt(self, port: int | None, data_dir: Path | None, controller_port: int | None) -> None:
        self.data_dir = data_dir.resolve() if data_dir else self.data_dir
        self.port = port or self.port
        self.controller_port = controller_port or self.controller_port
        self._closed = False

    def _already_running(self, running: KafkaStatus) -> KafkaStatus:
        if self.port is not None and running.port != self.port:
            raise LocalKafkaError(f"a broker on {self.data_dir} already runs on port {running.port} "
                                  f"(pid {running.pid}): stop it first to use port {self.port}")
        if self.secure and running.sasl_ssl_port is None:
            raise LocalKafkaError(f"a broker on {self.data_dir} already runs without the secured listeners "
                                  f"(pid {running.pid}): stop it first to start it with --secure")
        return running

    def _ports(self) -> tuple[int, int]:
        port = self.port or default_port()
        controller_port = self.controller_port or self._previous_controller_port(port)
        if port == controller_port:
            raise LocalKafkaError(f"the broker and controller ports must differ (both {port})")
        for candidate in (port, controller_port):
            if port_in_use(candidate):
                raise PortInUseError(candidate)
        return port, controller_port

    def _secure_ports(self, port: int, controller_port: int) -> tuple[int, int]:
        """SASL_SSL and mTLS ports: given, else the previous start's, else port+1 and port+2, else free ones."""
        previous = self._read_info()
        taken = {port, controller_port}
        chosen: list[int] = []
        for given, key, offset in ((self.sasl_ssl_port, "sasl_ssl_port", 1), (self.mtls_port, "mtls_port", 2)):
            if given is not None:
                if given in taken or port_in_use(given):
                    raise PortInUseError(given)
                candidate = given
            else:
                options = [previous.get(key), port + offset]
                candidate = next((c for c in options if isinstance(c, int) and c not in taken
                                  and not port_in_use(c)), None) or free_port()
            taken.add(candidate)
            chosen.append(candidate)
        return chosen[0], chosen[1]

    def _secure_material(self) -> secure.SecureFiles:
        """The certificates and SCRAM password; refused on storage formatted without the SCRAM user."""
        files = self.secure_files
        if self._formatted(self._cluster_id()) and not files.formatted_marker.exists():
            raise LocalKafkaError(
                f"{self.data_dir} was formatted without the SCRAM user (Kafka adds SCRAM credentials only when "
                "it formats the storage): wipe it with `akece-webhooks kafka reset` or use another --data-dir")
        try:
            return secure.ensure_material(files.directory)
        except secure.CertificateError as exc:
            raise LocalKafkaError(str(exc)) from None

    def _await_secured(self, files: secure.SecureFiles, sasl_port: int, mtls_port: int) -> None:
        """Connect to each secured listener as a client would; take the broker down if one fails."""
        try:
            asyncio.run(_secured_serve(files, sasl_port, mtls_port))
        except BaseException as exc:
            if self._proc is not None:
                self._terminate(self._proc.pid, grace=5)
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            if isinstance(exc, AkeceError):
                raise LocalKafkaError(f"the broker started but a secured listener does not serve: {exc}") from None
            raise

    def _previous_controller_port(self, port: int) -> int:
        previous = self._read_info().get("controller_port")
        if isinstance(previous, int) and previous != port and not port_in_use(previous):
            return previous
        return free_port()

    def _write_props(self, port: int, controller_port: int, extra: dict[str, str]) -> None:
        template = Template((deploy_dir() / "server.properties.template").read_text())
        q = self.quorum
        self.props_file.write_text(template.substitute(
            node_id=q.node_id, voters=q.voters or f"{q.node_id}@{HOST}:{controller_port}", port=port,
            controller_port=controller_port, log_dir=self.data_dir / "logs", replication=q.replication,
            min_isr=q.min_isr, **self._proxy_values(), **extra))

    def _proxy_values(self) -> dict[str, str]:
        if self.proxied is None:
            return {"proxy_listener": "", "proxy_advertised": "", "proxy_protocol": ""}
        listen, advertised = self.proxied
        return {"proxy_listener": f",{PROXIED_LISTENER}://{HOST}:{listen}",
                "proxy_advertised": f",{PROXIED_LISTENER}://{HOST}:{advertised}",
                "proxy_protocol": f",{PROXIED_LISTENER}:PLAINTEXT"}

    def _cluster_id(self) -> str:
        path = self.data_dir / "cluster.id"
        if not path.exists():
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()

    def _formatted(self, cluster_id: str) -> bool:
        try:
            meta = (self.data_dir / "logs" / "meta.properties").read_text()
        except FileNotFoundError:
            return False
        return f"cluster.id={cluster_id}" in meta.splitlines()

    def _format(self, java: str, jars: Path, files: secure.SecureFiles | None) -> None:
        """Format the storage once (skipped when meta.properties already names our cluster: -0.8 s).

        With ``files`` (``--secure``) the first format also creates the SCRAM user."""
        cluster_id = self._cluster_id()
        if self._formatted(cluster_id):
            return
        scram = secure.scram_format_arguments(files) if files else []
        cmd = [java, *JVM_OPTS, "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format",
               "-t", cluster_id, "-c", str(self.props_file), "--ignore-formatted", *scram]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.data_dir)
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise LocalKafkaError(f"formatting {self.data_dir / 'logs'} failed:\n{output}")
        if files is not None:
            files.formatted_marker.write_text(f"{cluster_id}\n")

    def _launch(self, java: str, jars: Path, port: int, controller_port: int,
                secured: tuple[int, int] | None) -> None:
        if self.log_file.exists():
            self.log_file.replace(self.data_dir / "broker.log.1")
        extra = os.environ.get(JVM_OPTS_ENV, "").split()
        cmd = [java, *JVM_OPTS, *self.heap, *extra, f"-Dlog4j2.configurationFile={deploy_dir() / 'log4j2.yaml'}",
               "-cp", f"{jars}/*", "kafka.Kafka", str(self.props_file)]
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=self.data_dir, start_new_session=True,
                                          preexec_fn=_raise_open_files_limit)
        pid = self._proc.pid
        self.pid_file.write_text(f"{pid}\n")
        info = {"pid": pid, "port": port, "controller_port": controller_port,
                "bootstrap": f"{HOST}:{port}", "started_at": time.time(), "kafka_version": jars.name,
                "sasl_ssl_port": secured[0] if secured else None, "mtls_port": secured[1] if secured else None}
        self.info_file.write_text(json.dumps(info, indent=1) + "\n")

    def _await_serving(self, port: int, timeout: float) -> None:
        """Wait for readiness; on failure or interruption (Ctrl-C) take the half-started broker down."""
        proc = self._proc
        assert proc is not None
        try:
            asyncio.run(_wait_serving(f"{HOST}:{port}", port, proc.poll, timeout))
        except BaseException as exc:
            self._terminate(proc.pid, grace=5)
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            if isinstance(exc, LocalKafkaError):
                log_tail = tail(self.log_file)
                raise LocalKafkaError(f"{exc}; last lines of {self.log_file}:\n{log_tail}") from None
            raise

    # -- process bookkeeping

    def _live_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _is_our_broker(pid, self.props_file) else None

    def _read_info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads(self.info_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return info

    def _terminate(self, pid: int, grace: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if _wait_exit(pid, grace, self._proc):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_exit(pid, 10, self._proc):
            raise LocalKafkaError(f"broker pid {pid} survived SIGKILL")


def _refuse_running_loop() -> None:
    """start() blocks and runs its probe with asyncio.run: not on a thread that runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise LocalKafkaError("LocalKafka.start() blocks: in async code use `await kafka.start_async()` "
                          "or `async with LocalKafka(...)`")


# ---------------------------------------------------------------- command line


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
    return kafka


def kafka_cli(args: argparse.Namespace) -> int:
    """Run one ``kafka`` action and print a one-line result. 0 ok, 1 error, 2 usage, 3 not running."""
    actions: dict[str, Callable[[LocalKafka, argparse.Namespace], int]] = {
        "start": _cli_start, "stop": _cli_stop, "status": _cli_status, "reset": _cli_reset}
    action = actions.get(args.kafka_action or "")
    if action is None:
        args.kafka_parser.print_help(sys.stderr)
        return 2
    from services.devtools import kafka_local_cluster as cluster

    try:
        nodes = getattr(args, "nodes", None)
        if nodes is not None and nodes < 1:
            raise LocalKafkaError(f"--nodes must be 1 or more, not {nodes}")
        data_dir = (args.data_dir or kafka_home() / "data").resolve()
        if (nodes or 1) > 1 or cluster.is_cluster(data_dir):
            return cluster.cluster_cli(cluster.LocalCluster(data_dir, nodes), args)
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


def _cli_status(kafka: LocalKafka, _: argparse.Namespace) -> int:
    status = kafka.status()
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


__all__ = ["KafkaStatus", "LocalKafka", "LocalKafkaError", "PortInUseError", "Quorum", "add_kafka_parser",
           "default_port", "find_java", "find_maven", "free_port", "kafka_cli", "kafka_home", "new_cluster_id",
           "resolve_jars"]
