"""Which record runs next: one at a time per key, a bulkhead per webhook, a global cap.

- Per key (``<webhook>:<conversation>``): a queue; only its head may run, the next one starts when
  the head is released, so one conversation's deliveries go out in offset order.
- Per webhook: at most ``per_webhook`` running; heads beyond that wait in the webhook's own queue,
  oldest first (by when they were submitted). A key's next record has waited since it was submitted,
  so it goes before the newer heads: taken in arrival order instead, every record of a busy key
  (a conversation, or the records without one: ``<webhook>:-``) would wait through the whole queue
  of its webhook again, the key would fall behind by one queue wait per record, and its oldest record
  would hold its partition's commit while the queues stay long (a backlog after an outage).
- Per webhook, ``waiting(webhook)`` counts its jobs not yet started; ``overloaded(webhook, for_s)``
  says whether that count has stayed at or above ``backlog`` for ``for_s`` seconds AND the webhook
  is unhealthy: no success since its backlog filled, most recent attempts failing, or answering in
  ``slow_s`` or more on average. Only then does the worker stop holding more of it. A busy, healthy
  webhook (a burst or a backfill to a receiver that answers at once) is never shed: it drains at
  its bulkhead's pace. ``observe`` feeds each finished attempt's outcome and latency.
- Globally: at most ``max_concurrency`` running. Webhooks with waiting heads and free slots take
  turns (round robin), so a slow webhook holds only its own slots and never the dispatcher.

Nothing here awaits: ``submit`` and ``release`` call ``start(job)`` synchronously for each job that
may run now.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar


class Dispatchable(Protocol):
    @property
    def key(self) -> Hashable: ...

    @property
    def webhook_id(self) -> int: ...


J = TypeVar("J", bound=Dispatchable)


# Weight of the newest attempt in a webhook's moving averages (about the last ten attempts count).
ALPHA = 0.2


class Health:
    """A webhook's recent attempts: moving averages of latency and failure, the last success."""

    __slots__ = ("failing", "latency_s", "succeeded_at")

    def __init__(self) -> None:
        self.latency_s = 0.0
        self.failing = 0.0  # moving average of 1 (failed) / 0 (succeeded)
        self.succeeded_at = float("-inf")

    def observe(self, ok: bool, duration_s: float, now: float) -> None:
        self.latency_s += ALPHA * (duration_s - self.latency_s)
        self.failing += ALPHA * ((0.0 if ok else 1.0) - self.failing)
        if ok:
            self.succeeded_at = now

    def healthy_since(self, since: float, slow_s: float) -> bool:
        """Succeeded since ``since``, mostly succeeding, and answering faster than ``slow_s``."""
        return self.succeeded_at >= since and self.failing < 0.5 and self.latency_s < slow_s


class Dispatcher(Generic[J]):
    def __init__(self, max_concurrency: int, per_webhook: int, start: Callable[[J], None], *,
                 backlog: int = 2**62, slow_s: float = float("inf"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_concurrency
        self._per_webhook = per_webhook
        self._start = start
        self._backlog = backlog
        self._slow_s = slow_s
        self._clock = clock
        self._full_since: dict[int, float] = {}  # webhook -> since when its waiting jobs >= backlog
        self._health: dict[int, Health] = {}  # webhook -> its recent attempts, while it has jobs here
        self._keys: dict[Hashable, deque[tuple[int, J]] | None] = {}  # active key -> (seq, job) behind its head
        self._ready: dict[int, list[tuple[int, J]]] = {}  # webhook -> heap of (seq, key head) waiting for a slot
        self._seq = 0  # submission order
        self._running: dict[int, int] = {}  # webhook -> running jobs
        self._turns: deque[int] = deque()  # webhooks with ready heads and a free slot
        self._in_turns: set[int] = set()
        self._waiting: dict[int, int] = {}  # webhook -> its jobs submitted and not yet started
        self.running = 0
        self.closed = False

    def waiting(self, webhook_id: int) -> int:
        """How many of this webhook's jobs wait (submitted, not started)."""
        return self._waiting.get(webhook_id, 0)

    def overloaded(self, webhook_id: int, for_s: float) -> bool:
        """Its waiting jobs have stayed at or above ``backlog`` for ``for_s`` seconds and it is not healthy
        (no success since then, mostly failing, or slow): it is not keeping up, not merely busy."""
        since = self._full_since.get(webhook_id)
        if since is None or self._clock() - since < for_s:
            return False
        health = self._health.get(webhook_id)
        return health is None or not health.healthy_since(since, self._slow_s)

    def observe(self, webhook_id: int, ok: bool, duration_s: float) -> None:
        """A sent attempt of this webhook finished (before its ``release``)."""
        health = self._health.get(webhook_id)
        if health is None:
            health = self._health[webhook_id] = Health()
        health.observe(ok, duration_s, self._clock())

    def submit(self, job: J) -> None:
        self._seq += 1
        entry = (self._seq, job)
        count = self._waiting[job.webhook_id] = self._waiting.get(job.webhook_id, 0) + 1
        if count == self._backlog:
            self._full_since[job.webhook_id] = self._clock()
        if job.key in self._keys:  # active: wait behind it (a deque only once someone waits)
            waiting = self._keys[job.key]
            if waiting is None:
                waiting = self._keys[job.key] = deque()
            waiting.append(entry)
            return
        self._keys[job.key] = None
        self._make_ready(entry)
        self._pump()

    def release(self, job: J) -> None:
        """``job`` finished its attempt: free its slots and let its key's next record go."""
        self.running -= 1
        webhook = job.webhook_id
        left = self._running[webhook] - 1
        if left:
            self._running[webhook] = left
        else:
            del self._running[webhook]
            if webhook not in self._waiting:  # nothing of it here any more: forget its history
                self._health.pop(webhook, None)
        self._offer_turn(webhook)
        waiting = self._keys.get(job.key)
        if waiting:
            following = waiting.popleft()
            if not waiting:
                self._keys[job.key] = None
            self._make_ready(following)
        else:
            del self._keys[job.key]
        self._pump()

    def drop(self, predicate: Callable[[J], bool]) -> list[J]:
        """Remove queued (not started) jobs matching ``predicate``; returns them."""
        dropped: list[J] = []
        freed: set[Hashable] = set()  # keys whose head was waiting for a slot and is dropped
        for webhook in list(self._ready):
            kept: list[tuple[int, J]] = []
            for entry in self._ready.pop(webhook):
                if predicate(entry[1]):
                    dropped.append(entry[1])
                    freed.add(entry[1].key)
                else:
                    kept.append(entry)
            if kept:
                heapq.heapify(kept)
                self._ready[webhook] = kept
        heads: list[tuple[int, J]] = []
        for key in list(self._keys):
            queue = self._keys[key] or ()
            waiting = deque(e for e in queue if not predicate(e[1]))
            dropped.extend(e[1] for e in queue if predicate(e[1]))
            if key in freed:
                if not waiting:
                    del self._keys[key]
                    continue
                heads.append(waiting.popleft())
            self._keys[key] = waiting or None
        self._turns = deque(w for w in self._turns if w in self._ready)
        self._in_turns = set(self._turns)
        for job in dropped:
            self._unwait(job.webhook_id)
        for entry in heads:
            self._make_ready(entry)
        self._pump()
        return dropped

    def close(self) -> list[J]:
        """Start nothing more; returns every queued job."""
        self.closed = True
        return self.drop(lambda _: True)

    def _make_ready(self, entry: tuple[int, J]) -> None:
        webhook = entry[1].webhook_id
        queue = self._ready.get(webhook)
        if queue is None:
            queue = self._ready[webhook] = []
        heapq.heappush(queue, entry)
        self._offer_turn(webhook)

    def _offer_turn(self, webhook: int) -> None:
        if (webhook in self._ready and webhook not in self._in_turns
                and self._running.get(webhook, 0) < self._per_webhook):
            self._turns.append(webhook)
            self._in_turns.add(webhook)

    def _pump(self) -> None:
        while not self.closed and self.running < self._max and self._turns:
            webhook = self._turns.popleft()
            self._in_turns.discard(webhook)
            queue = self._ready[webhook]
            job = heapq.heappop(queue)[1]
            if not queue:
                del self._ready[webhook]
            self._running[webhook] = self._running.get(webhook, 0) + 1
            self.running += 1
            self._unwait(webhook)
            self._offer_turn(webhook)
            self._start(job)

    def _unwait(self, webhook: int) -> None:
        left = self._waiting[webhook] - 1
        if left == self._backlog - 1:
            del self._full_since[webhook]
        if left:
            self._waiting[webhook] = left
        else:
            del self._waiting[webhook]
