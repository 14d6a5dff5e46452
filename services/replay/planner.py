"""Planning a replay or recover run: which records of the source range go back, and why the others do not.

The window becomes a source offset range per partition; the run is identified (an unfinished one to
resume, or the first generation not yet done), refused while an overlapping one runs or is claimed,
and the range is read once, deciding per record (see ``engine`` for the reasons a record is
skipped, superseded, already replayed or done). Only the offsets to send are kept (8 bytes each).
With ``Options.limit``, the oldest of them are sent (``oldest_first``) and the run stops where the
first one left is: the same command resumes it from there.
"""

from __future__ import annotations

import heapq
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import islice
from typing import Any, Generic, NamedTuple, TypeVar

from aiokafka import AIOKafkaConsumer

from services.contract import headers as h
from services.contract.topics import Topics
from services.replay.claims import claimed_message
from services.replay.plans import Options, Plan, ReplayRefusedError, Send, Skip, Source
from services.replay.runs import CLAIM_PARTITION, Run, RunBook, host_name, overlaps, run_id
from services.replay.window import Ranges, Window, offset_ranges, read_ranges, reader, topic_ends
from services.shared import kafka
from services.shared import logging as logs
from services.shared.metrics import Metrics
from services.shared.settings import Settings

log = logs.get("replay")

T = TypeVar("T")
INTERNAL_ERROR = "internal_error"  # the skip reason of a record whose handling raised unexpectedly


class Candidate(NamedTuple):
    """A record to send, as the scan found it (``time``: the record's timestamp, ms)."""

    time: int
    partition: int
    offset: int
    delivery_id: str
    webhook_id: int


def oldest_first(candidates: Iterable[Candidate], limit: int) -> list[Candidate]:
    """The ``limit`` oldest ``candidates`` (by time, then partition and offset), taken per partition in
    offset order (``candidates`` come in that order), so that what is taken is a prefix of each partition's."""
    partitions: dict[int, list[Candidate]] = {}
    for candidate in candidates:
        partitions.setdefault(candidate.partition, []).append(candidate)
    merged = heapq.merge(*partitions.values(), key=lambda c: (c.time, c.partition, c.offset))
    return list(islice(merged, limit))


class Planner(Generic[T]):
    """Makes the ``Plan`` of one run over ``source``; a resumed run's flags join ``options``."""

    def __init__(self, settings: Settings, source: Source[T], options: Options, *,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.source = source
        self.options = options
        self.metrics = metrics
        self.deliveries = Topics.from_settings(settings).deliveries

    async def plan(self, window: Window) -> Plan:
        async with kafka.started(reader(self.settings)) as consumer:
            ranges = await offset_ranges(consumer, self.source.topic, window)
            book = await RunBook.load(self.settings)
            plan = self._identify(book, ranges, window.describe())
            plan.claims_from = book.ends.get(CLAIM_PARTITION, 0)
            self._unclaimed(book, plan)
            if plan.resumed is not None:  # a resumed run keeps the flags it started with
                self._refuse_late_enable(plan.resumed)
                self.options = replace(self.options, force=self.options.force or plan.resumed.force,
                                       enable=self.options.enable or plan.resumed.enable)
            priors = self._priors(book, plan)
            unfinished = [r for r in (plan.resumed, *priors) if r is not None and not r.finished]
            tails = await enqueued_by(consumer, self.deliveries, self.source.id_header, unfinished)
            plan.deliveries_ends = {tp.partition: end for tp, end in
                                    (await topic_ends(consumer, self.deliveries)).items()}
            await self._scan(consumer, plan, priors, tails)
        return plan

    def _identify(self, book: RunBook, ranges: Ranges, window: dict[str, str | None]) -> Plan:
        """This command's run: an unfinished one to resume, or the first generation not yet done."""
        now, host, kind, filters = time.time(), host_name(), self.source.kind, self.source.filters
        generation = 0
        while (run := book.get(run_id(kind, filters, ranges, generation))) is not None:
            if not run.finished:
                return self._resume(run, now, host)
            generation += 1
        same = [r for r in book.of_kind(kind)
                if not r.finished and r.filters == filters and overlaps(r.ranges, ranges)]
        if same:
            plan = self._resume(max(same, key=lambda r: r.started_at), now, host)
            plan.notice = (f"{plan.notice}; it covers an overlapping window, not exactly this one: run the "
                           "command again afterwards for records outside it")
            return plan
        return Plan(run_id(kind, filters, ranges, generation), generation, ranges, window)

    def _resume(self, run: Run, now: float, host: str) -> Plan:
        if run.live(now, host):
            raise ReplayRefusedError(f"{run.kind} {run.id} is running now ({run.user}@{run.host} pid {run.pid}, "
                                     f"last checkpoint {now - run.heartbeat:.0f}s ago)")
        return Plan(run.id, run.generation, dict(run.ranges), run.window, resumed=run,
                    notice=f"resuming {run.kind} {run.id} ({run.status}, started {run.started_at} by {run.user}, "
                           f"{run.enqueued} of {run.total} re-enqueued)")

    def _refuse_late_enable(self, run: Run) -> None:
        """``--enable`` added when resuming a run that skipped disabled webhooks' records below its checkpoint:
        the resume would not send those (finished, for the checkpoint), and a later run would send them all,
        some a second time. Refused: the run is finished with its own flags, then a run with --enable follows."""
        if not self.options.enable or run.enable:
            return
        disabled = sorted(w for w, reason in run.skipped_webhooks.items() if reason == "webhook_disabled")
        if disabled and any(run.checkpoint.get(p, start) > start for p, (start, _) in run.ranges.items()):
            raise ReplayRefusedError(
                f"{run.kind} {run.id} ({run.status}) started without --enable and skipped the records of disabled "
                f"webhooks {', '.join(map(str, disabled[:10]))}: finish it with the same command without --enable, "
                "then run it again with --enable to send those")

    def _priors(self, book: RunBook, plan: Plan) -> list[Run]:
        priors = [r for r in book.of_kind(self.source.kind) if r.id != plan.run_id and overlaps(r.ranges, plan.ranges)]
        now, host = time.time(), host_name()
        for run in priors:
            if run.live(now, host):
                raise ReplayRefusedError(f"{run.kind} {run.id} over an overlapping range is running now "
                                         f"({run.user}@{run.host} pid {run.pid}): wait for it to finish")
        return priors

    def _unclaimed(self, book: RunBook, plan: Plan) -> None:
        """Refuse when another process has claimed an overlapping run and not recorded it yet."""
        now = time.time()
        for claim in book.live_claims(self.source.kind, now, host_name()):
            if overlaps(claim.ranges, plan.ranges):
                raise ReplayRefusedError(claimed_message(claim, now))

    async def _scan(self, consumer: AIOKafkaConsumer, plan: Plan, priors: Sequence[Run],
                    tails: Mapping[str, set[str]]) -> None:
        resumed = plan.resumed
        checkpoint = resumed.checkpoint if resumed else {}
        own_tail = tails.get(resumed.id, set()) if resumed else set()
        last: dict[str, tuple[int, int]] = {}
        replayed: dict[tuple[str, str | None], str] = {}  # (delivery id, origin) -> the run that covered it
        candidates: list[Candidate] = []
        samples: list[tuple[int, int, dict[str, Any]]] = []
        sampled: Counter[int] = Counter()
        async for records in read_ranges(consumer, self.source.topic, plan.ranges, plan.stats):
            for record in records:
                item, decision = self.decide(record)
                if decision is None:
                    continue
                plan.matched += 1
                if isinstance(decision, Skip):
                    plan.skipped[decision.reason] += 1
                    if decision.webhook_id is not None:
                        plan.skipped_webhooks.setdefault(decision.webhook_id, decision.reason)
                    continue
                assert item is not None  # only a Skip comes without an item
                where = (record.partition, record.offset)
                last[decision.delivery_id] = where
                if record.offset < checkpoint.get(where[0], 0):
                    plan.done_before += 1
                    continue
                if decision.delivery_id in own_tail:  # re-enqueued after the last checkpoint
                    plan.done_before += 1
                    plan.tail_found += 1
                    continue
                covering = None if self.options.force else self._covering(priors, tails, where, item, decision)
                copy = (decision.delivery_id, decision.origin)
                if covering is None and not self.options.force:
                    covering = replayed.get(copy)  # a copy of a record an earlier run re-enqueued
                if covering is not None:
                    replayed[copy] = covering
                    plan.covered_by[covering] += 1
                    continue
                if decision.webhook_disabled:
                    if not self.options.enable:
                        plan.skipped["webhook_disabled"] += 1
                        plan.skipped_webhooks.setdefault(decision.webhook_id, "webhook_disabled")
                        continue
                    plan.to_enable.add(decision.webhook_id)
                stamp = record.timestamp if self.options.limit else 0  # only a limit orders by time
                candidates.append(Candidate(stamp, *where, decision.delivery_id, decision.webhook_id))
                if sampled[where[0]] < 4 * self.options.sample_size:  # per partition: a limit takes prefixes
                    sampled[where[0]] += 1
                    samples.append((*where, self._describe(record, item)))
        self._select(plan, candidates, last, samples)

    def decide(self, record: Any) -> tuple[T | None, Send | Skip | None]:
        """The source's item and decision for one record. An unexpected error is that record's failure
        (skipped as ``internal_error``, logged with its type, counted), never the run's."""
        try:
            item = self.source.parse(record)
            return item, self.source.select(item)
        except Exception as exc:
            self._internal_error(record, exc)
            return None, Skip(INTERNAL_ERROR)

    def _describe(self, record: Any, item: T) -> dict[str, Any]:
        try:
            return self.source.describe(item)
        except Exception as exc:
            self._internal_error(record, exc)
            return {"partition": record.partition, "offset": record.offset}

    def _internal_error(self, record: Any, exc: Exception) -> None:
        log.error("replay.record_failed", topic=self.source.topic, partition=record.partition,
                  offset=record.offset, error_class="internal", error=type(exc).__name__)
        if self.metrics is not None:
            self.metrics.internal_errors.labels(stage="replay").inc()

    def _covering(self, priors: Sequence[Run], tails: Mapping[str, set[str]], where: tuple[int, int],
                  item: T, decision: Send) -> str | None:
        """The earlier run that already re-enqueued this record, if any."""
        for run in priors:
            if decision.webhook_id in run.skipped_webhooks or not run.in_range(*where):
                continue
            if ((run.covers(*where) or decision.delivery_id in tails.get(run.id, ()))
                    and self.source.matches(run.filters, item)):
                return run.id
        return None

    def _select(self, plan: Plan, candidates: list[Candidate], last: dict[str, tuple[int, int]],
                samples: list[tuple[int, int, dict[str, Any]]]) -> None:
        fresh: list[Candidate] = []
        for candidate in candidates:
            if last[candidate.delivery_id] != (candidate.partition, candidate.offset):
                plan.skipped["superseded"] += 1
            else:
                fresh.append(candidate)
        taken = fresh
        if 0 < self.options.limit < len(fresh):
            taken = oldest_first(fresh, self.options.limit)
            plan.left = len(fresh) - len(taken)
            plan.stops = _stops(plan, fresh, set(taken))
        described = {(p, o) for p, o, _ in samples}
        chosen: set[tuple[int, int]] = set()
        for candidate in taken:  # in offset order per partition
            plan.selected.setdefault(candidate.partition, array("q")).append(candidate.offset)
            plan.by_webhook[candidate.webhook_id] += 1
            plan.total += 1
            if (candidate.partition, candidate.offset) in described:
                chosen.add((candidate.partition, candidate.offset))
        plan.to_enable &= set(plan.by_webhook)
        plan.sample = [d for p, o, d in samples if (p, o) in chosen][: self.options.sample_size]


def _stops(plan: Plan, candidates: Sequence[Candidate], taken: set[Candidate]) -> dict[int, int]:
    """Per partition, where a limited run stops: at the first candidate it leaves, or at the range's end."""
    stops = {partition: end for partition, (_, end) in plan.ranges.items()}
    for candidate in reversed(candidates):
        if candidate not in taken:
            stops[candidate.partition] = candidate.offset
    return stops


async def enqueued_by(consumer: AIOKafkaConsumer, topic: str, header: str, runs: Sequence[Run]) -> dict[str, set[str]]:
    """Delivery ids on the deliveries topic carrying one of ``runs``' ids, written since their checkpoints."""
    if not runs:
        return {}
    wanted = {run.id.encode(): run.id for run in runs}
    found: dict[str, set[str]] = {run.id: set() for run in runs}
    ends = await topic_ends(consumer, topic)
    starts = await consumer.beginning_offsets(list(ends))
    ranges: Ranges = {}
    for tp, end in ends.items():
        froms = [run.deliveries_from.get(tp.partition, starts[tp]) for run in runs]
        ranges[tp.partition] = (max(starts[tp], min(froms)), end)
    async for records in read_ranges(consumer, topic, ranges):
        for record in records:
            values = dict(record.headers or ())
            owner = wanted.get(values.get(header) or b"")
            if owner is not None:
                found[owner].add((values.get(h.DELIVERY_ID) or b"").decode())
    log.info("replay.resume_scan", runs=[r.id for r in runs], records=sum(e - s for s, e in ranges.values()),
             found=sum(len(v) for v in found.values()))
    return found


__all__ = ["INTERNAL_ERROR", "Candidate", "Planner", "enqueued_by", "oldest_first"]
