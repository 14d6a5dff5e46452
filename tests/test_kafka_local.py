"""The local broker, for real: lifecycle, durability across restarts, the CLI, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.devtools.broker_dir import new_cluster_id
from services.devtools.jars import HOME_ENV, JVM_OPTS_ENV
from services.devtools.kafka_errors import LocalKafkaError, PortInUseError
from services.devtools.kafka_local import LocalKafka
from services.devtools.ports import BOOTSTRAP_ENV, default_port, free_port
from tests.kafka_broker import kafka_cli

TOPIC = "lifecycle"


async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, value, key=key), 30)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of partition 0, read without a consumer group."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records = []
        async with asyncio.timeout(30):
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records += [(r.key, r.value) for r in batch.get(tp, [])]
        return records
    finally:
        await consumer.stop()


@pytest.mark.kafka
@pytest.mark.slow
def test_lifecycle_is_durable_across_restarts(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "data", port=free_port(), controller_port=free_port())
    assert not kafka.status().running
    try:
        first = kafka.start()
        assert first.running and first.pid and first.bootstrap == f"127.0.0.1:{kafka.port}"
        assert kafka.start().pid == first.pid, "a second start finds the running broker"
        with pytest.raises(LocalKafkaError, match="already runs on port"):
            LocalKafka(kafka.data_dir).start(port=free_port())
        asyncio.run(_produce(first.bootstrap, TOPIC, b"key", b"durable"))
        cluster_id = (kafka.data_dir / "cluster.id").read_text()

        assert kafka.stop()
        assert not kafka.status().running and not kafka.pid_file.exists()
        assert not kafka.stop(), "stopping a stopped broker is a no-op"

        second = kafka.start()
        assert second.running and second.pid != first.pid
        assert second.bootstrap is not None
        assert asyncio.run(_read_all(second.bootstrap, TOPIC)) == [(b"key", b"durable")]
        assert (kafka.data_dir / "cluster.id").read_text() == cluster_id
    finally:
        kafka.stop()
    assert not kafka.status().running
    kafka.reset()
    assert not kafka.data_dir.exists()


@pytest.mark.kafka
@pytest.mark.slow
def test_async_context_manager_stops_what_it_started(tmp_path: Path) -> None:
    async def scenario() -> LocalKafka:
        async with LocalKafka(tmp_path, port=free_port(), controller_port=free_port()) as kafka:
            status = kafka.status()
            assert status.running and status.bootstrap is not None
            admin = AIOKafkaAdminClient(bootstrap_servers=status.bootstrap)
            await admin.start()
            try:
                assert (await admin.describe_cluster())["brokers"]
            finally:
                await admin.close()
        await kafka.aclose()  # idempotent
        return kafka

    assert not asyncio.run(scenario()).status().running


@pytest.mark.kafka
@pytest.mark.slow
def test_cli_start_status_stop_reset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    port = free_port()
    try:
        assert kafka_cli("start", "--port", str(port), "--data-dir", data) == 0
        assert f"kafka running on 127.0.0.1:{port} (pid " in capsys.readouterr().out
        assert kafka_cli("start", "--data-dir", data) == 0
        assert "kafka already running on" in capsys.readouterr().out
        assert kafka_cli("status", "--data-dir", data) == 0
        capsys.readouterr()
        assert kafka_cli("status", "--json", "--data-dir", data) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["state"] == "running" and shown["nodes"][0]["bootstrap"] == f"127.0.0.1:{port}", shown

        precious = Path(data) / "notes.txt"
        precious.write_text("not the broker's")
        assert kafka_cli("reset", "--data-dir", data) == 1
        assert "refusing to wipe" in capsys.readouterr().err
        assert kafka_cli("status", "--data-dir", data) == 0, "a refused reset leaves the broker running"
        assert precious.read_text() == "not the broker's"
        precious.unlink()
    finally:
        assert kafka_cli("stop", "--data-dir", data) == 0
    assert "kafka stopped (pid " in capsys.readouterr().out
    assert kafka_cli("status", "--data-dir", data) == 3
    capsys.readouterr()
    assert kafka_cli("status", "--json", "--data-dir", data) == 3
    assert json.loads(capsys.readouterr().out)["state"] == "stopped"
    assert kafka_cli("reset", "--data-dir", data) == 0
    assert not Path(data).exists()


def test_blocking_start_is_refused_inside_an_event_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        LocalKafka(tmp_path, port=free_port()).start()

    with pytest.raises(LocalKafkaError, match="start_async"):
        asyncio.run(scenario())
    assert not (tmp_path / "broker.pid").exists()


def test_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} is in use") as caught:
            LocalKafka(tmp_path, port=port, controller_port=free_port()).start()
    assert caught.value.port == port


def test_controller_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} is in use"):
            LocalKafka(tmp_path, port=free_port(), controller_port=port).start()


def test_same_broker_and_controller_port_is_refused(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(LocalKafkaError, match="must differ"):
        LocalKafka(tmp_path, port=port, controller_port=port).start()


def test_missing_java_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalKafkaError, match="Java 17\\+ not found: install openjdk-17-jre-headless"):
        LocalKafka(tmp_path / "data", port=free_port(), controller_port=free_port()).start()


@pytest.fixture
def java_only_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds java and nothing else; an empty jar cache ($AKECE_KAFKA_HOME), so Maven is needed."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("needs java on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(Path(java).resolve())
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    return bin_dir


def test_missing_maven_says_what_to_install(java_only_path: Path, tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match=r"^Maven not found: install maven") as caught:
        LocalKafka(tmp_path / "data", port=free_port(), controller_port=free_port()).start()
    assert "\n" not in str(caught.value)


def test_cli_missing_maven_is_one_line(java_only_path: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert kafka_cli("start", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "kafka start: Maven not found: install maven (needed once, to download the Kafka jars from Maven Central)"]
    assert captured.out == ""


@pytest.mark.kafka
@pytest.mark.slow
def test_a_broker_that_fails_to_start_shows_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JVM_OPTS_ENV, "-XX:+AkeceNoSuchOption")  # the JVM refuses it and exits 1
    kafka = LocalKafka(tmp_path / "data", port=free_port(), controller_port=free_port())
    with pytest.raises(LocalKafkaError) as caught:
        kafka.start(timeout=60)
    message = str(caught.value)
    assert message.startswith("the broker process exited during startup (exit code 1); last lines of ")
    assert str(kafka.log_file) in message
    assert "Unrecognized VM option 'AkeceNoSuchOption'" in message
    assert not kafka.status().running and not kafka.pid_file.exists()


def test_cli_reports_errors_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert kafka_cli("start", "--port", str(port), "--data-dir", str(tmp_path)) == 1
    assert f"port {port} is in use" in capsys.readouterr().err


def test_stale_pid_file_is_not_a_running_broker(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    kafka.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not kafka.Kafka on this data dir
    assert not kafka.status().running
    assert not kafka.stop()
    assert not kafka.pid_file.exists()


def test_reset_refuses_a_directory_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(LocalKafkaError, match="refusing to wipe"):
        LocalKafka(tmp_path).reset()
    assert (tmp_path / "thesis.tex").exists()


def test_default_port_follows_a_local_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "localhost:19092,localhost:19093")
    assert default_port() == 19092
    monkeypatch.setenv(BOOTSTRAP_ENV, "kafka.internal:9094")
    assert default_port() == 9092
    monkeypatch.delenv(BOOTSTRAP_ENV)
    assert default_port() == 9092


def test_cluster_ids_are_kafka_uuids_without_dashes() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and "-" not in i and "=" not in i for i in ids)
