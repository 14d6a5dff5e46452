"""Toxiproxy (Shopify's TCP fault proxy) for the network-fault tests: the server process and its API.

The server is built once by ``deploy/install-toxiproxy.sh`` (``make tools`` runs it; so does this
module when the binary is missing) into ``build/toxiproxy/toxiproxy-server``. A test starts its own
server on a free port and stops it by pid::

    async with Toxiproxy.running() as toxi:
        proxy = await toxi.proxy("kafka", listen=f"127.0.0.1:{p}", upstream=f"127.0.0.1:{broker_port}")
        async with proxy.toxic("latency", latency=300, jitter=50):
            ...   # every byte through the proxy is delayed while inside
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from services.devtools.kafka_errors import HOST
from services.devtools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "build" / "toxiproxy" / "toxiproxy-server"
INSTALL = ROOT / "deploy" / "install-toxiproxy.sh"


def server_binary() -> Path:
    """The toxiproxy-server binary, built on first use."""
    if not SERVER.exists():
        done = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cannot build Toxiproxy ({INSTALL}): {done.stderr.strip()[-500:]}")
    return SERVER


@dataclass
class Proxy:
    api: Toxiproxy
    name: str

    @asynccontextmanager
    async def toxic(self, kind: str, *, stream: str = "downstream", **attributes: int) -> AsyncIterator[None]:
        """A toxic on this proxy while inside (both directions with ``stream="both"``)."""
        streams = ["upstream", "downstream"] if stream == "both" else [stream]
        names = [f"{kind}_{s}" for s in streams]
        for name, direction in zip(names, streams, strict=True):
            await self.api.call("POST", f"/proxies/{self.name}/toxics",
                                {"name": name, "type": kind, "stream": direction, "toxicity": 1.0,
                                 "attributes": attributes})
        try:
            yield
        finally:
            for name in names:
                await self.api.call("DELETE", f"/proxies/{self.name}/toxics/{name}")


class Toxiproxy:
    def __init__(self, port: int) -> None:
        self.url = f"http://{HOST}:{port}"
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    @asynccontextmanager
    async def running(cls, log: Path) -> AsyncIterator[Toxiproxy]:
        """Start a server on a free port (its output to ``log``), wait for its API, kill it by pid on exit."""
        port = free_port()
        binary = await asyncio.to_thread(server_binary)
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                str(binary), "-host", HOST, "-port", str(port), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        api = cls(port)
        try:
            async with aiohttp.ClientSession() as session:
                api._session = session
                await api._wait_up(process)
                yield api
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def _wait_up(self, process: asyncio.subprocess.Process) -> None:
        async with asyncio.timeout(30):
            while process.returncode is None:
                try:
                    await self.call("GET", "/version")
                    return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)  # the API port opens within a moment
        raise RuntimeError(f"toxiproxy-server exited with {process.returncode}")

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self._session is not None
        async with self._session.request(method, self.url + path, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise RuntimeError(f"toxiproxy {method} {path}: {response.status} {text}")
            return text

    async def proxy(self, name: str, *, listen: str, upstream: str) -> Proxy:
        await self.call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        return Proxy(self, name)
