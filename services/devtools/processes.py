"""The broker's process: whose it is, its open-files limit, waiting for it to exit, stopping it,
and the lock that serialises start/stop/reset on one data dir across processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from services.devtools.kafka_errors import LocalKafkaError


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """Serialise start/stop/reset on one data dir across processes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield

def is_our_broker(pid: int, props: Path) -> bool:
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


def raise_open_files_limit() -> None:
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


def wait_exit(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> bool:
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


def terminate(pid: int, grace: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM pid, SIGKILL it after ``grace`` seconds; raise if it survives that too."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_exit(pid, grace, proc):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_exit(pid, 10, proc):
        raise LocalKafkaError(f"broker pid {pid} survived SIGKILL")


__all__ = ["is_our_broker", "locked", "raise_open_files_limit", "tail", "terminate", "wait_exit"]
