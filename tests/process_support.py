"""Helpers of the ``--processes N`` tests: a parent process, its health answers, a consumer group's members."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from services.devtools.ports import free_port
from services.shared import kafka
from services.shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


class Parent:
    """``akece-webhooks <role> --processes N`` as a real process, its health on ``port``."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    async def get(self, path: str) -> tuple[int, Any]:
        """(status, body) of the parent's ``path``; (0, None) while it does not answer."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                    http.get(f"http://127.0.0.1:{self.port}{path}") as response:
                body = await (response.text() if path == "/metrics" else response.json())
                return response.status, body
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def until(self, path: str, ok: Callable[[int, Any], bool], timeout: float = 30.0) -> Any:
        """The body of ``path`` once ``ok(status, body)``: a bounded wait on that condition."""
        async with asyncio.timeout(timeout):
            while True:
                status, body = await self.get(path)
                if ok(status, body):
                    return body
                await asyncio.sleep(0.2)

    async def pids(self) -> dict[str, int]:
        """The children's pids, once every one is running and ready."""
        body = await self.until("/readyz", lambda status, _: status == 200, timeout=40)
        return {index: entry["pid"] for index, entry in body["processes"].items()}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@asynccontextmanager
async def parent(args: list[str], env: dict[str, str], log: Path) -> AsyncIterator[Parent]:
    """The parent, its output and its children's in ``log``; SIGKILLed on exit if still running."""
    port = free_port()
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", *args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**env, "AKECE_METRICS_HOST": "127.0.0.1", "AKECE_METRICS_PORT": str(port)})
    try:
        yield Parent(process, port, log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """A bounded wait on state another process changes (no event to await across processes)."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout}s")


async def until_gone(pids: list[int], timeout: float = 30.0) -> None:
    await until(lambda: not any(alive(pid) for pid in pids), f"exit of {pids}", timeout)


async def group_members(settings: Settings, group: str) -> list[set[tuple[str, int]]]:
    """What each member of ``group`` is assigned, once the group is stable."""
    async with kafka.started(kafka.admin(settings)) as admin:
        (response,) = await admin.describe_consumer_groups([group])
    _, _, state, _, _, members, *_ = response.groups[0]
    if state != "Stable":
        return []
    return [{(topic, partition) for topic, partitions in ConsumerProtocolMemberAssignment.decode(member[-1]).assignment
             for partition in partitions} for member in members]


async def until_split(settings: Settings, group: str, topic: str, members: int, timeout: float = 40.0) -> \
        list[set[int]]:
    """The partitions of ``topic`` each member holds, once ``members`` members hold all of them between them."""
    async with asyncio.timeout(timeout):
        while True:
            held = [{p for t, p in member if t == topic} for member in await group_members(settings, group)]
            if len(held) == members and sum(map(len, held)) == settings.kafka.partitions and all(held):
                return held
            await asyncio.sleep(0.3)
