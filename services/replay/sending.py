"""The send phase of one run: produce each selected record again, await the acknowledgements, then
checkpoint the run record, in that order (never a checkpoint ahead of its acks); a heartbeat keeps
the run record fresh while it sends; ``abandon`` records an interrupted or failed run."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from services.contract import headers as h
from services.replay import runs
from services.replay.plans import Plan, Send, Skip
from services.replay.ratelimit import TokenBucket
from services.replay.runs import Run
from services.replay.window import read_ranges, reader
from services.shared import kafka
from services.shared import logging as logs
from services.shared.errors import AkeceError

if TYPE_CHECKING:  # the engine builds the sender; the sender only reads the engine's parts
    from services.replay.engine import Engine

log = logs.get("replay")

ABANDON_S = 5.0  # how long an interrupted run waits for in-flight acknowledgements


class RunSender:
    """The send phase of one run: produce, await acks, checkpoint, in that order."""

    def __init__(self, engine: Engine[Any], plan: Plan, run: Run) -> None:
        self.engine = engine
        self.plan = plan
        self.run = run
        self.base = run.enqueued
        self.enqueued = 0
        self.vanished = 0
        self.pending: list[asyncio.Future[Any]] = []
        self.cursor = dict(run.checkpoint)
        self.flushed_at = time.monotonic()
        self.started = time.monotonic()
        self.seconds = 0.0
        self.written_at = time.monotonic()  # the run record was just written (started)
        self._writing = asyncio.Lock()
        rate = engine.options.rate
        self.bucket = TokenBucket(rate) if rate else None
        factory = engine.progress
        self.progress = factory(f"{run.kind} {run.id}", plan.total) if factory else None

    async def send_all(self) -> None:
        engine, source = self.engine, self.engine.source
        stops = self.plan.stops  # a limited run reads up to the first record it leaves
        ranges = {p: (max(start, self.cursor.get(p, start)), stops.get(p, end))
                  for p, (start, end) in self.plan.ranges.items()}
        pointers: dict[int, int] = {}
        async with kafka.started(reader(engine.settings)) as consumer:
            async for records in read_ranges(consumer, source.topic, ranges):
                partition = records[0].partition
                wanted = self.plan.selected.get(partition, array("q"))
                index = pointers.get(partition, 0)
                for record in records:
                    while index < len(wanted) and wanted[index] < record.offset:
                        index += 1
                        self.vanished += 1
                    if index < len(wanted) and wanted[index] == record.offset:
                        index += 1
                        await self._send(engine.decide(record)[1])
                    self.cursor[partition] = record.offset + 1
                    if (len(self.pending) >= engine.options.checkpoint_every
                            or time.monotonic() - self.flushed_at >= engine.options.checkpoint_interval_s):
                        await self.flush()
                pointers[partition] = index
        await self.flush()
        self.seconds = time.monotonic() - self.started
        if self.progress:
            self.progress.finish()

    async def _send(self, decision: Send | Skip | None) -> None:
        if not isinstance(decision, Send):  # the webhook was deleted since the plan
            self.vanished += 1
            return
        if self.bucket is not None:
            await self.bucket.acquire()
        headers = h.replace(decision.headers, {self.engine.source.id_header: self.run.id})
        self.pending.append(await self.engine.producer.send(
            self.engine.deliveries, decision.value, key=decision.key, headers=headers))

    async def flush(self) -> None:
        """Await the acknowledgements, then write the checkpoint: never the other way round."""
        if self.pending:
            metas = await asyncio.wait_for(asyncio.gather(*self.pending),
                                           self.engine.settings.kafka.send_timeout_s)
            for meta in metas:
                self.run.deliveries_from[meta.partition] = max(self.run.deliveries_from.get(meta.partition, 0),
                                                               meta.offset + 1)
            self.enqueued += len(self.pending)
            self.pending.clear()
        self.run.checkpoint = dict(self.cursor)
        self.run.enqueued = self.base + self.enqueued
        await self._write()
        self.flushed_at = time.monotonic()
        if self.progress:
            self.progress.update(self.enqueued)

    async def _write(self) -> None:
        """Write the run record; one write at a time, so the run record never goes back to an older state."""
        async with self._writing:
            await runs.write(self.engine.producer, self.engine.settings, self.run)
            self.written_at = time.monotonic()

    @asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        """While the block runs, rewrite the run record whenever ``heartbeat_s`` passed without a write."""
        task = asyncio.create_task(self._beat(), name=f"heartbeat {self.run.id}")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _beat(self) -> None:
        interval = self.engine.options.heartbeat_s
        while True:
            await asyncio.sleep(max(0.0, self.written_at + interval - time.monotonic()))
            if time.monotonic() - self.written_at < interval:
                continue  # a checkpoint was written meanwhile
            try:
                await self._write()  # bounded by kafka.send_timeout_s
            except (AkeceError, KafkaError, OSError, TimeoutError) as exc:
                log.warning("replay.heartbeat_failed", run_id=self.run.id, error=str(exc)[:200])
                await asyncio.sleep(min(interval, 1.0))

    async def abandon(self, status: str, error: str | None = None) -> None:
        """Best effort on the way out: await what is in flight, checkpoint it, mark the run unfinished.

        If the acknowledgements do not come, the last checkpoint stays (a resume finds the rest on
        the deliveries topic) and only the status is recorded.
        """
        self.run.status = "interrupted" if status == "interrupted" else "failed"
        self.run.error = error
        try:
            await asyncio.wait_for(self.flush(), ABANDON_S)
        except (AkeceError, KafkaError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning("replay.checkpoint_lost", run_id=self.run.id, error=str(exc)[:200])
            try:
                await asyncio.wait_for(self._write(), ABANDON_S)
            except (AkeceError, KafkaError, OSError, TimeoutError, asyncio.CancelledError):
                log.warning("replay.status_lost", run_id=self.run.id)
        if self.progress:
            self.progress.finish()
