"""``BrokerLink``: the process's view of the broker, a Worker ready while the broker answers
(see ``outage``). Its probe is a ``broker_probe.BrokerProbe``; its lines say when the broker is
lost, at most one per window while it stays away, and when it is back."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from services.shared import logging as logs
from services.shared.broker_probe import BrokerProbe
from services.shared.outage import Backoff, KafkaUnavailableExit, describe, wait_any
from services.shared.settings import Settings

log = logs.get("kafka")

PROBE_INTERVAL_S = 2.0  # between probes while the broker answers: how soon a loss is noticed


class BrokerLink:
    """The process's view of the broker: a Worker, ready while the broker answers.

    ``clients`` (e.g. the producer the subscription store writes with) are started once the broker
    answers and stopped by ``close()``, which the caller runs after every worker has stopped.
    """

    name = "kafka"

    def __init__(self, settings: Settings, *, clients: Sequence[Any] = (), backoff: Backoff | None = None,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        kafka_ = settings.kafka
        self.bootstrap = kafka_.bootstrap_servers
        self._exit_after = kafka_.unavailable_exit_s
        self.window_s = kafka_.unavailable_log_s
        self._probe = BrokerProbe(settings, clients)
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._clock = clock
        self._up = asyncio.Event()
        self._answered = False  # the broker answered these settings before: a lost connection is no setting's fault
        self._wake = asyncio.Event()
        self._down_since: float | None = None
        self._logged_at = 0.0
        self._tries = 0  # failed tries in this outage
        self._window_tries = 0  # ... since the last line
        self.suppressed = 0  # client library lines dropped while the broker is away

    def ready(self) -> bool:
        return self._up.is_set()

    async def wait_available(self, stop: asyncio.Event) -> bool:
        """Wait until the broker answers. False if ``stop`` came first."""
        await wait_any([self._up, stop])
        return self._up.is_set() and not stop.is_set()

    def lost(self, worker: str, exc: BaseException) -> None:
        """A worker failed with a Kafka error: probe now (it counts as a try of this outage)."""
        log.debug("kafka.worker_lost", worker=worker, error=describe(exc))
        if self._down_since is not None:
            self._tries += 1
            self._window_tries += 1
        self._wake.set()

    # --- the probe loop ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        quiet = _QuietClientLogs(self)
        handlers = list(logging.getLogger().handlers)
        for handler in handlers:
            handler.addFilter(quiet)
        attempt = 0
        try:
            while not stop.is_set():
                error = await self._try()
                if error is None:
                    attempt = 0
                    self._mark_up()
                    delay = PROBE_INTERVAL_S
                else:
                    attempt += 1
                    delay = self._mark_down(error, self._backoff.delay(attempt, self._rng))
                self._wake.clear()
                await wait_any([stop, self._wake], delay)
        finally:
            for handler in handlers:
                handler.removeFilter(quiet)

    async def _try(self) -> str | None:
        """One probe. None: the broker answers; else why not, in one line."""
        return await self._probe.try_once(answered_before=self._answered)

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.info("kafka.available", bootstrap=self.bootstrap, down_s=round(self._clock() - self._down_since, 1),
                     tries=self._tries, client_lines_suppressed=self.suppressed)
        self._down_since = None
        self._tries = self._window_tries = 0
        self._answered = True
        self._up.set()

    def _mark_down(self, error: str, delay: float) -> float:
        """Record a failed try; log at most once per window; exit past the bound. The next delay."""
        now = self._clock()
        self._up.clear()
        if self._down_since is None:
            self._down_since = self._logged_at = now
            self._tries = 1
            self._window_tries = 0
            log.warning("kafka.unavailable", bootstrap=self.bootstrap, error=error, retry_up_to_s=self._backoff.cap_s,
                        exit_after_s=self._exit_after)
        else:
            self._tries += 1
            self._window_tries += 1
            if now - self._logged_at >= self.window_s:
                log.warning("kafka.still_unavailable", bootstrap=self.bootstrap, tries=self._window_tries,
                            down_s=round(now - self._down_since, 1), error=error)
                self._logged_at = now
                self._window_tries = 0
        if self._exit_after is None:
            return delay
        down = now - self._down_since
        if down >= self._exit_after:
            raise KafkaUnavailableExit(
                f"Kafka at {self.bootstrap} unreachable for {down:.1f}s ({self._tries} tries; last error: {error}); "
                f"exiting as AKECE_KAFKA_UNAVAILABLE_EXIT_S={self._exit_after:g} asks")
        return min(delay, self._exit_after - down)

    async def close(self) -> None:
        """Close the shared clients, started or not (after the workers that use them)."""
        await self._probe.close()


class _QuietClientLogs(logging.Filter):
    """Drops aiokafka's lines while the broker is away; otherwise each distinct one once per window."""

    def __init__(self, link: BrokerLink) -> None:
        super().__init__()
        self._link = link
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno >= logging.CRITICAL:
            return True
        if not self._link.ready():
            self._link.suppressed += 1
            return False
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._link.window_s:
            self._link.suppressed += 1
            return False
        if len(self._last) > 512:
            self._last.clear()
        self._last[key] = now
        return True


__all__ = ["PROBE_INTERVAL_S", "BrokerLink"]
