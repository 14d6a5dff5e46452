"""The delivery worker's commits: which offsets are done, and committing them.

The offset ledger (``ledger.Ledger``) keeps each partition's unfinished offsets; every
``COMMIT_INTERVAL_S``, or sooner after ``COMMIT_EVERY`` completions, each partition's lowest contiguous
completed offset is committed, with the offsets above it already complete as the commit's metadata.
A partition's new owner reads that metadata back (``load``) and skips those records (``already_done``).
A failed commit is taken back and tried again later (what it covered is redone at worst). Failures
are logged once per ``unavailable_log_s`` (``delivery.commit_failed``, with a count), and the first
commit that succeeds after them says so (``delivery.commits_resumed``: how long, how many failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.delivery.ledger import Ledger, PartitionLedger, decode_done
from services.shared import kafka
from services.shared import logging as logs

log = logs.get("delivery")

COMMIT_INTERVAL_S = 0.5
COMMIT_EVERY = 200  # completions: commit sooner under load (fewer redone after a crash)


class Commits:
    """``Commits(group_id, unavailable_log_s)``: the offset ledger and the commits of one consumer."""

    def __init__(self, group_id: str, unavailable_log_s: float) -> None:
        self.group_id = group_id
        self.offsets = Ledger()
        self.skipped = 0  # records not redone: complete above the commit (metadata)
        self._unavailable_log_s = unavailable_log_s
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()
        self._completed = 0
        self._failures = 0  # since the last delivery.commit_failed line
        self._failed_at = -float("inf")
        self._failing_since: float | None = None  # first failure since the last successful commit
        self._failed_total = 0
        self._skips: dict[TopicPartition, set[int]] = {}  # offsets complete above the commit (metadata)

    def bind(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> None:
        self._consumer, self._admin = consumer, admin

    @property
    def bound(self) -> bool:
        return self._consumer is not None

    def add(self, tp: TopicPartition, offset: int, due_at: float | None = None) -> PartitionLedger:
        return self.offsets.add(tp, offset, due_at)

    def done(self, ledger: PartitionLedger, offset: int) -> None:
        ledger.done(offset)
        self._completed += 1
        if self._completed == COMMIT_EVERY:
            self._due.set()

    def already_done(self, tp: TopicPartition, offset: int) -> bool:
        """Whether the record at ``offset`` completed before a crash or rebalance (then it is done here)."""
        skip = self._skips.get(tp)
        if not skip or offset not in skip:
            return False
        skip.discard(offset)
        if not skip:
            del self._skips[tp]
        self.offsets.add(tp, offset).done(offset)
        self.skipped += 1
        return True

    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        async with self._lock:
            points = self.offsets.commits(tps)
            if not points:
                return
            try:
                await kafka.commit(self._consumer, points)
            except KafkaError as exc:  # redone: by the partitions' new owner, or by us once the broker is back
                self.offsets.uncommit(points)
                self._failed(exc, len(points))
                return
            if self._failing_since is not None:
                log.info("delivery.commits_resumed", failed_for_s=round(time.monotonic() - self._failing_since, 1),
                         failures=self._failed_total)
                self._failing_since, self._failed_total = None, 0

    def _failed(self, exc: KafkaError, partitions: int) -> None:
        self._failures += 1
        self._failed_total += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failed_at >= self._unavailable_log_s:  # once per window
            self._failed_at = now
            log.warning("delivery.commit_failed", error=f"{type(exc).__name__}: {exc}",
                        partitions=partitions, failures=self._failures)
            self._failures = 0

    async def tick_loop(self, every_tick: Callable[[], None]) -> None:
        """Commit every COMMIT_INTERVAL_S or COMMIT_EVERY completions, whichever comes first; call
        ``every_tick`` at most every COMMIT_INTERVAL_S."""
        ticked_at = 0.0
        while True:
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for can swallow the stop's cancel
                async with asyncio.timeout(COMMIT_INTERVAL_S):
                    await self._due.wait()
            self._due.clear()
            self._completed = 0
            await self.commit()
            if time.monotonic() - ticked_at >= COMMIT_INTERVAL_S:
                ticked_at = time.monotonic()
                every_tick()

    async def load(self, assigned: set[TopicPartition]) -> int:
        """Learn which records above each committed offset of ``assigned`` are already complete (commit
        metadata); how many."""
        assert self._admin is not None
        try:
            offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=list(assigned))
        except KafkaError as exc:  # without the list, those records are redone: at-least-once holds
            log.warning("delivery.commit_metadata_unavailable", error=f"{type(exc).__name__}: {exc}")
            offsets = {}
        for tp, committed in offsets.items():
            done = decode_done(committed.offset, committed.metadata) if committed.offset >= 0 else set()
            if done:
                self._skips[tp] = done
        return sum(len(done) for done in self._skips.values())

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        """Partitions taken away: their commit metadata no longer applies here."""
        for tp in revoked:
            self._skips.pop(tp, None)

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """Commit what completed of ``revoked``, then drop their ledgers."""
        await self.commit(revoked)
        self.offsets.drop(revoked)
