"""Giving memory back after a burst.

A delivery worker that caught up a backlog held its whole in-flight budget (10,000 records) and freed
it again; the allocator keeps the freed pages, so the process's RSS stays at that high-water mark
for good (measured in the soak: 77 MB steady, 174 MB after a broker restart's catch-up, live Python
memory back where it was). Record bodies above 512 bytes live in glibc's heap, whose free pages
``malloc_trim`` hands back to the kernel. ``Trimmer`` calls it once the records held fell to a
quarter of their peak since the last trim, at most every ``MIN_INTERVAL_S``: the delivery worker
counts the records in flight, the router the records of each fetched batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

MIN_INTERVAL_S = 10.0
MIN_PEAK = 1000  # records: below this a burst leaves little to give back
SHARE = 0.25  # trim once what is held fell to this share of the peak


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class Trimmer:
    """``observe(held)`` on every tick: trims after a burst has passed. ``trims`` counts them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 trim: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._trim = trim if trim is not None else _malloc_trim()
        self._peak = 0
        self._last = float("-inf")
        self.trims = 0

    def observe(self, held: int) -> None:
        self._peak = max(self._peak, held)
        if self._trim is None or self._peak < MIN_PEAK or held > self._peak * SHARE:
            return
        now = self._clock()
        if now - self._last < MIN_INTERVAL_S:
            return
        self._trim()
        self._last, self._peak, self.trims = now, held, self.trims + 1
