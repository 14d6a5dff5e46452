"""Batches in flight: produced, waiting for their acknowledgements, then committed in batch order.

The router hands each batch over as soon as its records are with the producer (``add``) and goes on
fetching, routing and producing the next one while the acknowledgements come in, up to ``limit``
batches whose acknowledgements are not all in (``room``). A batch's offsets are committed only once
its own acknowledgements are in AND the batch before it is committed, so commits stay in batch order,
a crash re-routes at most the batches in flight (same delivery ids: at-least-once), and a failed
batch fails every later one, uncommitted. The first failure is raised by the next ``room`` or
``settle``; a rebalance, an idle check and shutdown ``settle`` (wait for every batch) first.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from services.shared import kafka
from services.shared import logging as logs

log = logs.get("router")

Concluded = Callable[[float], None]
"""Called after a batch's commit with the time its last acknowledgement came in."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    acked: asyncio.Future[float]
    committed: asyncio.Future[None]


class InFlight:
    """At most ``limit`` produced batches awaiting acknowledgements; commits in batch order."""

    def __init__(self, consumer: AIOKafkaConsumer, limit: int, clock: Callable[[], float] = time.time) -> None:
        self._consumer = consumer
        self._limit = limit
        self._clock = clock
        self._batches: deque[_InFlight] = deque()
        self._failure: BaseException | None = None  # raised again until the worker stops

    def add(self, acks: Awaitable[None], offsets: dict[TopicPartition, int], concluded: Concluded) -> None:
        """A produced batch: ``acks`` completes when all its records are acknowledged."""
        previous = self._batches[-1].committed if self._batches else None
        acked = asyncio.ensure_future(self._acked(acks))
        committed = asyncio.ensure_future(self._commit_after(acked, previous, offsets, concluded))
        self._batches.append(_InFlight(acked, committed))

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
            try:
                await asyncio.wait([b.committed for b in batches])
            except asyncio.CancelledError:
                for batch in batches:  # (stopped at once: nothing after this commits)
                    batch.committed.cancel()
                raise
        for batch in batches:
            self._check(batch.committed)
        if self._failure is not None:
            raise self._failure

    def _check(self, committed: asyncio.Future[None]) -> None:
        error = committed.exception()
        if error is not None and self._failure is None:
            self._failure = error
        if self._failure is not None:
            raise self._failure

    async def _acked(self, acks: Awaitable[None]) -> float:
        await acks
        return self._clock()

    async def _commit_after(self, acked: asyncio.Future[float], previous: asyncio.Future[None] | None,
                            offsets: dict[TopicPartition, int], concluded: Concluded) -> None:
        if previous is not None:
            try:
                await previous  # commits in batch order
            except BaseException:
                acked.cancel()  # a failed batch fails the ones after it, uncommitted
                raise
        at = await acked
        await self._commit(offsets)
        concluded(at)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await kafka.commit(self._consumer, offsets)
        except (KafkaError, IllegalStateError) as exc:
            # The group rebalanced under us, or the broker is away: whoever owns the partitions next
            # re-routes from the last commit (same ids); a later batch's commit supersedes this one.
            log.warning("router.commit_failed", error=f"{type(exc).__name__}: {exc}",
                        partitions=sorted(tp.partition for tp in offsets))


def _failed(future: asyncio.Future[float]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is not None
