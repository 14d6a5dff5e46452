"""Which real Kafka broker the test session uses.

1. ``AKECE_KAFKA_BOOTSTRAP_SERVERS`` set: that broker, untouched (CI services, a shared dev broker).
2. Otherwise an isolated local broker (``services.devtools.kafka_local``) on free ports in a
   temporary data dir, stopped and removed afterwards.
3. Only when Java is missing and a Docker engine answers ``docker info`` quickly: testcontainers'
   ``KafkaContainer`` (KRaft). Without Docker that path is skipped and the local broker's error
   says what to install.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.devtools.kafka_commands import add_kafka_parser
from services.devtools.kafka_errors import PortInUseError
from services.devtools.kafka_local import KafkaStatus, LocalKafka
from services.devtools.ports import BOOTSTRAP_ENV, free_port

KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
START_ATTEMPTS = 3  # free ports can be taken between picking and binding


@contextlib.contextmanager
def broker_for_tests() -> Iterator[str]:
    """Yield the bootstrap servers ("host:port") of a running broker for this test session."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external
    elif shutil.which("java") is None and not os.environ.get("JAVA_HOME") and _docker_answers():
        with _docker_broker() as bootstrap:
            yield bootstrap
    else:
        with _local_broker() as bootstrap:
            yield bootstrap


@contextlib.contextmanager
def _local_broker() -> Iterator[str]:
    data_dir = Path(tempfile.mkdtemp(prefix="akece-kafka-"))
    kafka = LocalKafka(data_dir)
    try:
        status = _start_on_free_ports(kafka)
        assert status.bootstrap is not None
        yield status.bootstrap
    finally:
        kafka.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _start_on_free_ports(kafka: LocalKafka) -> KafkaStatus:
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return kafka.start(port=free_port(), controller_port=free_port())
        except PortInUseError:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _docker_answers(timeout: float = 3.0) -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=timeout, check=False)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def _docker_broker() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
        yield str(container.get_bootstrap_server())


def kafka_cli(*argv: str) -> int:
    """``akece-webhooks kafka ARGV...`` run in this process; its exit code."""
    parser = argparse.ArgumentParser(prog="akece-webhooks")
    add_kafka_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["kafka", *argv])
    code: int = args.func(args)
    return code


class RestartableBroker:
    """A test module's own broker, to stop, kill and restart: same ports and data dir on every start, so a
    restart is the same broker."""

    def __init__(self, data_dir: Path) -> None:
        self.kafka = LocalKafka(data_dir, port=free_port(), controller_port=free_port())

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka.port}"

    def running(self) -> bool:
        return self.kafka.status().running

    async def start(self) -> None:
        await self.kafka.start_async()

    async def stop(self) -> None:
        await asyncio.to_thread(self.kafka.stop)

    async def kill(self) -> None:
        """SIGKILL, like a crashed machine: no clean shutdown, no flush."""
        status, proc = self.kafka.status(), self.kafka._proc
        assert status.pid is not None
        os.kill(status.pid, signal.SIGKILL)
        if proc is not None:
            await asyncio.to_thread(proc.wait, 15)
        await self.stop()  # forgets the pid file


@contextlib.contextmanager
def restartable_broker(data_dir: Path) -> Iterator[RestartableBroker]:
    """A started ``RestartableBroker`` in ``data_dir`` (a module fixture's own broker), stopped on exit."""
    own = RestartableBroker(data_dir)
    own.kafka.start()
    try:
        yield own
    finally:
        own.kafka.stop()
