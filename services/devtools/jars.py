"""Where the local broker lives, and what it runs on: Java 17+ and the Kafka jars Maven copies once.

``<home>`` is ``$AKECE_KAFKA_HOME`` or ``<repo>/.kafka``; the jars of the release pinned by
``deploy/kafka/pom.xml`` are copied into ``<home>/jars/<kafka-version>/`` on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from services.devtools.kafka_errors import LocalKafkaError

HOME_ENV = "AKECE_KAFKA_HOME"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JARS_MARKER = "COMPLETE.json"
JAVA_HINT = "install openjdk-17-jre-headless (or set JAVA_HOME)"
MAVEN_HINT = "install maven (needed once, to download the Kafka jars from Maven Central)"
JVM_OPTS_ENV = "AKECE_KAFKA_JVM_OPTS"
# Small heap. SerialGC: fewer threads and less memory than G1 at this size, same start time
# (measured ~2.0 s warm either way). -XX:TieredStopAtLevel=1 would save ~0.7 s but caps the JIT
# at C1 and slows the broker under load (make bench), so it is not used.
JVM_OPTS = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")


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


def jars_complete(jar_dir: Path, pom_digest: str) -> bool:
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
    if jars_complete(jar_dir, digest):
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
        if jars_complete(jar_dir, digest):
            return
        shutil.rmtree(jar_dir)  # stale: an older pom's jars for the same Kafka version
        staging.rename(jar_dir)


def jars_cached(home: Path) -> bool:
    """The pinned release's jars are already copied under ``home``."""
    pom = deploy_dir() / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    return jars_complete(home / "jars" / kafka_version(pom), digest)


__all__ = ["HOME_ENV", "JVM_OPTS", "JVM_OPTS_ENV", "deploy_dir", "find_java", "find_maven", "jars_cached",
           "kafka_home", "kafka_version", "repo_root", "resolve_jars"]
