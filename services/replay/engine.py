"""The re-enqueue engine behind ``dlq replay`` and ``recover``: plan, confirm, send once, resume.

A *source* (``dlq_source.DlqSource``, ``recover.EventsSource``) reads one topic and says, per record,
whether it is inside the run's filters and what goes back on the deliveries topic. The engine:

1. **Plans.** The window becomes a source offset range per partition; the run id is a hash of kind,
   filters and range, so the same command finds the same run. It reads the range once and decides
   per record: outside the filters; skipped (webhook deleted, or disabled without ``--enable``);
   *superseded* (a later record of the same delivery id is in the range: a delivery goes back at
   most once per run); *already replayed* (an earlier recorded run finished that source offset with
   filters that match it, unless ``--force``; so is a later copy of it, a record of the same delivery id
   and origin, which a crash that forked a retry chain dead-letters twice); *done* by this very run
   before an interruption; or *to send*. Only the offsets to send are kept (8 bytes each).
2. **Confirms** (the caller's callback; not for dry runs), re-enables webhooks for ``--enable``, and
   records the run as running in the ledger.
3. **Sends.** It reads the range again from the checkpoint and produces every selected record to the
   deliveries topic with attempt 1, the original key, body and delivery id, and a header naming the
   run, through a token bucket (``--rate``). Every ``checkpoint_every`` records or
   ``checkpoint_interval_s`` it awaits the acknowledgements and only then writes the checkpoint: per
   source partition, the offset below which every record is finished.

**Never twice.** A crash after some acknowledgements and before the next checkpoint leaves up to
``checkpoint_every`` records (or a second's worth) re-enqueued but not checkpointed. They are not
sent again: each checkpoint also records, per deliveries partition, the offset after this run's
last acknowledged record (and the end offsets when the run started), so a resume scans only what
this run may have written since, collects the delivery ids carrying its run id, and counts those
records as done. (The one case this does not cover: a produce request that was on the wire when
the process died and that the broker appends only after the resume has scanned, seconds later.)

**One at a time.** Two processes (or two API calls) can plan the same run at once. Before sending,
``execute`` (or the API, before answering 202) writes a claim to the ledger (``Engine.claim``) and
reads the claims written since its plan's ledger snapshot: an earlier competing claim (same kind,
overlapping range) wins, and this run is refused naming it, so only one of them sends. While it
sends, a timer rewrites the run record every ``heartbeat_s`` (a ``--rate`` slower than one record
per heartbeat is not mistaken for a dead run); the record says after how long silence it is dead.
"""

from __future__ import annotations

import asyncio
import os
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.contract import headers as h
from services.contract.times import now_iso
from services.contract.topics import Topics
from services.replay import runs
from services.replay.plans import (
    Confirm,
    Options,
    Plan,
    ProgressFactory,
    ReplayRefusedError,
    Send,
    Skip,
    Source,
    Summary,
)
from services.replay.runs import CLAIM_PARTITION, Claim, Ledger, Run, host_name, overlaps, run_id
from services.replay.sending import ABANDON_S, RunSender
from services.replay.window import Ranges, Window, offset_ranges, read_ranges, reader, topic_ends
from services.shared import kafka
from services.shared import logging as logs
from services.shared.errors import AkeceError, ConfigError
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore

log = logs.get("replay")

T = TypeVar("T")
INTERNAL_ERROR = "internal_error"  # the skip reason of a record whose handling raised unexpectedly


class Engine(Generic[T]):
    def __init__(self, settings: Settings, source: Source[T], *, producer: AIOKafkaProducer, options: Options,
                 store: SubscriptionStore | None = None, progress: ProgressFactory | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.producer = producer
        self.options = options
        self.store = store
        self.progress = progress
        self.deliveries = Topics.from_settings(settings).deliveries

    # --- planning --------------------------------------------------------------------------------
    async def plan(self, window: Window) -> Plan:
        async with kafka.started(reader(self.settings)) as consumer:
            ranges = await offset_ranges(consumer, self.source.topic, window)
            book = await Ledger.load(self.settings)
            plan = self._identify(book, ranges, window.describe())
            plan.claims_from = book.ends.get(CLAIM_PARTITION, 0)
            self._unclaimed(book, plan)
            if plan.resumed is not None:  # a resumed run keeps the flags it started with
                self.options = replace(self.options, force=self.options.force or plan.resumed.force,
                                       enable=self.options.enable or plan.resumed.enable)
            priors = self._priors(book, plan)
            unfinished = [r for r in (plan.resumed, *priors) if r is not None and not r.finished]
            tails = await enqueued_by(consumer, self.deliveries, self.source.id_header, unfinished)
            plan.deliveries_ends = {tp.partition: end for tp, end in
                                    (await topic_ends(consumer, self.deliveries)).items()}
            await self._scan(consumer, plan, priors, tails)
        return plan

    def _identify(self, book: Ledger, ranges: Ranges, window: dict[str, str | None]) -> Plan:
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

    def _priors(self, book: Ledger, plan: Plan) -> list[Run]:
        priors = [r for r in book.of_kind(self.source.kind) if r.id != plan.run_id and overlaps(r.ranges, plan.ranges)]
        now, host = time.time(), host_name()
        for run in priors:
            if run.live(now, host):
                raise ReplayRefusedError(f"{run.kind} {run.id} over an overlapping range is running now "
                                         f"({run.user}@{run.host} pid {run.pid}): wait for it to finish")
        return priors

    def _unclaimed(self, book: Ledger, plan: Plan) -> None:
        """Refuse when another process has claimed an overlapping run and not recorded it yet."""
        now = time.time()
        for claim in book.live_claims(self.source.kind, now, host_name()):
            if overlaps(claim.ranges, plan.ranges):
                raise ReplayRefusedError(_claimed_message(claim, now))

    async def _scan(self, consumer: AIOKafkaConsumer, plan: Plan, priors: Sequence[Run],
                    tails: Mapping[str, set[str]]) -> None:
        resumed = plan.resumed
        checkpoint = resumed.checkpoint if resumed else {}
        own_tail = tails.get(resumed.id, set()) if resumed else set()
        last: dict[str, tuple[int, int]] = {}
        replayed: dict[tuple[str, str | None], str] = {}  # (delivery id, origin) -> the run that covered it
        candidates: list[tuple[int, int, str, int]] = []
        samples: list[tuple[int, int, dict[str, Any]]] = []
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
                candidates.append((*where, decision.delivery_id, decision.webhook_id))
                if len(samples) < 4 * self.options.sample_size:
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

    def _select(self, plan: Plan, candidates: list[tuple[int, int, str, int]], last: dict[str, tuple[int, int]],
                samples: list[tuple[int, int, dict[str, Any]]]) -> None:
        chosen: set[tuple[int, int]] = set()
        for partition, offset, delivery, webhook in candidates:
            if last[delivery] != (partition, offset):
                plan.skipped["superseded"] += 1
                continue
            plan.selected.setdefault(partition, array("q")).append(offset)
            plan.by_webhook[webhook] += 1
            plan.total += 1
            if len(chosen) < len(samples):
                chosen.add((partition, offset))
        plan.to_enable &= set(plan.by_webhook)
        plan.sample = [d for p, o, d in samples if (p, o) in chosen][: self.options.sample_size]

    # --- claiming ----------------------------------------------------------------------------------
    async def claim(self, plan: Plan) -> Claim:
        """Win the right to run ``plan`` or raise ``ReplayRefusedError`` naming the run that was first.

        Writes a claim to the ledger, then reads every claim written since the plan's ledger
        snapshot up to it: one of the same kind over an overlapping range was written first (its
        process planned at the same time and did not see this one either), so this claim is
        released and refused. Idempotent per plan.
        """
        if plan.claim is not None:
            return plan.claim
        claim = Claim(run_id=plan.run_id, kind=self.source.kind, ranges=plan.ranges, user=self.options.user,
                      host=host_name(), pid=os.getpid(), dead_after_s=self.options.dead_after_s)
        offset = await runs.write_claim(self.producer, self.settings, claim)
        try:
            earlier = [c for _, c in await runs.claims_between(self.settings, plan.claims_from, offset)
                       if claim.competes(c)]
        except BaseException:
            await self._release(claim)
            raise
        if earlier:
            await self._release(claim)
            log.warning(f"{claim.kind}.claim_lost", run_id=plan.run_id, winner=earlier[0].run_id)
            raise ReplayRefusedError(_claimed_message(earlier[0], time.time()))
        plan.claim = claim
        return claim

    async def _release(self, claim: Claim) -> None:
        """Best effort: an unreleased claim stops counting once its run is recorded or it is stale."""
        try:
            await asyncio.wait_for(runs.release(self.producer, self.settings, claim.id), ABANDON_S)
        except (AkeceError, KafkaError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning("replay.claim_release_failed", claim=claim.id, error=str(exc)[:200])

    # --- running -----------------------------------------------------------------------------------
    async def execute(self, plan: Plan, *, confirm: Confirm | None = None) -> Summary:
        if self.options.dry_run:
            return Summary(plan, "dry_run")
        if plan.total == 0 and plan.already_replayed and plan.resumed is None:
            return Summary(plan, "refused")
        if plan.total == 0:
            if plan.resumed is not None and not plan.resumed.finished:
                await self._finish(self._start_record(plan))
            return Summary(plan, "nothing_to_do")
        if confirm is not None and not await confirm(plan):
            if plan.claim is not None:
                await self._release(plan.claim)
            return Summary(plan, "aborted")
        claim = await self.claim(plan)
        try:
            await self._enable(plan.to_enable)
            run = self._start_record(plan)
            await runs.write(self.producer, self.settings, run)
        except BaseException:
            await self._release(claim)
            raise
        log.info(f"{run.kind}.started", run_id=run.id, total=plan.total, user=run.user, resumed=bool(plan.resumed))
        sender = RunSender(self, plan, run)
        try:
            async with sender.heartbeat():
                await sender.send_all()
        except BaseException as exc:
            interrupted = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            await sender.abandon("interrupted" if interrupted else "failed",
                                 None if interrupted else f"{type(exc).__name__}: {exc}"[:300])
            await self._release(claim)
            raise
        try:
            await self._finish(run)
        finally:
            await self._release(claim)
        log.info(f"{run.kind}.finished", run_id=run.id, enqueued=sender.enqueued, seconds=round(sender.seconds, 3))
        return Summary(plan, "done", sender.enqueued, sender.seconds, sender.vanished)

    async def _enable(self, webhooks: set[int]) -> None:
        if webhooks and self.store is None:
            raise ConfigError("--enable needs the subscription store")
        for webhook_id in sorted(webhooks):
            assert self.store is not None
            await self.store.set_enabled(webhook_id, True, None)
            log.info("replay.webhook_enabled", webhook_id=webhook_id)

    def _start_record(self, plan: Plan) -> Run:
        now = now_iso()
        claim = plan.claim.id if plan.claim is not None else None
        if plan.resumed is not None:
            return plan.resumed.model_copy(update={
                "status": "running", "pid": os.getpid(), "host": host_name(), "rate": self.options.rate,
                "claim": claim, "dead_after_s": self.options.dead_after_s, "error": None,
                "skipped_webhooks": {**plan.skipped_webhooks, **plan.resumed.skipped_webhooks},
                "enqueued": plan.resumed.enqueued + plan.tail_found,
                "total": plan.resumed.enqueued + plan.tail_found + plan.total, "counts": plan.counts()})
        return Run(id=plan.run_id, kind=self.source.kind, status="running", user=self.options.user, host=host_name(),
                   pid=os.getpid(), started_at=now, updated_at=now, heartbeat=time.time(),
                   source_topic=self.source.topic, filters=self.source.filters, window=plan.window,
                   ranges=plan.ranges, checkpoint={p: start for p, (start, _) in plan.ranges.items()},
                   deliveries_from=dict(plan.deliveries_ends), skipped_webhooks=dict(plan.skipped_webhooks),
                   generation=plan.generation, force=self.options.force, enable=self.options.enable,
                   rate=self.options.rate, counts=plan.counts(), total=plan.total, claim=claim,
                   dead_after_s=self.options.dead_after_s)

    async def _finish(self, run: Run) -> None:
        run.status = "done"
        run.finished_at = now_iso()
        run.checkpoint = {p: end for p, (_, end) in run.ranges.items()}
        await runs.write(self.producer, self.settings, run)


def _claimed_message(claim: Claim, now: float) -> str:
    return (f"{claim.kind} {claim.run_id} over an overlapping range was started first by {claim.user}@{claim.host} "
            f"pid {claim.pid} ({now - claim.at:.0f}s ago): wait for it to finish")


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
