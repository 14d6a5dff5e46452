"""Retry tiers: wait for a record's due time without a busy loop and without blocking other partitions.

Within a tier every record has the same delay, so due times grow with the offset: when the head of
a partition is not due, nothing behind it is. The worker then ``hold``s the partition: seek back to
the head, pause it (reason ``due``) and resume it from a ``loop.call_later`` timer. The refetched
head is checked again, so a record is never attempted before its due time (a little after is fine).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from aiokafka import TopicPartition

from services.delivery.ledger import DUE, Pauses

# Timers fire on the loop's monotonic clock, due times are wall-clock: resume a little after.
MARGIN_S = 0.005


class Seekable(Protocol):
    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class DueGate:
    def __init__(self, consumer: Seekable, pauses: Pauses) -> None:
        self._consumer = consumer
        self._pauses = pauses
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}

    def hold(self, tp: TopicPartition, offset: int, due_at: float, now: float) -> None:
        """The record at ``offset`` is due at ``due_at``: refetch it then, and nothing of ``tp`` before."""
        self._consumer.seek(tp, offset)
        self._pauses.add(tp, DUE)
        old = self._timers.pop(tp, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[tp] = loop.call_later(max(0.0, due_at - now) + MARGIN_S, self._release, tp)

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
