"""Podman for the image and compose tests: the project's image, built from the Dockerfile, once a session.

No image registry is reachable here, so the base image is a Debian bookworm root filesystem made by
``deploy/container/base-image.sh`` (debootstrap from the mirror apt uses; the tarball is cached under
``build/container/``), imported with ``podman import`` and passed as the Dockerfile's ``BASE_IMAGE``.
Podman runs with the settings this machine needs (runc, explicit ulimits) from a ``containers.conf``
given through ``CONTAINERS_CONF``; builds and containers use the host's network, and the host's CA
bundle is mounted into the build for pip. Everything the session creates is named
``akece-webhooks-test*`` and removed by name at the end.

Use as a plugin (``pytest_plugins``): fixtures ``podman`` (a :class:`Podman`) and ``image`` (the built
image's name).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "container"
BASE_TARBALL = CACHE / "bookworm-python.tar"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SESSION = uuid.uuid4().hex[:8]
PREFIX = f"akece-webhooks-test-{SESSION}"


def unavailable() -> str | None:
    """Why podman cannot build and run images here, or None."""
    if shutil.which("podman") is None:
        return "podman not found: `make tools` installs it (Debian package podman)"
    if os.geteuid() != 0:
        return "needs root: debootstrap and rootful podman build the base image (run make test as root)"
    if not BASE_TARBALL.exists() and shutil.which("debootstrap") is None:
        return "debootstrap not found: `make tools` installs it (Debian package debootstrap)"
    return None


@dataclass
class Podman:
    """Runs podman with this machine's configuration and remembers what to remove."""

    env: dict[str, str]
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 600, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], env=self.env, input=stdin, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    async def arun(self, *args: str, timeout: float = 120, stdin: str | None = None) -> tuple[int, str]:
        """podman without blocking the event loop (receivers in the test answer meanwhile)."""
        process = await asyncio.create_subprocess_exec(
            "podman", *args, env=self.env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), timeout)
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace")

    def name(self, suffix: str) -> str:
        """A container name of this session, removed at the end."""
        name = f"{PREFIX}-{suffix}"
        self.containers.append(name)
        return name

    def logs(self, name: str) -> str:
        result = self.run("logs", name, check=False)
        return result.stdout + result.stderr

    def cleanup(self) -> None:
        for name in reversed(self.containers):
            self.run("rm", "--force", "--time", "0", name, check=False, timeout=60)
        for image in reversed(self.images):
            self.run("rmi", "--force", image, check=False, timeout=120)


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    tool = Podman(env={**os.environ, "CONTAINERS_CONF": str(conf)})
    try:
        yield tool
    finally:
        tool.cleanup()


@dataclass(frozen=True)
class Image:
    name: str
    build_seconds: float
    size_bytes: int


def base_image(podman: Podman) -> str:
    """The debootstrapped bookworm base (Python 3.11, venv, tini, CA certificates), imported."""
    subprocess.run(["bash", str(ROOT / "deploy" / "container" / "base-image.sh"), str(BASE_TARBALL)], check=True,
                   timeout=1200)
    name = f"localhost/{PREFIX}-base:bookworm"
    podman.images.append(name)
    podman.run("import", str(BASE_TARBALL), name, timeout=300)
    return name


def build_args() -> list[str]:
    """The build's network and pip's trust: the host's network and CA bundle (a TLS proxy may sit between)."""
    args = ["--network", "host"]
    if HOST_CA.exists():
        args += ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    index = os.environ.get("PIP_INDEX_URL")
    if index:
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    return args


@pytest.fixture(scope="session")
def image(podman: Podman) -> Image:
    """The project's image, built from the Dockerfile on the debootstrapped base."""
    base = base_image(podman)
    name = f"localhost/{PREFIX}:latest"
    podman.images.append(name)
    started = time.monotonic()
    podman.run("build", "--format", "docker", "--layers=false", "--tag", name, "--build-arg", f"BASE_IMAGE={base}",
               "--build-arg", f"REVISION={SESSION}", *build_args(), str(ROOT), timeout=1200)
    seconds = time.monotonic() - started
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())
    print(f"\nimage {name}: built in {seconds:.0f} s, {size / 1e6:.0f} MB")
    return Image(name, seconds, size)


async def wait_ready(http: aiohttp.ClientSession, podman: Podman, name: str, port: int,
                     timeout: float = 180) -> dict[str, object]:
    """The /readyz answer of container ``name`` once it is 200; fails with its logs if the container
    stops or stays unready for ``timeout`` seconds."""
    url = f"http://127.0.0.1:{port}/readyz"
    last = "no answer"
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            body: dict[str, object] = await response.json()
                            return body
                        last = f"{response.status} {await response.text()}"
                except aiohttp.ClientError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                state = podman.run("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
                assert state in {"running", "created", "configured"}, f"{name} is {state}:\n{podman.logs(name)[-3000:]}"
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"{name} not ready after {timeout:.0f} s (/readyz: {last}):\n"
                             f"{podman.logs(name)[-3000:]}") from None
