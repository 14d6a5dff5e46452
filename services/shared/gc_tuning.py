"""The garbage collector of a long-running process, set for a stream of short-lived records.

CPython's defaults (a young pass every 700 allocations, a full pass once the long-lived objects grew by a
quarter) suit short scripts. A worker holding thousands of records in flight promotes records that are
still waiting into the old generations, and its full passes walk the whole heap, modules and clients
included, every few seconds: about a third of the delivery worker's own CPU per delivery in a drain.
"""

from __future__ import annotations

import gc

YOUNG_PASS_EVERY = 20_000  # allocations between young-generation passes (CPython's default: 700)


def tune_gc() -> None:
    """Once per process, once started: what exists by then (modules, settings, clients) leaves the
    collector's sight (``gc.freeze``), and young passes run every ``YOUNG_PASS_EVERY`` allocations."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_PASS_EVERY, *gc.get_threshold()[1:])
