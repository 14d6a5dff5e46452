"""Batches in flight: produced, waiting for their acknowledgements, then committed in batch order.

The router hands each batch over as soon as its records are with the producer (``add``) and goes on
fetching, routing and producing the next one while the acknowledgements come in, up to ``limit``
batches whose acknowledgements are not all in (``room``). A batch's offsets are committed only once
its own acknowledgements are in AND every batch before it is committed, so commits stay in batch
order, a crash re-routes at most the batches in flight (same delivery ids: at-least-once), and a
failed batch fails every later one, uncommitted. The first failure is raised by the next ``room`` or
``settle``; a rebalance, an idle check and shutdown ``settle`` (wait for every batch) first.

One committer commits: each commit covers every batch at the head whose acknowledgements are in
(their offsets merged), so at most one commit is on its way at a time and commits never queue up.
One commit per batch did: under a steady trickle (many small batches) each waited for the commit
before it, 6-26 ms each on a busy broker, and batches waited up to 3 s after their acknowledgements,
holding their records (and their garbage-collector passes) and costing the broker a commit each.
Commits are also at least ``commit_gap_s`` apart (``COMMIT_GAP_S``), as the delivery worker's are:
under a steady load of small batches, a commit per batch was a request to the broker every few
milliseconds for offsets a crash would re-route a fraction of a second of anyway. ``settle`` does
not wait for the gap: a rebalance, an idle check and shutdown commit at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from services.shared import kafka
from services.shared import logging as logs

log = logs.get("router")

COMMIT_GAP_S = 0.2  # least time between two commits (``settle`` commits at once)

Concluded = Callable[[float], None]
"""Called after a batch's commit with the time its last acknowledgement came in."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    acked: asyncio.Future[float]
    committed: asyncio.Future[None]
    offsets: dict[TopicPartition, int]
    concluded: Concluded


class InFlight:
    """At most ``limit`` produced batches awaiting acknowledgements; commits in batch order."""

    def __init__(self, consumer: AIOKafkaConsumer, limit: int, clock: Callable[[], float] = time.time, *,
                 commit_gap_s: float = COMMIT_GAP_S) -> None:
        self._consumer = consumer
        self._limit = limit
        self._clock = clock
        self._commit_gap_s = commit_gap_s
        self._committed_at = float("-inf")  # the loop's time of the last commit
        self._now = asyncio.Event()  # set while ``settle`` waits: commit without the gap
        self._batches: deque[_InFlight] = deque()  # added, not yet seen committed by ``room``/``settle``
        self._uncommitted: deque[_InFlight] = deque()  # the committer's queue, in batch order
        self._committer: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None  # raised again until the worker stops

    def add(self, acks: Awaitable[None], offsets: dict[TopicPartition, int], concluded: Concluded) -> None:
        """A produced batch: ``acks`` completes when all its records are acknowledged."""
        loop = asyncio.get_running_loop()
        batch = _InFlight(asyncio.ensure_future(self._acked(acks)), loop.create_future(), offsets, concluded)
        self._batches.append(batch)
        self._uncommitted.append(batch)
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_in_order())

    async def room(self) -> None:
        """Return once fewer than ``limit`` batches wait for acknowledgements; raise a failed batch's error."""
        if self._failure is not None:
            raise self._failure
        while True:
            while self._batches and self._batches[0].committed.done():
                self._check(self._batches.popleft().committed)
            if any(_failed(b.acked) for b in self._batches):
                await self.settle()  # raises the first failure, once the batches before it are committed
            waiting = [b.acked for b in self._batches if not b.acked.done()]
            if len(waiting) < self._limit:
                return
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)

    async def settle(self) -> None:
        """Wait until every batch in flight is committed, or failed (the first failure is raised)."""
        batches, self._batches = list(self._batches), deque()
        if batches:
            self._now.set()
            try:
                await asyncio.wait([b.committed for b in batches])
            except asyncio.CancelledError:
                if self._committer is not None:  # (stopped at once: nothing after this commits)
                    self._committer.cancel()
                for batch in batches:
                    batch.committed.cancel()
                raise
            finally:
                self._now.clear()
        for batch in batches:
            self._check(batch.committed)
        if self._failure is not None:
            raise self._failure

    def _check(self, committed: asyncio.Future[None]) -> None:
        if committed.cancelled() and self._failure is None:  # a batch whose acknowledgement was cancelled
            raise asyncio.CancelledError("a batch ended uncommitted: its acknowledgement was cancelled")
        error = None if committed.cancelled() else committed.exception()
        if error is not None and self._failure is None:
            self._failure = error
        if self._failure is not None:
            raise self._failure

    async def _acked(self, acks: Awaitable[None]) -> float:
        await acks
        return self._clock()

    async def _commit_in_order(self) -> None:
        """Commit the head batches as their acknowledgements come in, all that are in with one commit."""
        queue = self._uncommitted
        while queue:
            await asyncio.wait([queue[0].acked])
            head = queue[0].acked
            if head.cancelled() or head.exception() is not None:
                self._fail_all(None if head.cancelled() else head.exception())
                return
            await self._gap()
            done: list[_InFlight] = []
            offsets: dict[TopicPartition, int] = {}
            while queue and _succeeded(queue[0].acked):
                batch = queue.popleft()
                done.append(batch)
                offsets.update(batch.offsets)  # a later batch's offset of a partition is the higher one
            await self._commit(offsets)
            self._committed_at = asyncio.get_running_loop().time()
            for batch in done:
                try:
                    batch.concluded(batch.acked.result())
                except Exception as exc:  # counting failed: the worker stops, as for a failed batch
                    batch.committed.set_exception(exc)
                else:
                    batch.committed.set_result(None)

    async def _gap(self) -> None:
        """Wait out what is left of ``commit_gap_s`` since the last commit, unless ``settle`` waits."""
        left = self._committed_at + self._commit_gap_s - asyncio.get_running_loop().time()
        if left > 0 and not self._now.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._now.wait()

    def _fail_all(self, error: BaseException | None) -> None:
        """The head batch failed (``error``) or was cancelled (None): it and every batch after it end
        uncommitted."""
        first = True
        while self._uncommitted:
            batch = self._uncommitted.popleft()
            if batch.acked.done() and not batch.acked.cancelled():
                batch.acked.exception()  # (retrieved: the head's error is the one raised)
            batch.acked.cancel()
            if error is None or not first:
                batch.committed.cancel()  # the batches after a failed one: uncommitted, not failed themselves
            else:
                batch.committed.set_exception(error)
            first = False

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await kafka.commit(self._consumer, offsets)
        except (KafkaError, IllegalStateError) as exc:
            # The group rebalanced under us, or the broker is away: whoever owns the partitions next
            # re-routes from the last commit (same ids); a later batch's commit supersedes this one.
            log.warning("router.commit_failed", error=f"{type(exc).__name__}: {exc}",
                        partitions=sorted(tp.partition for tp in offsets))


def _succeeded(future: asyncio.Future[float]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _failed(future: asyncio.Future[float]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is not None
