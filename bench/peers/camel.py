"""The Apache Camel peer: build once with Maven, then run the route as a plain JVM process.

The Maven project in ``bench/peers/camel/`` (camel-main, camel-kafka, camel-http, pinned in its
``pom.xml``; Java 17) is built into ``build/peers-camel/`` (the route's jar and ``lib/`` with its
dependencies) the first time it is needed and again when a source file changed (a hash of the sources
is kept beside the jar).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parent / "camel"
BUILD = PROJECT.parents[2] / "build" / "peers-camel"
JAR = BUILD / "peers-camel-1.jar"
STAMP = BUILD / "sources.sha256"
MAIN_CLASS = "akece.peers.KafkaToHttp"
COMMIT_MODES = ("auto", "each")


class CamelUnavailable(RuntimeError):
    """Java 17+ or Maven is missing, or the build failed: the Camel peer cannot run here."""


def java_major(java: str) -> int | None:
    """The major version of ``java`` (``java -version`` prints it on stderr), or ``None``."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def sources_hash() -> str:
    digest = hashlib.sha256()
    for source in sorted([PROJECT / "pom.xml", *PROJECT.glob("src/**/*.java")]):
        digest.update(str(source.relative_to(PROJECT)).encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def is_built() -> bool:
    """The jar, its ``lib/`` and a stamp of the sources it was built from, matching the sources now."""
    try:
        return JAR.exists() and (BUILD / "lib").is_dir() and STAMP.read_text().strip() == sources_hash()
    except OSError:
        return False


def unavailable() -> str | None:
    """Why the Camel peer cannot run on this machine, or ``None`` when it can."""
    java = shutil.which("java")
    if java is None:
        return "java not found (the Camel peer needs Java 17+: Debian package openjdk-17-jre-headless)"
    major = java_major(java)
    if major is None or major < 17:
        return f"the Camel peer needs Java 17+, found {major or 'an unknown version'}"
    if not is_built():
        if shutil.which("mvn") is None:
            return "mvn not found (the Camel peer is built with Maven: Debian package maven)"
        if shutil.which("javac") is None:
            return "javac not found (building the Camel peer needs a JDK: Debian package openjdk-17-jdk-headless)"
    return None


def ensure_built(say: Callable[[str], None] = print) -> Path:
    """Build the route's jar and classpath under ``build/peers-camel/`` unless up to date."""
    reason = unavailable()
    if reason:
        raise CamelUnavailable(reason)
    if not is_built():
        say("building the Camel peer with Maven (once; cached under build/peers-camel/)...")
        mvn = shutil.which("mvn")
        assert mvn is not None  # checked by unavailable()
        try:
            done = subprocess.run([mvn, "-q", "-B", "-f", str(PROJECT / "pom.xml"), "package"],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise CamelUnavailable("the Maven build of the Camel peer took over 15 minutes") from None
        if done.returncode != 0 or not JAR.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise CamelUnavailable("the Maven build of the Camel peer failed:\n" + "\n".join(tail))
        STAMP.write_text(sources_hash() + "\n")
    return JAR


def command(*, bootstrap: str, topic: str, group: str, url: str, commit: str, consumers: int = 6) -> list[str]:
    """The JVM command line of the route (built beforehand with ``ensure_built``)."""
    if commit not in COMMIT_MODES:
        raise ValueError(f"commit must be one of {COMMIT_MODES}, got {commit!r}")
    java = shutil.which("java") or "java"
    classpath = f"{JAR}:{BUILD / 'lib'}/*"
    return [java, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath, MAIN_CLASS,
            "--bootstrap", bootstrap, "--topic", topic, "--group", group, "--url", url,
            "--consumers", str(consumers), "--commit", commit]
