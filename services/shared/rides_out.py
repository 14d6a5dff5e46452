"""``RidesOut``: a worker that needs Kafka, run again once the broker answers after a Kafka error
(see ``outage``)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from services.shared import logging as logs
from services.shared.broker_link import BrokerLink
from services.shared.outage import Backoff, describe, is_outage, wait_any
from services.shared.runtime import Worker

log = logs.get("kafka")

HEALTHY_RUN_S = 30.0  # a worker run this long before failing starts its backoff afresh


class RidesOut:
    """Runs a worker that needs Kafka; after a Kafka error, runs a new one once the broker answers.

    ``make`` builds the worker: called once now and again for every restart, so a restart starts
    from a clean state (the records the failed run held were not committed: the new run redoes
    them). A worker built to resume (the subscription table) may be returned again.

    Ready only while the link is up and the worker is. On stop, a worker that is still starting
    (not ready yet: it holds no records) is cancelled; a running one drains as usual.
    """

    def __init__(self, make: Callable[[], Worker], link: BrokerLink, *, backoff: Backoff | None = None,
                 rng: random.Random | None = None) -> None:
        self._make = make
        self._worker = make()
        self.name = self._worker.name
        self._link = link
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._logged_at: float | None = None
        self.restarts = 0

    @property
    def worker(self) -> Worker:
        """The current run's worker."""
        return self._worker

    def ready(self) -> bool:
        return self._link.ready() and self._worker.ready()

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while await self._link.wait_available(stop):
            started = time.monotonic()
            try:
                await self._run_once(stop)
                return
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if stop.is_set():  # stopping anyway: the error is the outage's, the link reports it
                    return
                failures = 1 if time.monotonic() - started > HEALTHY_RUN_S else failures + 1
                self._link.lost(self.name, exc)
                self.restarts += 1
                await wait_any([stop], self._backoff.delay(failures, self._rng))
                if stop.is_set():
                    return
                self._log_restart(exc)
                self._worker = self._make()

    async def _run_once(self, stop: asyncio.Event) -> None:
        task = asyncio.ensure_future(self._worker.run(stop))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and not self._worker.ready():
                task.cancel()  # still connecting: nothing fetched, nothing to drain
                await asyncio.wait({task})
                return
            await task
        finally:
            stopping.cancel()
            if not task.done():  # we are cancelled ourselves (the supervisor's deadline)
                task.cancel()

    def _log_restart(self, exc: BaseException) -> None:
        """A worker failed while the broker answers probes: say so, at most once per window."""
        if not self._link.ready():
            return  # the outage explains it; the link's lines count it
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self._link.window_s:
            return
        self._logged_at = now
        log.warning("worker.restarting", worker=self.name, error=describe(exc),
                    restarts=self.restarts)


__all__ = ["HEALTHY_RUN_S", "RidesOut"]
