"""Builds of the non-Python examples, once per source change, cached under ``build/`` (git-ignored).

- Node.js: ``npm ci`` of an example's ``package.json`` and ``package-lock.json`` into ``build/node/<name>/node_modules``
  (run the example with ``NODE_PATH`` pointing there);
- Go: ``go build`` of an example module into ``build/go/<name>`` (the Go module cache is reused);
- Java: ``mvn dependency:build-classpath`` of an example's ``pom.xml`` into ``build/java/<name>.classpath``
  (Maven's ``~/.m2`` is reused); the example runs with Java's single-file source launcher.

Each build is redone only when its inputs change (a hash stamp beside the output). A missing
toolchain skips the test with the reason; a failing build fails it with the tool's output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
BUILD_TIMEOUT_S = 600


def require(*tools: str) -> None:
    """Skip the calling test, naming what is missing, unless every tool is on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make test installs the toolchains: deploy/install-tools.sh)")


def _digest(files: Iterable[Path]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def _cached(stamp: Path, digest: str) -> bool:
    return stamp.is_file() and stamp.read_text() == digest


def _run(command: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                          env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{what}: {time.monotonic() - started:.1f} s")


def node_modules(example: Path, name: str) -> Path:
    """``node_modules`` holding the dependencies of ``example/package.json``."""
    require("node", "npm")
    target = BUILD / "node" / name
    manifests = [example / "package.json", example / "package-lock.json"]
    digest = _digest(manifests)
    stamp = target / ".stamp"
    if not _cached(stamp, digest):
        target.mkdir(parents=True, exist_ok=True)
        for manifest in manifests:
            shutil.copy(manifest, target / manifest.name)
        _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], target, f"npm ci ({name})")
        stamp.write_text(digest)
    return target / "node_modules"


def go_binary(module: Path, name: str) -> Path:
    """The example module built as one binary."""
    require("go")
    target = BUILD / "go" / name
    digest = _digest([*module.glob("*.go"), module / "go.mod", module / "go.sum"])
    stamp = target.with_suffix(".stamp")
    if not (target.is_file() and _cached(stamp, digest)):
        target.parent.mkdir(parents=True, exist_ok=True)
        _run(["go", "build", "-o", str(target), "."], module, f"go build ({name})")
        stamp.write_text(digest)
    return target


def java_classpath(project: Path, name: str) -> str:
    """The runtime classpath of the example's ``pom.xml`` (resolved by Maven once)."""
    require("java", "mvn")
    target = BUILD / "java" / f"{name}.classpath"
    digest = _digest([project / "pom.xml"])
    stamp = target.with_suffix(".stamp")
    if not (target.is_file() and _cached(stamp, digest)):
        target.parent.mkdir(parents=True, exist_ok=True)
        _run(["mvn", "-q", "-B", "dependency:build-classpath", f"-Dmdep.outputFile={target}"], project,
             f"maven classpath ({name})")
        stamp.write_text(digest)
    return target.read_text().strip()
