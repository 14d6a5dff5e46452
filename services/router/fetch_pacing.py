"""The router's fetch pacing: under a steady stream of events, each fetch gathers up to
``AKECE_ROUTER_FETCH_WAIT_MS`` of them instead of taking whatever the last publisher's request brought.

With the consumer's own settings (``fetch.min.bytes`` 1), a fetch returns as soon as any record is
there, so the router's batches follow the publishers' produce requests: at 3,000 events/s from a
publisher sending every 5 ms, 200 batches a second of 15 events. Each batch costs the router a fetch,
a produce request and its acknowledgement, the broker those requests, and each delivery worker a fetch
of its own: at that rate the router spent about three times its per-event cost of a backlog drain.

``FetchPacing.observe(taken, batch)`` after each fetch. Once the events of the last ``WINDOW_S``
come at ``PACE_ABOVE`` per second or more, the consumer's next fetches wait for the bytes that rate
brings in ``wait_ms`` (``fetch.min.bytes``), and at most ``wait_ms`` (``fetch.max.wait.ms``). Below
half of that rate the consumer's own settings apply again: a lone event is routed as soon as it is
there, and an idle router's fetch waits at the broker as before. A backlog is not slowed: its bytes
are already there, so the broker answers at once.

The bytes are counted as the records' values, uncompressed, while the broker counts the stored batches'
bytes. Under compression (lz4 by default; the benchmark's Chatwoot payloads shrink about 9x) the
``fetch.min.bytes`` asked for is rarely reached in ``wait_ms``, so in effect a paced fetch waits the
full ``wait_ms`` unless a backlog of that many stored bytes is waiting. That is the pacing measured
(``docs/performance.md``).

aiokafka reads both values from its fetcher for each fetch request. They are private attributes, so
pacing turns itself off, and says so once, when a release no longer has them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from services.shared import logging as logs

log = logs.get("router")

WINDOW_S = 0.5  # the event rate is measured over this long
PACE_ABOVE = 1000  # events/s from which fetches are paced (below half of it, no longer)
MAX_MIN_BYTES = 1024 * 1024  # the most a paced fetch waits for (it never waits longer than wait_ms)


class FetchPacing:
    """``FetchPacing(consumer, wait_ms)`` (0: never paced); ``observe`` each fetch."""

    def __init__(self, consumer: Any, wait_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetcher: Any = cast(Any, getattr(consumer, "_fetcher", None))
        self._wait_ms = wait_ms
        self._clock = clock
        self._own: tuple[int, int] | None = None  # the consumer's fetch.min.bytes and fetch.max.wait.ms
        if wait_ms > 0:
            if all(isinstance(getattr(self._fetcher, name, None), int)
                   for name in ("_fetch_min_bytes", "_fetch_max_wait_ms")):
                self._own = (self._fetcher._fetch_min_bytes, self._fetcher._fetch_max_wait_ms)
            else:
                log.info("router.fetch_pacing_unavailable", reason="this aiokafka's fetcher has no "
                         "fetch_min_bytes/fetch_max_wait_ms to set: fetches are not paced")
        self.paced = False
        self._started = clock()
        self._records = 0
        self._bytes = 0

    def observe(self, taken: int, batch: Mapping[Any, Sequence[Any]]) -> None:
        """One fetch: ``taken`` records, ``batch`` (partition -> records); decides the next fetches' pacing
        once per ``WINDOW_S``. The records' bytes are only counted while pacing can be set."""
        if self._own is None:
            return
        self._records += taken
        self._bytes += sum(len(r.value or b"") for records in batch.values() for r in records)
        now = self._clock()
        elapsed = now - self._started
        if elapsed < WINDOW_S:
            return
        rate, byte_rate = self._records / elapsed, self._bytes / elapsed
        self._started, self._records, self._bytes = now, 0, 0
        if rate >= PACE_ABOVE or (self.paced and rate >= PACE_ABOVE / 2):
            self._pace(max(1, min(MAX_MIN_BYTES, int(byte_rate * self._wait_ms / 1000))), self._wait_ms)
        elif self.paced:
            self._pace(*self._own)

    def _pace(self, min_bytes: int, max_wait_ms: int) -> None:
        fetcher = self._fetcher
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = min_bytes, max_wait_ms
        paced = (min_bytes, max_wait_ms) != self._own
        if paced != self.paced:
            log.info("router.fetch_pacing", paced=paced, fetch_min_bytes=min_bytes, fetch_max_wait_ms=max_wait_ms)
        self.paced = paced
