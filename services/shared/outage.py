"""Riding out a Kafka outage: one broker link per process, and workers that wait for it.

A broker that is unreachable (not started yet, restarting, partitioned) is a condition to ride
out, not an error to exit on::

    BrokerLink (a Worker, "kafka")   probes the broker: every PROBE_INTERVAL_S while it answers
                                     (a metadata request on the connection it keeps), with capped
                                     exponential backoff (jitter) and a fresh bootstrap while not;
                                     starts the process's shared clients once it answers; ready
                                     only while it answers; logs once when the broker is lost, at
                                     most once per window meanwhile, once when it is back; exits
                                     the process after ``unavailable_exit_s`` if that is set
    RidesOut(make, link)             runs ``make()``'s worker once the link is up; when it fails
                                     with a Kafka error, waits (backoff) for the link and runs a
                                     new one: what the failed run did not commit is redone

While the broker is away, aiokafka's own per-retry error lines are dropped (the link's lines
summarize them); while it answers, each distinct aiokafka line shows at most once per window.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from services.shared import kafka
from services.shared import logging as logs
from services.shared.errors import KafkaUnavailableError
from services.shared.kafka_security import bootstrap_failures, explain
from services.shared.runtime import Worker
from services.shared.settings import Settings

log = logs.get("kafka")

PROBE_INTERVAL_S = 2.0  # between probes while the broker answers: how soon a loss is noticed
PROBE_TIMEOUT_S = 10.0  # one probe (connect + metadata), bounded below the request timeout
HEALTHY_RUN_S = 30.0  # a worker run this long before failing starts its backoff afresh


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: try ``n`` waits ``min(cap, initial * 2**(n-1))``
    times a random factor in ``[1 - jitter, 1]``, so processes that lost the broker together do not
    return together."""

    initial_s: float = 0.5
    cap_s: float = 5.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        base: float = min(self.cap_s, self.initial_s * 2.0 ** min(max(attempt - 1, 0), 30))
        return base * (1 - self.jitter * rng.random())


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is the broker being away (retry later), not a bug or bad configuration."""
    if isinstance(exc, KafkaUnavailableError):
        return exc.retriable
    return isinstance(exc, KafkaError | OSError)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an error, once (aiokafka's messages already start with their type)."""
    name, text = type(exc).__name__, str(exc)
    return (text if text.startswith(name) else f"{name}: {text}")[:300]


async def _wait_any(events: Sequence[asyncio.Event], timeout: float | None = None) -> None:
    """Return once one of ``events`` is set, or after ``timeout`` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


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
        self._timeout = min(PROBE_TIMEOUT_S, kafka_.request_timeout_ms / 1000)
        self._settings = settings
        self._protocol = kafka_.security_protocol
        self._exit_after = kafka_.unavailable_exit_s
        self.window_s = kafka_.unavailable_log_s
        self._clients = list(clients)
        self._started: list[Any] = []
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._clock = clock
        self._up = asyncio.Event()
        self._probe: AIOKafkaClient | None = None  # kept while the broker answers
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
        await _wait_any([self._up, stop])
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
                await _wait_any([stop, self._wake], delay)
        finally:
            for handler in handlers:
                handler.removeFilter(quiet)

    async def _try(self) -> str | None:
        """One probe. None: the broker answers; else why not, in one line (refused, TLS, SASL:
        ``kafka_security.explain``). While it answers, a metadata request on the connection kept from
        the last bootstrap; after a failure, the next try bootstraps afresh."""
        probe = self._probe
        if probe is None:
            return await self._connect()
        with bootstrap_failures() as failures:
            try:
                async with asyncio.timeout(self._timeout):
                    await probe.fetch_all_metadata()
            except (KafkaError, OSError, TimeoutError) as exc:
                self._probe = None
                await kafka.close(probe)
                return self._why(exc, failures)
        return None

    async def _connect(self) -> str | None:
        """A fresh bootstrap (connect, metadata), then the shared clients; the probe client is kept."""
        options = {**kafka.connection(self._settings), "request_timeout_ms": int(self._timeout * 1000)}
        client = AIOKafkaClient(**options)  # options built per bootstrap: a rotated SASL password file is read
        with bootstrap_failures() as failures:
            try:
                async with asyncio.timeout(self._timeout):
                    await client.bootstrap()
                for pending in [c for c in self._clients if c not in self._started]:
                    async with asyncio.timeout(self._timeout):
                        await pending.start()
                    self._started.append(pending)
            except (KafkaError, OSError, TimeoutError) as exc:
                await kafka.close(client)
                return self._why(exc, failures)
        self._probe = client
        return None

    def _why(self, exc: BaseException, failures: list[BaseException]) -> str:
        if not failures:
            return describe(exc)
        return explain(exc, failures, self._protocol, answered_before=self._answered)

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
        clients, self._clients, self._started = self._clients, [], []
        probe, self._probe = self._probe, None
        for client in [*reversed(clients), *([probe] if probe else [])]:
            await kafka.close(client)


class KafkaUnavailableExit(KafkaUnavailableError):
    """The broker stayed away longer than ``AKECE_KAFKA_UNAVAILABLE_EXIT_S``: the process exits."""

    retriable = False


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
                await _wait_any([stop], self._backoff.delay(failures, self._rng))
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
