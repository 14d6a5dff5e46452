"""The supervisor: health endpoints, clean stop, a crashing worker fails the process, deadline."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.shared.metrics import Metrics
from services.shared.runtime import Supervisor


class Idle:
    def __init__(self, name: str, *, ready: bool = True, crash: bool = False, drain: float = 0.0) -> None:
        self.name = name
        self._ready = ready
        self._crash = crash
        self._drain = drain
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.started.set()
        if self._crash:
            raise RuntimeError("boom")
        await stop.wait()
        await asyncio.sleep(self._drain)  # simulated drain work after stop

    def ready(self) -> bool:
        return self._ready


def supervisor(*workers: Idle, deadline: float = 5.0) -> Supervisor:
    return Supervisor(workers, metrics=Metrics(CollectorRegistry()), metrics_host="127.0.0.1", metrics_port=0,
                      shutdown_deadline=deadline)


async def _get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_health_endpoints_and_clean_stop() -> None:
    ready, not_ready = Idle("router"), Idle("delivery", ready=False)
    sup = supervisor(ready, not_ready)
    task = asyncio.create_task(sup.run(install_signals=False))
    await ready.started.wait()
    assert sup.bound_port
    status, body = await _get(sup.bound_port, "/healthz")
    assert status == 200 and '"router":"alive"' in body.replace(" ", "")
    status, body = await _get(sup.bound_port, "/readyz")
    assert status == 503 and '"delivery":false' in body.replace(" ", "")
    status, body = await _get(sup.bound_port, "/metrics")
    assert status == 200 and 'akece_webhooks_worker_up{role="router"} 1.0' in body
    sup.stop.set()
    assert await task == 0


async def test_metrics_count_the_event_loops_tasks() -> None:
    """akece_webhooks_asyncio_tasks (read by the soak in bench/) follows the tasks the process runs."""
    worker = Idle("router")
    sup = supervisor(worker)
    task = asyncio.create_task(sup.run(install_signals=False))
    await worker.started.wait()
    assert sup.bound_port

    async def tasks() -> float:
        _, body = await _get(sup.bound_port or 0, "/metrics")
        line = next(line for line in body.splitlines() if line.startswith("akece_webhooks_asyncio_tasks "))
        return float(line.split()[1])

    before = await tasks()
    extra = [asyncio.create_task(asyncio.sleep(30)) for _ in range(25)]
    try:
        assert await tasks() == before + 25
    finally:
        for t in extra:
            t.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
    assert await tasks() == before
    sup.stop.set()
    assert await task == 0


async def test_crashing_worker_fails_the_process() -> None:
    healthy = Idle("api")
    assert await supervisor(healthy, Idle("router", crash=True)).run(install_signals=False) == 1


@pytest.mark.parametrize(("drain", "expected"), [(0.05, 0), (5.0, 1)])
async def test_shutdown_deadline(drain: float, expected: int) -> None:
    worker = Idle("delivery", drain=drain)
    sup = supervisor(worker, deadline=0.5)
    task = asyncio.create_task(sup.run(install_signals=False))
    await worker.started.wait()
    sup.stop.set()
    assert await task == expected
