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
   records the run as running in the replays topic.
3. **Sends.** It reads the range again from the checkpoint and produces every selected record to the
   deliveries topic with attempt 1, the original key, body and delivery id, and a header naming the
   run, through a token bucket (``--rate``). Every ``checkpoint_every`` records or
   ``checkpoint_interval_s`` it awaits the acknowledgements and only then writes the checkpoint: per
   source partition, the offset below which every record is finished.

**A few first** (``--limit N``). The plan sends only the N oldest records to send (per partition a
prefix, in offset order) and stops each partition at the first record it leaves: the run is then
recorded as ``partial`` with that checkpoint, an unfinished run like an interrupted one, so the same
command resumes it and sends the next ones, and never what the checkpoint says is finished.

**Never twice.** A crash after some acknowledgements and before the next checkpoint leaves up to
``checkpoint_every`` records (or a second's worth) re-enqueued but not checkpointed. They are not
sent again: each checkpoint also records, per deliveries partition, the offset after this run's
last acknowledged record (and the end offsets when the run started), so a resume scans only what
this run may have written since, collects the delivery ids carrying its run id, and counts those
records as done. (The one case this does not cover: a produce request that was on the wire when
the process died and that the broker appends only after the resume has scanned, seconds later.)

**One at a time.** Two processes (or two API calls) can plan the same run at once. Before sending,
``execute`` (or the API, before answering 202) writes a claim to the replays topic (``Engine.claim``) and
reads the claims written since its plan's run book (``runs.RunBook``): an earlier competing claim (same kind,
overlapping range) wins, and this run is refused naming it, so only one of them sends. While it
sends, a timer rewrites the run record every ``heartbeat_s`` (a ``--rate`` slower than one record
per heartbeat is not mistaken for a dead run); the record says after how long silence it is dead.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaProducer

from services.contract.times import now_iso
from services.replay import runs
from services.replay.claims import Claimant
from services.replay.planner import Planner
from services.replay.plans import Confirm, Options, Plan, ProgressFactory, Send, Skip, Source, Summary
from services.replay.runs import Claim, Run, host_name
from services.replay.sending import RunSender
from services.replay.window import Window
from services.shared import logging as logs
from services.shared.errors import ConfigError
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore

log = logs.get("replay")

T = TypeVar("T")


class Engine(Generic[T]):
    """Runs one replay or recover over ``source``: its ``Planner`` plans, its ``Claimant`` claims,
    ``execute`` records the run and sends it (``sending.RunSender``) to the end."""

    def __init__(self, settings: Settings, source: Source[T], *, producer: AIOKafkaProducer, options: Options,
                 store: SubscriptionStore | None = None, progress: ProgressFactory | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.source = source
        self.producer = producer
        self.store = store
        self.progress = progress
        self.planner = Planner(settings, source, options, metrics=metrics)
        self.claims = Claimant(settings, producer, source.kind, options)
        self.deliveries = self.planner.deliveries

    @property
    def options(self) -> Options:
        """The run's options: the caller's, with a resumed run's ``force``/``enable`` once planned."""
        return self.planner.options

    async def plan(self, window: Window) -> Plan:
        plan = await self.planner.plan(window)
        self.claims.options = self.options
        return plan

    def decide(self, record: Any) -> tuple[T | None, Send | Skip | None]:
        """The source's item and decision for one record (``Planner.decide``): the sender's too."""
        return self.planner.decide(record)

    async def claim(self, plan: Plan) -> Claim:
        """Win the right to run ``plan`` or raise ``ReplayRefusedError`` (``Claimant.claim``)."""
        return await self.claims.claim(plan)

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
                await self.claims.release(plan.claim)
            return Summary(plan, "aborted")
        claim = await self.claim(plan)
        try:
            await self._enable(plan.to_enable)
            run = self._start_record(plan)
            await runs.write(self.producer, self.settings, run)
        except BaseException:
            await self.claims.release(claim)
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
            await self.claims.release(claim)
            raise
        try:
            await self._finish(run, plan.stops if plan.left else None)
        finally:
            await self.claims.release(claim)
        log.info(f"{run.kind}.finished", run_id=run.id, enqueued=sender.enqueued, left=plan.left,
                 seconds=round(sender.seconds, 3))
        return Summary(plan, "partial" if plan.left else "done", sender.enqueued, sender.seconds, sender.vanished)

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
                "total": plan.resumed.enqueued + plan.tail_found + plan.total + plan.left, "counts": plan.counts()})
        return Run(id=plan.run_id, kind=self.source.kind, status="running", user=self.options.user, host=host_name(),
                   pid=os.getpid(), started_at=now, updated_at=now, heartbeat=time.time(),
                   source_topic=self.source.topic, filters=self.source.filters, window=plan.window,
                   ranges=plan.ranges, checkpoint={p: start for p, (start, _) in plan.ranges.items()},
                   deliveries_from=dict(plan.deliveries_ends), skipped_webhooks=dict(plan.skipped_webhooks),
                   generation=plan.generation, force=self.options.force, enable=self.options.enable,
                   rate=self.options.rate, counts=plan.counts(), total=plan.total + plan.left, claim=claim,
                   dead_after_s=self.options.dead_after_s)

    async def _finish(self, run: Run, stops: dict[int, int] | None = None) -> None:
        """Record the run done, or ``partial`` up to ``stops`` (a limited run leaving records for later)."""
        if stops:
            run.status, run.checkpoint = "partial", dict(stops)
        else:
            run.status, run.finished_at = "done", now_iso()
            run.checkpoint = {p: end for p, (_, end) in run.ranges.items()}
        await runs.write(self.producer, self.settings, run)


__all__ = ["Engine"]
