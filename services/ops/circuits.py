"""Open circuits, as the attempt log shows them: the ``status`` screen's view across every worker.

A circuit is each delivery worker's own memory, so no single process knows them all. What every
worker does write is the attempt log, and an open circuit leaves a clear trace there: its
deliveries are skipped with ``error_class = circuit_open``, after a streak of consecutive failed
attempts. Reading the tail of ``<prefix>.webhooks.attempts`` (the last ``window_s``, at most
``max_scan`` records), a webhook counts as having an open circuit when its latest attempt in the
window was skipped by one, or when its latest ``threshold`` attempts all failed with no success
after them (a circuit opens on that streak even before a skipped delivery shows it).

It is a view of the recent past, not live state: a circuit whose webhook received nothing in the
window is not shown, and one that just closed shows until its next attempt is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from services.contract.attempts import AttemptRecord, decode
from services.contract.times import iso
from services.delivery.ping import OUTCOME as TEST_OUTCOME
from services.delivery.policy import NOT_SENT, ErrorClass
from services.replay.window import Window, offset_ranges, read_ranges
from services.shared.errors import KafkaUnavailableError

DEFAULT_WINDOW_S = 900.0
DEFAULT_MAX_SCAN = 500_000


@dataclass
class Circuit:
    webhook_id: int
    account_id: str
    failures: int  # consecutive failed attempts (skips by the circuit included) at the tail of the window
    failing_since: float | None  # the first failure of that streak
    last_attempt_at: float | None
    last_error: str | None
    skipped: bool  # the latest attempt was skipped by the open circuit

    def as_dict(self) -> dict[str, Any]:
        return {"webhook_id": self.webhook_id, "account_id": self.account_id, "failures": self.failures,
                "failing_since": iso(self.failing_since), "last_attempt_at": iso(self.last_attempt_at),
                "last_error": self.last_error, "skipped_by_circuit": self.skipped}


@dataclass
class CircuitScan:
    circuits: list[Circuit]
    window_s: float
    records: int
    truncated: bool  # more than max_scan attempts in the window: only the newest were read


class _Streak:
    __slots__ = ("account_id", "failures", "last_at", "last_error", "sent_failures", "since", "skipped")

    def __init__(self) -> None:
        self.account_id = ""
        self.failures = 0
        self.sent_failures = 0
        self.since: float | None = None
        self.last_at: float | None = None
        self.last_error: str | None = None
        self.skipped = False

    def add(self, attempt: AttemptRecord) -> None:
        self.account_id = attempt.account_id or ""
        self.last_at = attempt.at
        if attempt.ok:
            self.failures = self.sent_failures = 0
            self.since, self.last_error, self.skipped = None, None, False
            return
        if attempt.error_class in NOT_SENT:  # the endpoint was not called: says nothing about its circuit
            return
        if self.failures == 0:
            self.since = attempt.at
        self.failures += 1
        self.skipped = attempt.error_class == ErrorClass.CIRCUIT_OPEN
        if not self.skipped:
            self.sent_failures += 1
            self.last_error = (f"HTTP {attempt.status}" if attempt.status
                               else attempt.error_message or attempt.error_class or "failed")


async def open_circuits(consumer: AIOKafkaConsumer, topic: str, *, now: float, threshold: int,
                        window_s: float = DEFAULT_WINDOW_S, max_scan: int = DEFAULT_MAX_SCAN) -> CircuitScan:
    """Webhooks whose circuit is open in some worker, judged from the last ``window_s`` of attempts."""
    try:
        ranges = await offset_ranges(consumer, topic, Window.parse(f"{window_s:g}s", None,
                                                                   now=datetime.fromtimestamp(now, UTC)))
    except KafkaUnavailableError:
        return CircuitScan([], window_s, 0, False)
    total = sum(end - start for start, end in ranges.values())
    truncated = total > max_scan
    if truncated:  # keep the newest records: each partition's tail, in proportion to its share
        ranges = {p: (max(start, end - max(1, (end - start) * max_scan // total)), end)
                  for p, (start, end) in ranges.items()}
    streaks: dict[int, _Streak] = {}
    records = 0
    async for batch in read_ranges(consumer, topic, ranges):
        for record in batch:  # one webhook's attempts share a partition (keyed by webhook id): in order
            records += 1
            attempt = decode(record.value)
            if attempt is not None and attempt.outcome != TEST_OUTCOME:  # a test ping: no worker's circuit saw it
                streaks.setdefault(attempt.webhook_id, _Streak()).add(attempt)
    circuits = [Circuit(webhook_id, s.account_id, s.failures, s.since, s.last_at, s.last_error, s.skipped)
                for webhook_id, s in streaks.items()
                if s.failures and (s.skipped or s.sent_failures >= threshold)]
    circuits.sort(key=lambda c: (c.failing_since or now, c.webhook_id))
    return CircuitScan(circuits, window_s, records, truncated)
