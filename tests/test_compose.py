"""The compose stack (deploy/compose/docker-compose.yml): valid against the Compose Specification, shaped
as documented, and the project's services run from it with podman-compose.

These machines reach no image registry, so the podman-compose test cannot pull ``apache/kafka``,
``prom/prometheus`` or ``grafana/grafana-oss``: it runs the project's own services (``topics``, ``api``,
``router``, ``delivery``, from the image the tests build) with an override file that puts them on the
host's network and points them at the session broker. The rest of the stack is checked offline
(schema, promtool, the provisioning mounts).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from schemas.examples import example
from services.devtools.ports import free_port
from tests.containers import PREFIX, Image, Podman, wait_ready
from tests.receiver import Receiver
from tests.test_alert_rules import ALERTS, JOBS, run_promtool

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
BIN = Path(sys.executable).parent
TOKEN = "compose-admin-token"
PROJECT_SERVICES = ("api", "router", "delivery")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_compose_check_catches_a_wrong_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart: [sometimes]\n", 1))
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout


def test_compose_stack_has_every_part() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "topics", "api", "router", "delivery", "rules", "prometheus", "grafana"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("docker.io/apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["topics"]["command"] == ["topics", "ensure"]
    assert services["topics"]["restart"] == "no"
    assert services["api"]["command"] == ["api"] and services["router"]["command"] == ["router"]
    assert services["delivery"]["command"] == ["deliver"]
    for name in PROJECT_SERVICES:
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    # Scalable: no fixed container name and no published port on the delivery workers.
    assert "container_name" not in services["delivery"] and "ports" not in services["delivery"]
    assert services["prometheus"]["depends_on"]["rules"]["condition"] == "service_completed_successfully"
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "../grafana/provisioning:/etc/grafana/provisioning" in grafana_mounts
    assert "../grafana/dashboards:/var/lib/grafana/dashboards/akece-webhooks" in grafana_mounts
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    # The provisioned data source takes its address from that variable; the dashboard names no data source
    # but its DS_PROMETHEUS variable.
    datasources = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
                                 .read_text())["datasources"]
    assert [source["url"] for source in datasources] == ["${PROMETHEUS_URL}"]
    dashboard = (ROOT / "deploy" / "grafana" / "dashboards" / "akece-webhooks.json").read_text()
    assert "127.0.0.1" not in dashboard and ":9090" not in dashboard
    for mount in services["grafana"]["volumes"] + services["rules"]["volumes"]:
        source = mount.split(":")[0]
        assert not source.startswith(".") or (COMPOSE_DIR / source).exists(), mount


def test_compose_prometheus_scrapes_the_alerts_jobs_and_loads_the_rendered_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} >= JOBS
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]  # the `rules` service writes it
    rules = tmp_path / "alerts.yml"
    rules.write_text(ALERTS.read_text())
    config["rule_files"] = [str(rules)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    assert "SUCCESS" in run_promtool("check", "config", path)


def podman_compose() -> str:
    found = shutil.which("podman-compose") or str(BIN / "podman-compose")
    if not Path(found).exists():
        pytest.fail("podman-compose not found: `make install` installs it (PyPI podman-compose, dev extras)")
    return found


def override(bootstrap: str, prefix: str, ports: dict[str, int], api_port: int) -> dict[str, Any]:
    """The project's services on the host's network, against the session broker."""
    common = {"AKECE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AKECE_TOPIC_PREFIX": prefix,
              "AKECE_KAFKA_PARTITIONS": "3", "AKECE_RETRY_SCHEDULE": "1,2", "AKECE_METRICS_HOST": "127.0.0.1",
              "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8"}
    services: dict[str, Any] = {"topics": {"network_mode": "host", "environment": common}}
    for name in PROJECT_SERVICES:
        services[name] = {"network_mode": "host",
                          "environment": {**common, "AKECE_METRICS_PORT": str(ports[name])}}
    services["api"]["environment"] |= {"AKECE_API_PORT": str(api_port), "AKECE_API_HOST": "127.0.0.1"}
    services["delivery"]["deploy"] = {"replicas": 1}  # one metrics port per process on a shared network
    return {"services": services}


async def run(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    process = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, cwd=COMPOSE_DIR)
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(args[:6])} exited {process.returncode}:\n{text[-4000:]}"
    return text


# A cold first run builds the base image (debootstrap) and the image in its setup.
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_podman_compose_runs_the_services_against_the_broker(podman: Podman, image: Image,
                                                                   kafka_bootstrap: str, receiver: Receiver,
                                                                   tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    project = f"{PREFIX}-compose"
    ports = {name: free_port() for name in PROJECT_SERVICES}
    api_port = free_port()
    extra = tmp_path / "host-network.yml"
    extra.write_text(yaml.safe_dump(override(kafka_bootstrap, prefix, ports, api_port)))
    env = {**podman.env, "AKECE_IMAGE": image.name, "AKECE_API_ADMIN_TOKEN": TOKEN}  # what compose interpolates
    base = [podman_compose(), "--project-name", project, "--file", str(COMPOSE), "--file", str(extra)]
    for name in ("topics", *PROJECT_SERVICES):
        podman.containers.append(f"{project}_{name}_1")
    try:
        await run(env, *base, "up", "--detach", "--no-deps", "topics")
        code, out = await podman.arun("wait", f"{project}_topics_1", timeout=120)
        assert code == 0 and out.strip() == "0", f"topics exited {out.strip()}: {podman.logs(f'{project}_topics_1')}"
        await run(env, *base, "up", "--detach", "--no-deps", *PROJECT_SERVICES)

        async with aiohttp.ClientSession() as http:
            for name in PROJECT_SERVICES:
                await wait_ready(http, podman, f"{project}_{name}_1", ports[name])
            async with http.post(f"http://127.0.0.1:{api_port}/api/v1/accounts/5/webhooks",
                                 headers={"api_access_token": TOKEN},
                                 json={"url": receiver.url("/compose"), "subscriptions": ["message_created"]}) as resp:
                assert resp.status == 200, await resp.text()

        event = example("message_created", account_id=5, conversation_id=2)
        publish = await asyncio.create_subprocess_exec(
            str(BIN / "akece-webhooks"), "publish", "-", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "AKECE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "AKECE_TOPIC_PREFIX": prefix})
        out_bytes, _ = await asyncio.wait_for(publish.communicate(orjson.dumps(event)), 60)
        assert publish.returncode == 0, out_bytes.decode()

        request = await receiver.next_request(timeout=60)
        assert request.path == "/compose" and orjson.loads(request.body)["id"] == event["id"]

        # `stop` sends SIGTERM: each service drains and exits 0 (137 would mean killed at the timeout).
        await run(env, *base, "stop", "--timeout", "30", *PROJECT_SERVICES)
        for name in PROJECT_SERVICES:
            container = f"{project}_{name}_1"
            exit_code = podman.run("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
            assert exit_code == "0", f"{container} exited {exit_code}:\n{podman.logs(container)[-3000:]}"
    finally:
        down = await asyncio.create_subprocess_exec(*base, "down", "--timeout", "30", env=env, cwd=COMPOSE_DIR,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        await asyncio.wait_for(down.communicate(), 180)
