"""Giving memory back after a burst (``services.shared.memory``): when the trimmer trims, and that a trim
really lowers the RSS a burst of record-sized allocations left behind."""

from __future__ import annotations

import subprocess
import sys

from services.shared import memory
from services.shared.memory import Trimmer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_trims_once_a_burst_has_passed_and_not_more_often_than_the_interval() -> None:
    clock, trims = Clock(), []
    trimmer = Trimmer(clock, lambda: trims.append(clock.now))
    for held in (10, 200, 900, 0):  # never a burst worth trimming
        trimmer.observe(held)
    assert trims == []
    for held in (5000, 10_000, 9000, 3000):  # a burst, still above a quarter of its peak
        trimmer.observe(held)
    assert trims == []
    trimmer.observe(2500)  # down to a quarter: trim
    assert trims == [0.0] and trimmer.trims == 1
    clock.now = memory.MIN_INTERVAL_S / 2
    for held in (10_000, 100):  # a second burst passed too soon after the last trim
        trimmer.observe(held)
    assert trims == [0.0]
    clock.now = memory.MIN_INTERVAL_S
    trimmer.observe(100)
    assert trims == [0.0, memory.MIN_INTERVAL_S]


def test_a_trim_hands_back_what_a_burst_of_records_left_behind() -> None:
    """10,000 records of 2.4 KB bodies with their headers held and freed, in a fresh process: its RSS after
    a trim is well below its RSS before it."""
    script = """
import gc, os, random
from services.shared.memory import _malloc_trim
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
base = rss()
headers = lambda: [("ce_id", os.urandom(36)), ("webhook-id", os.urandom(40))]
held = [(os.urandom(2400), headers(), {"n": i}) for i in range(10_000)]
keep = [held[i] for i in random.Random(1).sample(range(10_000), 50)]  # a few survivors, as in a worker
del held
gc.collect()
before = rss()
_malloc_trim()()
print(base, before, rss())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    base, before, after = map(float, out.split())
    assert before - base > 15, (base, before, after)  # the burst left its pages behind
    assert after - base < (before - base) / 2, (base, before, after)
