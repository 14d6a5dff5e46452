"""Per-partition offset ledger and per-partition pause reasons.

Records of one partition finish out of order (many are in flight at once); Kafka only stores one
committed offset per partition. The ledger keeps each partition's unfinished offsets in offset order
and commits the lowest contiguous completed one: after a crash everything above it is redone
(at-least-once), nothing is skipped. To redo less, the commit's metadata lists the offsets above it
that are already complete (a compressed bitmap, at most ``METADATA_CHARS``); the next owner of the
partition skips those (Confluent's Parallel Consumer does the same).

A partition is paused while any reason holds (``due``: the head of a retry tier is not due yet;
``backpressure``: the worker holds as many records as it may) and resumed when none is left.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from aiokafka import TopicPartition

DUE = "due"
BACKPRESSURE = "backpressure"
LOADING = "loading"  # just assigned: reading which records above the commit are already complete
METADATA_PREFIX = "akece1:"
METADATA_CHARS = 3000  # brokers refuse commit metadata over offset.metadata.max.bytes (4096 by default)


def encode_done(base: int, done: Iterable[int]) -> str:
    """Offsets above ``base`` already complete, as commit metadata (a zlib'd bitmap, base64)."""
    bits = 0
    for offset in done:
        if offset >= base:
            bits |= 1 << (offset - base)
    return encode_bits(bits)


def encode_bits(bits: int) -> str:
    """``encode_done`` of the offsets whose bits are set (bit i: offset base + i)."""
    span = bits.bit_length()
    while span > 0:
        bitmap = (bits & ((1 << span) - 1)).to_bytes((span + 7) // 8, "little")
        text = METADATA_PREFIX + base64.b64encode(zlib.compress(bitmap, 6)).decode()
        if len(text) <= METADATA_CHARS:
            return text
        span //= 2  # too many to list: list the lower half (the rest is redone, as without metadata)
    return ""


def decode_done(base: int, metadata: str | None) -> set[int]:
    """The offsets ``encode_done`` listed; empty for foreign or damaged metadata."""
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return set()
    try:
        bitmap = zlib.decompress(base64.b64decode(metadata[len(METADATA_PREFIX):], validate=True))
    except (binascii.Error, zlib.error, ValueError):
        return set()
    return {base + (index << 3) + bit for index, byte in enumerate(bitmap) if byte
            for bit in range(8) if byte >> bit & 1}


class PartitionLedger:
    """Offsets of one partition taken in (in offset order) and which of them are done."""

    __slots__ = ("_bits", "_changed", "_done", "_due", "_next", "_origin", "_pending", "committed")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()  # done, above the lowest unfinished
        self._due: dict[int, float] = {}
        self._next: int | None = None  # offset to commit next
        self._changed = False
        # Every offset done, as bits (bit i: offset origin + i), so that a commit's metadata costs a shift,
        # not a walk over thousands of offsets: the commit point moves the origin up.
        self._origin = -1
        self._bits = 0
        self.committed: int | None = None  # offset last handed out for commit

    def add(self, offset: int, due_at: float | None = None) -> None:
        if self._origin < 0:
            self._origin = offset  # offsets are added in order: none done will be below it
        self._pending.append(offset)
        if due_at:
            self._due[offset] = due_at

    def done(self, offset: int) -> None:
        self._done.add(offset)
        if offset < self._origin:  # never, as offsets come in order; kept exact if one ever did not
            self._bits <<= self._origin - offset
            self._origin = offset
        self._bits |= 1 << (offset - self._origin)
        self._changed = True
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            head = pending.popleft()
            done.discard(head)
            self._due.pop(head, None)
            self._next = head + 1

    def commit(self) -> tuple[int, str] | None:
        """(offset, metadata) to commit if anything finished since the last call, else ``None``."""
        if not self._changed:
            return None
        base = self._next if self._next is not None else (self._pending[0] if self._pending else None)
        if base is None:
            return None
        self._changed = False
        self.committed = base
        if base > self._origin:
            self._bits >>= base - self._origin
            self._origin = base
        return base, encode_bits(self._bits)

    def uncommit(self) -> None:
        self._changed = True

    def head_due_at(self) -> float | None:
        """Due time of the lowest unfinished record (retry tiers), if any."""
        return self._due.get(self._pending[0]) if self._pending else None

    def __len__(self) -> int:
        return len(self._pending) - len(self._done)


class Ledger:
    """Every assigned partition's ledger. A job keeps the ``PartitionLedger`` it was added to, so a
    job finishing after its partition was revoked (and maybe assigned again) touches nothing."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionLedger] = {}

    def add(self, tp: TopicPartition, offset: int, due_at: float | None = None) -> PartitionLedger:
        ledger = self._partitions.get(tp)
        if ledger is None:
            ledger = self._partitions[tp] = PartitionLedger()
        ledger.add(offset, due_at)
        return ledger

    def commits(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, tuple[int, str]]:
        """What to commit: (offset, metadata) of each partition that changed since the last call."""
        selected = self._partitions if tps is None else {tp: self._partitions[tp] for tp in tps
                                                           if tp in self._partitions}
        points = {tp: ledger.commit() for tp, ledger in selected.items()}
        return {tp: point for tp, point in points.items() if point is not None}

    def uncommit(self, points: Iterable[TopicPartition]) -> None:
        """A commit failed: hand these partitions out again next time."""
        for tp in points:
            ledger = self._partitions.get(tp)
            if ledger is not None:
                ledger.uncommit()

    def committed(self, tp: TopicPartition) -> int | None:
        ledger = self._partitions.get(tp)
        return ledger.committed if ledger is not None else None

    def head_due_at(self, tp: TopicPartition) -> float | None:
        ledger = self._partitions.get(tp)
        return ledger.head_due_at() if ledger is not None else None

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._partitions.pop(tp, None)


class Pausable(Protocol):
    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


class Pauses:
    """Pause reasons per partition; the consumer is paused/resumed when the set becomes (non-)empty."""

    def __init__(self, consumer: Pausable) -> None:
        self._consumer = consumer
        self._reasons: dict[TopicPartition, set[str]] = {}

    def add(self, tp: TopicPartition, reason: str) -> None:
        reasons = self._reasons.setdefault(tp, set())
        if not reasons:
            self._consumer.pause(tp)
        reasons.add(reason)

    def discard(self, tp: TopicPartition, reason: str) -> None:
        reasons = self._reasons.get(tp)
        if reasons is None or reason not in reasons:
            return
        reasons.discard(reason)
        if not reasons:
            del self._reasons[tp]
            self._consumer.resume(tp)

    def partitions(self, reason: str) -> list[TopicPartition]:
        return [tp for tp, reasons in self._reasons.items() if reason in reasons]

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions no longer assigned: drop their reasons without touching the consumer."""
        for tp in tps:
            self._reasons.pop(tp, None)

    def count(self, reason: str | None = None) -> int:
        if reason is None:
            return len(self._reasons)
        return sum(1 for reasons in self._reasons.values() if reason in reasons)
