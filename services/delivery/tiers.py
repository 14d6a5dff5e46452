"""Retry tiers: wait for a record's due time without a busy loop and without blocking other partitions.

Within a tier every record has the same delay, so due times grow with the offset: when the head of
a partition is not due, nothing behind it is. The worker then ``hold``s the partition: seek back to
the head, pause it (reason ``due``) and resume it from a ``loop.call_later`` timer. The refetched
head is checked again, so a record is never attempted before its due time (a little after is fine).

The timer fires a gathering window after the head's due time (``gather_s``: 2% of the tier's delay,
from 0.1 s to 1 s), so the records falling due meanwhile come in the same fetch. Resumed at each
head's own due time, a tier fed steadily (a failing webhook's retries) was fetched again for every
record, and each fetch decodes everything written behind its head (up to 1 MiB per partition): a
partition taking n records a second cost n fetches a second, each decoding a delay's worth of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Protocol

from aiokafka import TopicPartition

from services.delivery.ledger import DUE, Pauses

# Timers fire on the loop's monotonic clock, due times are wall-clock: resume a little after.
MARGIN_S = 0.005
GATHER_SHARE = 0.02  # of a tier's delay: how long past its head's due time a held partition waits for more
GATHER_MIN_S = 0.1
GATHER_MAX_S = 1.0


def gather_s(delay_s: float) -> float:
    """How long after its head's due time a held partition of a tier with this delay resumes."""
    return min(GATHER_MAX_S, max(GATHER_MIN_S, delay_s * GATHER_SHARE))


class Seekable(Protocol):
    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class DueGate:
    """``DueGate(consumer, pauses, delays)``: ``delays`` maps each tier's topic to its delay (another topic
    gathers for ``GATHER_MIN_S``)."""

    def __init__(self, consumer: Seekable, pauses: Pauses, delays: Mapping[str, float]) -> None:
        self._consumer = consumer
        self._pauses = pauses
        self._gather = {topic: gather_s(delay) for topic, delay in delays.items()}
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}

    def hold(self, tp: TopicPartition, offset: int, due_at: float, now: float) -> None:
        """The record at ``offset`` is due at ``due_at``: refetch it (with what falls due within the tier's
        gathering window after it) then, and nothing of ``tp`` before."""
        self._consumer.seek(tp, offset)
        self._pauses.add(tp, DUE)
        old = self._timers.pop(tp, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        wait = max(0.0, due_at - now) + self._gather.get(tp.topic, GATHER_MIN_S) + MARGIN_S
        self._timers[tp] = loop.call_later(wait, self._release, tp)

    def _release(self, tp: TopicPartition) -> None:
        self._timers.pop(tp, None)
        self._pauses.discard(tp, DUE)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions revoked: their timers no longer matter."""
        for tp in tps:
            timer = self._timers.pop(tp, None)
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self.forget(list(self._timers))

    def __len__(self) -> int:
        return len(self._timers)
