"""One port per pod for N role processes: the parent's ``/metrics``, ``/healthz`` and ``/readyz``.

Each child serves its own on a loopback port the parent bound for it (``Child.listener``, passed
down as a file descriptor, so no port is guessed and a restart reuses it). The parent, on
``AKECE_METRICS_PORT``, answers for the whole pod:

- ``/metrics``: every child's series with a ``process`` label (``"0"`` .. ``"N-1"``, bounded by N),
  plus the parent's own (``akece_webhooks_processes``, ``akece_webhooks_process_restarts_total``).
  A label rather than a sum: a restarted child's counters start again from 0, which ``rate()``
  handles per series but a sum across children would turn into a false drop. Prometheus's
  multiprocess mode (shared files) was not taken: it needs a mode per gauge and a writable
  directory, and loses the per-process view the alerts (``worker_ready``) read.
- ``/readyz``: 200 when every child runs and answers its own ``/readyz`` 200 (all partitions of
  the pod served), else 503 naming each child's state.
- ``/healthz``: 200 unless a running child fails its own ``/healthz`` (crashed worker, blocked
  event loop) or the parent gave up. A child waiting to be restarted is ``restarting``, not a
  failure: the parent is already restarting it, a liveness restart of the pod would not do better.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from services.shared import logging as logs
from services.shared.processes import Child, ProcessGroup

log = logs.get("processes")

CHILD_TIMEOUT_S = 2.0


def merge_expositions(texts: Mapping[str, str], label: str = "process") -> list[Metric]:
    """The metric families of several ``/metrics`` pages as one, each sample labelled with its page's key."""
    merged: dict[str, Metric] = {}
    for value, text in texts.items():
        for family in text_string_to_metric_families(text):
            into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                         family.unit))
            into.samples.extend(s._replace(labels={**s.labels, label: value}) for s in family.samples)
    return list(merged.values())


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class ProcessHealth:
    """The parent's health server over the children's."""

    def __init__(self, group: ProcessGroup, registry: CollectorRegistry) -> None:
        self.group = group
        self.registry = registry
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def _get(self, child: Child, path: str) -> tuple[int, str]:
        """A child's answer (status, body); status 0 when it does not answer in time."""
        assert self._session is not None
        try:
            async with self._session.get(f"http://127.0.0.1:{child.port}{path}") as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"no answer: {type(exc).__name__}"

    async def _answers(self, path: str) -> dict[int, tuple[int, str]]:
        """The running children's answers to ``path``, asked all at once."""
        running = [child for child in self.group.children if child.running]
        answers = await asyncio.gather(*(self._get(child, path) for child in running))
        return {child.index: answer for child, answer in zip(running, answers, strict=True)}

    async def _states(self, path: str) -> tuple[bool, dict[str, Any]]:
        ok, report = True, {}
        answers = await self._answers(path)
        for child in self.group.children:
            entry: dict[str, Any] = {"pid": child.pid}
            if child.index in answers:
                status, body = answers[child.index]
                try:
                    entry.update(json.loads(body) if status else {"status": body})
                except ValueError:
                    entry["status"] = body[:200]
                ok = ok and status == 200
            elif child.code is None or not (self.group.stop.is_set() or child.code == 0):
                entry["status"] = "starting" if child.code is None else "restarting"
                ok = ok and path == "/healthz"
            else:
                entry["status"] = f"exited {child.code}"
                ok = ok and path == "/healthz" and child.code == 0
            report[str(child.index)] = entry
        return ok and not self.group.gave_up, report

    async def healthz(self, _: web.Request) -> web.Response:
        ok, report = await self._states("/healthz")
        return web.json_response({"status": "ok" if ok else "unhealthy", "processes": report},
                                 status=200 if ok else 503)

    async def readyz(self, _: web.Request) -> web.Response:
        ok, report = await self._states("/readyz")
        return web.json_response({"status": "ready" if ok else "not_ready", "processes": report},
                                 status=200 if ok else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        pages = {str(index): body for index, (status, body) in (await self._answers("/metrics")).items()
                 if status == 200}
        children = CollectorRegistry(auto_describe=False)
        children.register(_Families(merge_expositions(pages)))
        exposition = generate_latest(self.registry) + generate_latest(children)
        return web.Response(body=exposition, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHILD_TIMEOUT_S))
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else port
        log.info("processes.health_listening", host=host, port=self.bound_port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
