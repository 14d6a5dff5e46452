"""A token bucket: ``--rate N`` records per second, measured over the run.

The bucket starts with one token and holds at most ``burst`` (a twentieth of a second's worth by
default), so a pause (an acknowledgement wait, a slow fetch) is caught up within that bound and the
average over a run stays at ``rate``. Clock and sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

_EPSILON = 1e-9  # float dust: a bucket short of a token by this much is full enough


class TokenBucket:
    def __init__(self, rate: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate / 20)
        self._tokens = 1.0
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait until ``tokens`` (at most the capacity) are available, then take them."""
        tokens = min(tokens, self.capacity)
        self._refill()
        while self._tokens < tokens - _EPSILON:
            await self._sleep((tokens - self._tokens) / self.rate)
            self._refill()
        self._tokens = max(0.0, self._tokens - tokens)
