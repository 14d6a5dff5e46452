"""N processes of one role on one host: ``akece-webhooks deliver|router --processes N``.

The parent runs no worker itself. It starts N copies of the role's command with ``--processes 1``,
each its own member of the role's consumer group (the group splits the partitions between them), and:

- forwards the first SIGTERM/SIGINT to every child, which drains as a single process does, within
  the same shutdown deadline (past it, the children still running are SIGKILLed and the exit is 1);
  a second signal is forwarded too (the children exit at once) and the parent exits 130;
- restarts a child that exits unexpectedly, after a backoff (1 s, doubling, at most 30 s); one that
  exits ``give_up_after`` times in a row without running ``stable_after_s`` makes the parent stop the
  others and exit 1 (``processes.gave_up``). A child that exits 0 by itself (``--until-idle``) is done;
  one that exits 2 (bad configuration) stops them all;
- exits with the children's worst exit code (a child ended by a signal counts as 1).

Children run in their own session (a terminal's Ctrl-C reaches only the parent, which forwards it
once) and read nothing from their stdin, a pipe from the parent: if the parent dies, even by SIGKILL,
the pipe closes and they drain and exit (``watch_parent``). Health and metrics:
``services.shared.process_health``.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.shared import logging as logs
from services.shared.exits import Exit
from services.shared.metrics import ProcessMetrics
from services.shared.runtime import EXIT_SECOND_SIGNAL, first_of

log = logs.get("processes")

Command = Callable[[int, int], list[str]]  # (child index, its health listener's fd) -> argv


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``cpu.max``, or v1's CFS quota), None if unlimited."""
    candidates = [root / "cpu.max"]
    try:
        for line in proc.read_text().splitlines():
            if line.startswith("0::/") and line != "0::/":
                candidates.insert(0, root / line[4:] / "cpu.max")
    except OSError:
        pass
    for path in candidates:
        try:
            quota, period = path.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 else quota_us / period_us
    return None


def cpu_count() -> int:
    """The CPUs this process may use: its CPU affinity, capped by its cgroup's CPU quota (a container's
    CPU limit), rounded up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    give_up_after: int = 5  # unexpected exits in a row, none after a stable run
    stable_after_s: float = 60.0  # a child that ran this long starts its count afresh

    def delay(self, exits: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (exits - 1)))


class Child:
    """One slot: its health listener (bound by the parent, kept across restarts) and its current process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.exits = 0  # unexpected exits in a row
        self.code: int | None = None  # its final exit code, once it is done

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None


def exit_code(returncode: int) -> int:
    return int(Exit.FAILED) if returncode < 0 else returncode


class ProcessGroup:
    """Runs ``count`` children of ``role`` until they are done, a signal, or one that keeps dying."""

    def __init__(self, role: str, command: Command, count: int, *, deadline_s: float,
                 metrics: ProcessMetrics, policy: RestartPolicy = RestartPolicy()) -> None:
        self.role = role
        self.command = command
        self.deadline_s = deadline_s
        self.metrics = metrics
        self.policy = policy
        metrics.process_restarts.labels(role)  # 0 from the start, not absent
        self.children = [Child(index) for index in range(count)]
        self.stop = asyncio.Event()
        self.gave_up = False
        self._signal = signal.SIGTERM
        self._signals = 0

    # --- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        self._signal = signal.Signals(signum)
        if self._signals > 1:
            log.warning("processes.forced_exit", signal=self._signal.name)
            self._forward(self._signal)
            os._exit(EXIT_SECOND_SIGNAL)
        log.info("processes.stopping", signal=self._signal.name, deadline_s=self.deadline_s)
        self.stop.set()

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _forward(self, signum: int) -> None:
        for child in self.children:
            if child.running and child.process is not None:
                child.process.send_signal(signum)

    # --- the children ----------------------------------------------------------------------
    async def _start(self, child: Child) -> asyncio.subprocess.Process:
        fd = child.listener.fileno()
        process = await asyncio.create_subprocess_exec(
            *self.command(child.index, fd), stdin=asyncio.subprocess.PIPE, pass_fds=(fd,), start_new_session=True)
        child.process, child.started_at = process, time.monotonic()
        self.metrics.processes.labels(self.role).inc()
        log.info("processes.child_started", role=self.role, process=child.index, pid=process.pid,
                 health_port=child.port)
        return process

    async def _run_once(self, child: Child) -> int:
        process = await self._start(child)
        try:
            return await process.wait()
        finally:
            self.metrics.processes.labels(self.role).dec()
            if process.stdin is not None:
                process.stdin.close()

    async def _keep(self, child: Child) -> None:
        """Run ``child`` until it is done; restart it after an unexpected exit."""
        while not self.stop.is_set():
            returncode = await self._run_once(child)
            child.code = exit_code(returncode)
            if self.stop.is_set() or returncode == Exit.OK:
                return
            fields = dict(role=self.role, process=child.index, exit_code=returncode)
            if returncode == Exit.USAGE:  # bad configuration: every restart would fail the same way
                log.error("processes.child_refused", **fields)
                self.stop.set()
                return
            ran = time.monotonic() - child.started_at
            child.exits = 1 if ran >= self.policy.stable_after_s else child.exits + 1
            if child.exits >= self.policy.give_up_after:
                log.error("processes.gave_up", **fields, exits_in_a_row=child.exits,
                          message=f"{self.role} process {child.index} exited {child.exits} times in a row "
                                  f"(last exit code {returncode}); stopping the others")
                self.gave_up = True
                self.stop.set()
                return
            delay = self.policy.delay(child.exits)
            log.warning("processes.child_exited", **fields, ran_s=round(ran, 1), restart_in_s=delay)
            if not await first_of(asyncio.sleep(delay), self.stop):
                return
            self.metrics.process_restarts.labels(self.role).inc()

    async def _drain(self) -> None:
        """On stop: forward the signal; past the deadline, SIGKILL what still runs."""
        await self.stop.wait()
        self._forward(self._signal)
        await asyncio.sleep(self.deadline_s)
        late = [child.index for child in self.children if child.running]
        log.error("processes.deadline_exceeded", role=self.role, deadline_s=self.deadline_s, processes=late)
        self._forward(signal.SIGKILL)

    async def run(self) -> int:
        """Run every child until done. The children's worst exit code (1 at least after giving up)."""
        log.info("processes.starting", role=self.role, processes=len(self.children))
        drain = asyncio.create_task(self._drain())
        try:
            await asyncio.gather(*(self._keep(child) for child in self.children))
        finally:
            drain.cancel()
            self._forward(signal.SIGKILL)  # only if this coroutine itself was cancelled
            for child in self.children:
                child.listener.close()
        codes = [child.code or 0 for child in self.children]
        worst = max([*codes, Exit.FAILED if self.gave_up else Exit.OK])
        log.info("processes.stopped", role=self.role, exit_codes=codes, exit_code=worst)
        return worst


def watch_parent(stop: asyncio.Event, fd: int = 0) -> None:
    """In a child: set ``stop`` when ``fd`` (its stdin, a pipe from the parent) reaches its end, which
    is when the parent exits however it exits."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            if not stop.is_set():
                log.warning("processes.parent_gone")
                stop.set()

    loop.add_reader(fd, readable)
