"""Where a delivery worker's memory goes: the worker in this process, seen by tracemalloc and the allocators.

    python -m bench.memory_views held [--records 12000] [--frames 12] [--top 25]
    python -m bench.memory_views drain [--records 40000] [--trace] [--timeline]

The workload of ``bench.memory_per_record`` (same records, receivers and throwaway topics).

- ``held``: under tracemalloc (started once the records are produced, just before the worker), with a
  receiver holding every request: once the 10,000-record budget is full, the bytes allocated since,
  per record held, by allocating line and by the first frame in ``services/``; the tracked objects
  per record; one queued ``Job`` with everything only it references (``sys.getsizeof`` over its
  referents), by type.
- ``drain``: on uvloop, draining the records to nginx: every ``SAMPLE_S``, RSS beside glibc's heap
  (``mallinfo2``: in use, free but kept, mmapped) and pymalloc's arenas (``sys._debugmallocstats``:
  mapped, in objects, free in them), records held and partitions aiokafka holds fetched data of.
  ``--trace``: also a tracemalloc snapshot at the moments with the most and the fewest bytes traced,
  and what differs between the two, by traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench.bench_delivery import rss_mb
from bench.memory_per_record import (
    FULL_TIMEOUT_S,
    ROOT,
    SAMPLE_S,
    answering,
    delete_topics,
    holding,
    hooks,
    in_this_process,
    new_settings,
    on_uvloop,
    produce,
)
from services.shared import logging as logs


def say(message: str) -> None:
    print(f"[memory_views] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ held: tracemalloc at the full budget


async def held(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = new_settings()
    logs.configure(settings)
    try:
        with holding(work) as rx:
            body = await produce(settings, hooks(args.webhooks, rx.url, path="hang/"), args.records)
            gc.collect()
            tracemalloc.start(args.frames)
            before = tracemalloc.take_snapshot()
            async with in_this_process(settings) as worker:
                await until_full(worker, settings.delivery.max_concurrency)
                gc.collect()
                after = tracemalloc.take_snapshot()
                count = worker._intake.in_flight
                by_line(after, before, count, args.top)
                kinds = Counter(type(o).__name__ for o in gc.get_objects())
                say(f"tracked objects per held record: {[(k, round(n / count, 2)) for k, n in kinds.most_common(12)]}")
                job, skip = one_job(worker)
                sizes = type_sizes(job, skip)
                say(f"one Job (value {len(job.value)} B, {len(job.header_values)} headers): {sum(sizes.values())} B "
                    f"referenced only by it; by type: {dict(sizes.most_common(12))}")
            tracemalloc.stop()
    finally:
        await delete_topics(settings)
    traced = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {"view": "held", "mean_body_bytes": round(body), "held": count,
            "traced_bytes_per_record": round(traced / count), "job_bytes": sum(sizes.values()),
            "job_value_bytes": len(job.value)}


async def until_full(worker: Any, requests: int) -> None:
    """The budget full and every request slot taken, then two seconds for the consumer's prefetch."""
    intake = worker._intake
    async with asyncio.timeout(FULL_TIMEOUT_S):
        while True:
            if intake.in_flight >= intake.max_in_flight and len(worker._tasks) >= requests:
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)


def by_line(after: tracemalloc.Snapshot, before: tracemalloc.Snapshot, count: int, top: int) -> None:
    say(f"top {top} allocating lines, bytes per held record (held {count}):")
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        say(f"  {stat.size_diff / count:8.0f} B {stat.count_diff / count:6.2f} blocks  "
            f"{short(frame.filename)}:{frame.lineno}")
    by_origin: Counter[str] = Counter()
    for stat in after.compare_to(before, "traceback"):
        by_origin[origin(stat.traceback)] += stat.size_diff
    say("by the first frame of ours (services/, or the library that allocated):")
    for name, size in by_origin.most_common(top):
        say(f"  {size / count:8.0f} B  {name}")


def short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", f"{ROOT}/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def origin(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame in services/ (what of ours caused it), else the innermost frame."""
    for frame in reversed(traceback):  # tracemalloc lists the most recent frame last
        if "/services/" in frame.filename:
            return f"{short(frame.filename)}:{frame.lineno}"
    return short(traceback[-1].filename)


def one_job(worker: Any) -> tuple[Any, set[int]]:
    """A queued job, and the ids of what it shares with others (partition, ledger, header names)."""
    for queue in worker._dispatcher._keys.values():
        if queue:
            job = queue[0][1]
            return job, {id(job.tp), id(job.ledger), id(job.header_names), *map(id, job.header_names)}
    raise RuntimeError("no queued job")


def type_sizes(root: object, skip: set[int]) -> Counter[str]:
    """``sys.getsizeof`` of everything reachable from ``root`` but ``skip`` and widely shared objects."""
    sizes: Counter[str] = Counter()
    seen, stack = set(skip), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type) or sys.getrefcount(obj) > 50:  # small ints, interned names
            continue
        seen.add(id(obj))
        sizes[type(obj).__name__] += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return sizes


# ------------------------------------------------------------------ drain: the allocators over time


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo() -> dict[str, float]:
    """glibc's heap in MB: ``used`` (malloc'd), ``free`` (free but kept), ``mmapped``."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {"used": info.uordblks / 2**20, "free": info.fordblks / 2**20, "mmapped": info.hblkhd / 2**20}


def pymalloc() -> dict[str, float]:
    """pymalloc's arenas: ``arenas`` (MiB mapped), ``objects`` and ``free_in_arenas`` (MB)."""
    read, write = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(write, 2)
        os.close(write)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    with os.fdopen(read) as pipe:
        lines = pipe.read().splitlines()
    found = {}
    for line in lines:
        name, _, value = line.partition("=")
        found[name.strip().lstrip("#").strip()] = value.strip().replace(",", "")
    number = lambda name: int(found.get(name) or 0)  # noqa: E731
    return {"arenas": number("arenas allocated current"), "objects": number("bytes in allocated blocks") / 2**20,
            "free_in_arenas": number("bytes in available blocks") / 2**20}


async def drain(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = new_settings()
    logs.configure(settings)
    snapshots = _Extremes() if args.trace else None
    try:
        with answering(work) as rx:
            body = await produce(settings, hooks(args.webhooks, rx.url), args.records)
            gc.collect()
            if snapshots is not None:
                tracemalloc.start(args.frames)
            base = {"rss": rss_mb(os.getpid()) or 0.0, **mallinfo(), **pymalloc()}
            async with in_this_process(settings) as worker:
                peak = await _samples(worker, snapshots, args.timeline)
    finally:
        await delete_topics(settings)
    if snapshots is not None:
        snapshots.report(args.top)
    return {"view": "drain", "mean_body_bytes": round(body), "before": base, "peak": peak}


async def _samples(worker: Any, snapshots: _Extremes | None, timeline: bool) -> dict[str, float]:
    """Every ``SAMPLE_S`` until the backlog is drained; the sample with the highest RSS."""
    intake, peak, idle = worker._intake, {"rss": 0.0}, 0
    async with asyncio.timeout(FULL_TIMEOUT_S * 5):
        while idle < 4:
            await asyncio.sleep(SAMPLE_S)
            sample = {"rss": rss_mb(os.getpid()) or 0.0, **mallinfo(), **pymalloc(), "in_flight": intake.in_flight,
                      "fetched_partitions": len(worker._consumer._fetcher._records) if worker._consumer else 0}
            if snapshots is not None and intake.max_in_flight_seen:
                snapshots.offer(intake.in_flight)
            peak = max(peak, sample, key=lambda s: s["rss"])
            if timeline:
                say(" ".join(f"{k} {v:.1f}" for k, v in sample.items()))
            idle = idle + 1 if intake.in_flight == 0 and intake.max_in_flight_seen else 0
    return peak


class _Extremes:
    """tracemalloc snapshots at the most and the fewest bytes traced (with at least 2,000 records held)."""

    def __init__(self) -> None:
        self.most: tuple[float, Any, int] = (0.0, None, 0)
        self.fewest: tuple[float, Any, int] = (float("inf"), None, 0)

    def offer(self, held: int) -> None:
        traced = tracemalloc.get_traced_memory()[0] / 2**20
        if traced > self.most[0]:
            self.most = (traced, tracemalloc.take_snapshot(), held)
        if traced < self.fewest[0] and held >= 2000:
            self.fewest = (traced, tracemalloc.take_snapshot(), held)

    def report(self, top: int) -> None:
        (most, high, at_most), (fewest, low, at_fewest) = self.most, self.fewest
        if high is None or low is None:
            return
        say(f"most traced: {most:.1f} MB at {at_most} held; fewest: {fewest:.1f} MB at {at_fewest}; the difference:")
        for stat in high.compare_to(low, "traceback")[:top]:
            where = " < ".join(f"{short(f.filename)}:{f.lineno}" for f in reversed(stat.traceback))
            say(f"  {stat.size_diff / 2**20:6.2f} MB {stat.count_diff:8d} blocks  {where}")


VIEWS = {"held": held, "drain": drain}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_views", description=__doc__.split("\n")[0])
    parser.add_argument("view", choices=list(VIEWS), help="what to look at")
    parser.add_argument("--records", type=int, default=12_000, help="delivery records produced")
    parser.add_argument("--webhooks", type=int, default=100, help="webhooks the records go to")
    parser.add_argument("--trace", action="store_true", help="drain: tracemalloc snapshots at the extremes")
    parser.add_argument("--timeline", action="store_true", help="drain: each sample on stderr")
    parser.add_argument("--frames", type=int, default=6, help="tracemalloc frames kept per allocation")
    parser.add_argument("--top", type=int, default=25, help="lines listed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="akece-mem-") as tmp:
        result = on_uvloop(VIEWS[args.view](args, Path(tmp)))
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
