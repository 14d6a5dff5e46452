"""The garbage collector of a long-running process, set for a stream of short-lived records.

CPython's defaults (a young pass every 700 allocations, a full pass once the long-lived objects grew by a
quarter) suit short scripts. A worker holding thousands of records in flight promotes records that are
still waiting into the old generations, and its full passes walk the whole heap, modules and clients
included, every few seconds: about a third of the delivery worker's own CPU per delivery in a drain.

A young pass starts once the tracked objects have grown by the threshold (allocations less
deallocations). Records are freed by reference counting, so in a steady stream what grows is the
working set itself: a fetch of a thousand records, the delivery worker's 10,000 records in flight
(about 15 tracked objects each), the router's batches. A threshold under that working set makes
every fetch that grows it walk it again, and promote it, to be walked again by the older passes:
measured in a 60,000-delivery drain at 20,000, 0.5-0.8 s of the delivery worker's collector time
(8-14 µs per delivery) and 0.5 s of the router's. Above it (200,000), young passes come from cyclic
garbage only: 0.02 s in the worker and 0.1-0.3 s in the router, with the same peak RSS.
"""

from __future__ import annotations

import gc

YOUNG_PASS_EVERY = 200_000  # growth of tracked objects between young passes (CPython's default: 700)


def tune_gc() -> None:
    """Once per process, once started: what exists by then (modules, settings, clients) leaves the
    collector's sight (``gc.freeze``), and young passes wait for ``YOUNG_PASS_EVERY`` more tracked objects."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_PASS_EVERY, *gc.get_threshold()[1:])
