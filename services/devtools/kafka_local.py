"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) on this machine.

No Docker: ``kafka.Kafka`` runs on Java 17+ from the jars that Maven copies once (``jars``). Used by
``akece-webhooks kafka start|stop|status|reset`` (``kafka_commands``) and by the test suite
(``tests/kafka_broker.py``). A data dir (default ``<home>/data``) holds the files ``broker_dir``
describes; its ports are picked by ``ports``, its process watched by ``processes`` and its
readiness probed by ``readiness``.

``start()`` is synchronous: it returns once the broker serves (metadata lists a broker and a
scratch topic can be created), running its asyncio probe with ``asyncio.run``. In async code use
``await kafka.start_async()`` or ``async with LocalKafka(...)``, which run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from services.devtools import kafka_local_secure as secure
from services.devtools import ports, readiness
from services.devtools.broker_dir import BrokerDir, Quorum
from services.devtools.jars import JVM_OPTS, JVM_OPTS_ENV, deploy_dir, find_java, jars_cached, kafka_home, resolve_jars
from services.devtools.kafka_errors import HOST, LocalKafkaError
from services.devtools.processes import locked, raise_open_files_limit, tail, terminate
from services.shared.errors import AkeceError


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
    def files(self) -> BrokerDir:
        return BrokerDir(self.data_dir)

    @property
    def pid_file(self) -> Path:
        return self.files.pid_file

    @property
    def log_file(self) -> Path:
        return self.files.log_file

    @property
    def secure_files(self) -> secure.SecureFiles:
        return self.files.secure_files

    # -- public API

    def resolve_jars(self) -> Path:
        return resolve_jars(self.home)

    def jars_cached(self) -> bool:
        return jars_cached(self.home)

    def status(self) -> KafkaStatus:
        pid = self.files.live_pid()
        info = self.files.read_info() if pid else {}
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
        readiness.refuse_running_loop()
        self._adopt(port, data_dir, controller_port)
        with locked(self.data_dir):
            running = self.status()
            if running.running:
                return self._already_running(running)
            files = self.files
            files.pid_file.unlink(missing_ok=True)
            previous = files.read_info()
            port, controller_port = ports.broker_ports(self.port, self.controller_port, previous)
            secured = (ports.secure_ports(port, controller_port, self.sasl_ssl_port, self.mtls_port, previous)
                       if self.secure else None)
            java, jars = find_java(), self.resolve_jars()
            material = self._secure_material() if secured else None
            files.write_props(self.quorum, self.proxied, port, controller_port,
                              secure.template_values(material, *(secured or (None, None))))
            files.format(java, jars, material)
            self._launch(java, jars, port, controller_port, secured)
            self._await_serving(port, timeout)
            if material is not None and secured is not None:
                self._await_secured(material, *secured)
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
        with locked(self.data_dir):
            pid = self.files.live_pid()
            if pid is not None:
                terminate(pid, grace, self._proc)
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            return pid is not None

    def reset(self) -> None:
        """Stop the broker if it runs and wipe the data dir.

        A dir holding files kafka_local did not create is refused before anything is stopped.
        """
        if not self.data_dir.exists():
            return
        foreign = self.files.foreign()
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

    def _secure_material(self) -> secure.SecureFiles:
        """The certificates and SCRAM password; refused on storage formatted without the SCRAM user."""
        files = self.secure_files
        if self.files.formatted() and not files.formatted_marker.exists():
            raise LocalKafkaError(
                f"{self.data_dir} was formatted without the SCRAM user (Kafka adds SCRAM credentials only when "
                "it formats the storage): wipe it with `akece-webhooks kafka reset` or use another --data-dir")
        try:
            return secure.ensure_material(files.directory)
        except secure.CertificateError as exc:
            raise LocalKafkaError(str(exc)) from None

    def _launch(self, java: str, jars: Path, port: int, controller_port: int,
                secured: tuple[int, int] | None) -> None:
        if self.log_file.exists():
            self.log_file.replace(self.data_dir / "broker.log.1")
        extra = os.environ.get(JVM_OPTS_ENV, "").split()
        cmd = [java, *JVM_OPTS, *self.heap, *extra, f"-Dlog4j2.configurationFile={deploy_dir() / 'log4j2.yaml'}",
               "-cp", f"{jars}/*", "kafka.Kafka", str(self.files.props_file)]
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=self.data_dir, start_new_session=True,
                                          preexec_fn=raise_open_files_limit)
        pid = self._proc.pid
        self.pid_file.write_text(f"{pid}\n")
        self.files.write_info({
            "pid": pid, "port": port, "controller_port": controller_port, "bootstrap": f"{HOST}:{port}",
            "started_at": time.time(), "kafka_version": jars.name,
            "sasl_ssl_port": secured[0] if secured else None, "mtls_port": secured[1] if secured else None})

    def _await_serving(self, port: int, timeout: float) -> None:
        """Wait for readiness; on failure or interruption (Ctrl-C) take the half-started broker down."""
        proc = self._proc
        assert proc is not None
        try:
            asyncio.run(readiness.wait_serving(f"{HOST}:{port}", port, proc.poll, timeout))
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, LocalKafkaError):
                log_tail = tail(self.log_file)
                raise LocalKafkaError(f"{exc}; last lines of {self.log_file}:\n{log_tail}") from None
            raise

    def _await_secured(self, files: secure.SecureFiles, sasl_port: int, mtls_port: int) -> None:
        """Connect to each secured listener as a client would; take the broker down if one fails."""
        try:
            asyncio.run(readiness.secured_serve(files, sasl_port, mtls_port))
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, AkeceError):
                raise LocalKafkaError(f"the broker started but a secured listener does not serve: {exc}") from None
            raise

    def _abandon(self) -> None:
        """Take a half-started broker down and forget it."""
        if self._proc is not None:
            terminate(self._proc.pid, 5, self._proc)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None


__all__ = ["KafkaStatus", "LocalKafka"]
