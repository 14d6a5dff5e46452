"""Unit tests of the delivery worker's pure parts: offset ledger, pauses, due holds, dispatcher, circuit,
records."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import orjson
from aiokafka import TopicPartition

from services.contract import headers as h
from services.contract.deliveries import DeliveryMeta, first_attempt_headers
from services.delivery import records
from services.delivery.breaker import CLOSED, HALF_OPEN, OPEN, Circuits
from services.delivery.dispatch import Dispatcher
from services.delivery.ledger import (
    BACKPRESSURE,
    DUE,
    METADATA_CHARS,
    METADATA_PREFIX,
    Ledger,
    PartitionLedger,
    Pauses,
    decode_done,
    encode_done,
)
from services.delivery.policy import AttemptResult, Retry
from services.delivery.tiers import DueGate, gather_s

TP = TopicPartition("t", 0)


# --- ledger -----------------------------------------------------------------------------------
def test_commits_lowest_contiguous_completed_offset() -> None:
    ledger = PartitionLedger()
    for offset in (10, 11, 12, 15):
        ledger.add(offset)
    assert ledger.commit() is None
    ledger.done(11)
    ledger.done(12)
    offset, metadata = ledger.commit() or (0, "")
    assert offset == 10  # 10 still running: commit it, listing 11 and 12 as complete
    assert decode_done(offset, metadata) == {11, 12}
    assert ledger.commit() is None  # nothing finished since
    ledger.done(10)
    assert ledger.commit() == (13, "")
    ledger.done(15)
    assert ledger.commit() == (16, "")
    assert len(ledger) == 0


def test_done_offsets_metadata_round_trip_and_bound() -> None:
    done = {1000 + n for n in range(0, 20000, 3)}
    text = encode_done(1000, done)
    assert len(text) <= METADATA_CHARS
    decoded = decode_done(1000, text)
    assert decoded and decoded <= done
    assert decoded == {o for o in done if o < 1000 + len(decoded) * 3}  # a prefix when too many
    rng = random.Random(1)
    sparse = set(rng.sample(range(5000, 15000), 3000))
    assert decode_done(5000, encode_done(5000, sparse)) == sparse
    assert encode_done(7, []) == ""
    assert decode_done(7, "") == set() and decode_done(7, "other tool's metadata") == set()
    assert decode_done(7, METADATA_PREFIX + "%%%") == set()


def test_ledger_drop_and_uncommit() -> None:
    ledger = Ledger()
    partition = ledger.add(TP, 0)
    ledger.add(TP, 1, due_at=123.0)
    assert ledger.head_due_at(TP) is None
    partition.done(0)
    assert ledger.head_due_at(TP) == 123.0
    points = ledger.commits()
    assert points == {TP: (1, "")}
    ledger.uncommit(points)
    assert ledger.commits() == {TP: (1, "")}
    ledger.drop([TP])
    partition.done(1)  # a job finishing after its partition was revoked touches nothing
    assert ledger.commits() == {}
    assert ledger.add(TP, 1) is not partition


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.calls: list[str] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.resumed = asyncio.Event()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)
        self.calls.append("pause")

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)
        self.calls.append("resume")
        self.resumed.set()


def test_pause_reasons_resume_only_when_none_left() -> None:
    consumer = FakeConsumer()
    pauses = Pauses(consumer)
    pauses.add(TP, DUE)
    pauses.add(TP, BACKPRESSURE)
    assert consumer.paused == {TP}
    pauses.discard(TP, DUE)
    assert consumer.paused == {TP}
    pauses.discard(TP, BACKPRESSURE)
    assert consumer.paused == set()
    assert consumer.calls == ["pause", "resume"]
    assert pauses.count() == 0


async def test_a_held_tier_partition_resumes_a_gathering_window_after_its_heads_due_time() -> None:
    """The records falling due within the window after the head come in the same fetch: a tier fed
    steadily is not fetched again for each record."""
    assert [gather_s(delay) for delay in (1, 5, 30, 50, 300)] == [0.1, 0.1, 0.6, 1.0, 1.0]
    consumer = FakeConsumer()
    gate = DueGate(consumer, Pauses(consumer), {"tier": 5.0})
    tp = TopicPartition("tier", 0)
    loop = asyncio.get_running_loop()
    held_at, now = loop.time(), time.time()
    gate.hold(tp, 7, now + 0.05, now)
    assert consumer.paused == {tp} and consumer.seeks == [(tp, 7)] and len(gate) == 1
    await asyncio.wait_for(consumer.resumed.wait(), 5)
    assert loop.time() - held_at >= 0.05 + gather_s(5.0)  # not at the head's own due time
    assert consumer.paused == set() and len(gate) == 0


# --- dispatcher ----------------------------------------------------------------------------------
@dataclass(eq=False)
class FakeJob:
    key: str
    webhook_id: int
    n: int = 0


def make(max_concurrency: int, per_webhook: int) -> tuple[Dispatcher[FakeJob], list[FakeJob]]:
    started: list[FakeJob] = []
    return Dispatcher(max_concurrency, per_webhook, started.append), started


def test_one_at_a_time_per_key_in_order() -> None:
    dispatcher, started = make(100, 100)
    jobs = [FakeJob("a", 1, n) for n in range(3)]
    for job in jobs:
        dispatcher.submit(job)
    assert started == [jobs[0]]
    dispatcher.release(jobs[0])
    assert started == jobs[:2]
    dispatcher.release(jobs[1])
    dispatcher.release(jobs[2])
    assert started == jobs
    assert dispatcher.running == 0 and dispatcher.waiting(1) == 0


def test_per_webhook_bulkhead_does_not_block_others() -> None:
    dispatcher, started = make(100, 2)
    slow = [FakeJob(f"s{n}", 1) for n in range(5)]
    fast = [FakeJob(f"f{n}", 2) for n in range(5)]
    for job in slow + fast:
        dispatcher.submit(job)
    assert started == slow[:2] + fast[:2]
    dispatcher.release(fast[0])
    assert started[-1] is fast[2]
    # three slow and two fast wait
    assert (dispatcher.waiting(1), dispatcher.waiting(2), dispatcher.waiting(3)) == (3, 2, 0)


def test_waiting_counts_follow_start_drop_and_close() -> None:
    dispatcher, started = make(100, 1)
    jobs = [FakeJob(f"k{n}", 7, n) for n in range(4)] + [FakeJob("k0", 7, 4)]  # the last waits behind k0's head
    for job in jobs:
        dispatcher.submit(job)
    assert started == jobs[:1] and dispatcher.waiting(7) == 4
    dispatcher.release(jobs[0])
    assert dispatcher.waiting(7) == 3
    assert dispatcher.drop(lambda job: job.n == 4) == [jobs[4]]
    assert dispatcher.waiting(7) == 2
    dispatcher.close()
    assert dispatcher.waiting(7) == 0


def test_a_keys_next_record_goes_before_newer_heads_of_its_webhook() -> None:
    """Taken in arrival order, each record of a busy key waited through its webhook's whole queue again,
    and the key's oldest record held its partition's commit for as long as the queue stayed long."""
    dispatcher, started = make(100, 1)
    first, second = FakeJob("chain", 1, 0), FakeJob("chain", 1, 1)
    newer = [FakeJob(f"k{n}", 1, n + 2) for n in range(5)]
    for job in (first, second, *newer):
        dispatcher.submit(job)
    assert started == [first]
    dispatcher.release(first)
    assert started == [first, second]  # submitted before the five others: it goes first
    dispatcher.release(second)
    assert started == [first, second, newer[0]]


def test_global_cap_round_robin() -> None:
    dispatcher, started = make(2, 10)
    a = [FakeJob(f"a{n}", 1) for n in range(4)]
    b = [FakeJob(f"b{n}", 2) for n in range(3)]
    for job in a + b:
        dispatcher.submit(job)
    assert started == [a[0], a[1]]
    while dispatcher.running:
        dispatcher.release(started[len(started) - dispatcher.running])
    assert started == [a[0], a[1], a[2], b[0], a[3], b[1], b[2]]  # webhooks take turns


def test_overloaded_once_the_backlog_stayed_full_for_a_while() -> None:
    now = [0.0]
    dispatcher: Dispatcher[FakeJob] = Dispatcher(100, 1, lambda job: None, backlog=3, clock=lambda: now[0])
    jobs = [FakeJob(f"k{n}", 1, n) for n in range(4)]  # one runs, three wait
    for job in jobs:
        dispatcher.submit(job)
    assert dispatcher.waiting(1) == 3 and not dispatcher.overloaded(1, 10)
    now[0] = 9.0
    assert not dispatcher.overloaded(1, 10)
    now[0] = 10.0
    assert dispatcher.overloaded(1, 10) and not dispatcher.overloaded(2, 10)
    dispatcher.release(jobs[0])  # a burst it drains: below the backlog, the clock starts again
    assert not dispatcher.overloaded(1, 0)
    dispatcher.submit(FakeJob("k9", 1, 9))
    assert dispatcher.overloaded(1, 0) and not dispatcher.overloaded(1, 1)


def _full(now: list[float], slow_s: float = 1.0) -> tuple[Dispatcher[FakeJob], list[FakeJob]]:
    """A webhook with one job running and its backlog (3) full since t=0."""
    dispatcher: Dispatcher[FakeJob] = Dispatcher(100, 1, lambda job: None, backlog=3, slow_s=slow_s,
                                                 clock=lambda: now[0])
    jobs = [FakeJob(f"k{n}", 1, n) for n in range(4)]
    for job in jobs:
        dispatcher.submit(job)
    return dispatcher, jobs


def test_a_busy_healthy_webhook_is_never_overloaded() -> None:
    now = [0.0]
    dispatcher, jobs = _full(now)
    for n in range(100):  # answers at once, every time; more keeps arriving, the backlog stays full
        now[0] = n * 0.1
        dispatcher.observe(1, True, 0.004)
        dispatcher.release(jobs[0])
        jobs[0] = FakeJob(f"n{n}", 1, 100 + n)
        dispatcher.submit(jobs[0])
    assert dispatcher.waiting(1) >= 3 and now[0] >= 9.9
    now[0] = 30.0
    assert not dispatcher.overloaded(1, 10)


def test_a_failing_slow_or_silent_webhook_with_a_full_backlog_is_overloaded() -> None:
    for ok, latency in ((False, 0.004), (True, 2.5)):
        now = [0.0]
        dispatcher, _ = _full(now)
        for n in range(20):
            now[0] = n * 0.5
            dispatcher.observe(1, ok, latency)
        now[0] = 10.0
        assert dispatcher.overloaded(1, 10), (ok, latency)
    now = [0.0]
    dispatcher, _ = _full(now)
    now[0] = 10.0  # nothing finished since the backlog filled (a receiver holding its requests)
    assert dispatcher.overloaded(1, 10)


def test_a_success_before_the_backlog_filled_does_not_count() -> None:
    now = [0.0]
    dispatcher: Dispatcher[FakeJob] = Dispatcher(100, 1, lambda job: None, backlog=3, slow_s=1.0,
                                                 clock=lambda: now[0])
    first = FakeJob("a", 1, 0)
    dispatcher.submit(first)
    dispatcher.observe(1, True, 0.01)  # a success, while the webhook was still running this job
    now[0] = 1.0
    for n in range(3):
        dispatcher.submit(FakeJob(f"k{n}", 1, n))  # the backlog fills at t=1 and nothing succeeds after
    now[0] = 11.0
    assert dispatcher.overloaded(1, 10)


def test_drop_removes_queued_and_promotes_next_of_key() -> None:
    dispatcher, started = make(1, 10)
    running = FakeJob("x", 1, 0)
    keep_head = FakeJob("k", 1, 1)
    drop_head = FakeJob("d", 2, 2)
    behind = FakeJob("d", 2, 3)
    for job in (running, keep_head, drop_head, behind):
        dispatcher.submit(job)
    dropped = dispatcher.drop(lambda job: job.n == 2)
    assert dropped == [drop_head]
    dispatcher.release(running)
    dispatcher.release(started[-1])
    assert [job.n for job in started] == [0, 1, 3] or [job.n for job in started] == [0, 3, 1]
    assert dispatcher.close() == []


def test_close_returns_everything_queued_and_starts_nothing() -> None:
    dispatcher, started = make(1, 1)
    jobs = [FakeJob(str(n), 1) for n in range(4)]
    for job in jobs:
        dispatcher.submit(job)
    assert len(dispatcher.close()) == 3
    dispatcher.release(jobs[0])
    assert started == [jobs[0]]


# --- circuit -----------------------------------------------------------------------------------------
def test_circuit_opens_probes_and_closes() -> None:
    circuits = Circuits(threshold=3, open_s=10, disable_after_s=10**6)
    for t in range(3):
        assert circuits.allow(1, t)
        circuits.record(1, False, t)
    assert circuits.state(1) == OPEN and circuits.open_count == 1
    assert not circuits.allow(1, 5)
    assert circuits.allow(1, 13)  # the half-open probe
    assert circuits.state(1) == HALF_OPEN
    assert not circuits.allow(1, 13)  # only one probe at a time
    circuits.record(1, False, 13)
    assert circuits.state(1) == OPEN and not circuits.allow(1, 20)
    assert circuits.allow(1, 24)
    circuits.record(1, True, 24)
    assert circuits.state(1) == CLOSED and circuits.open_count == 0
    assert circuits.allow(2, 0)


def test_a_probe_that_never_went_out_lets_the_next_one_probe() -> None:
    circuits = Circuits(threshold=1, open_s=10, disable_after_s=10**6)
    circuits.record(1, False, 0)
    assert circuits.allow(1, 11) and not circuits.allow(1, 11)
    circuits.abandon(1)  # blocked or cancelled before a request went out
    assert circuits.state(1) == HALF_OPEN and circuits.allow(1, 12)
    circuits.abandon(2)  # unknown webhooks and closed circuits: nothing to do
    assert circuits.state(2) == CLOSED


def test_auto_disable_once_after_period_without_success() -> None:
    circuits = Circuits(threshold=1000, open_s=10, disable_after_s=100)
    assert not circuits.record(1, False, 0)
    assert not circuits.record(1, False, 99)
    assert circuits.record(1, False, 100)
    assert not circuits.record(1, False, 200)  # said once
    circuits.record(1, True, 201)
    assert circuits.failing_since(1) is None


# --- records -----------------------------------------------------------------------------------------
def meta_headers(attempt: int = 1) -> h.Headers:
    values = first_attempt_headers(event_id="e1", event_type="message_created", account_id="7", webhook_id=42,
                                   event_time="2026-01-01T00:00:00.000Z", routed_time="2026-01-01T00:00:00.010Z")
    return h.replace(values, {h.ATTEMPT: attempt})


def test_retry_and_dlq_headers_tell_the_story() -> None:
    headers = meta_headers()
    meta = DeliveryMeta.from_headers(h.to_dict(headers))
    result = AttemptResult(status=500, body=b"x" * 5000, duration_s=0.1)
    retried = h.to_dict(records.retry_headers(headers, meta, result, Retry(5, 5, 1005.0), 1000.0))
    assert retried[h.ATTEMPT] == "2"
    assert retried[h.DUE_AT] == "1005.0"
    assert retried[h.FIRST_ATTEMPT_AT] == "1000.0"
    assert retried[h.LAST_STATUS] == "500"
    assert retried[h.LAST_ERROR_CLASS] == "http_status"
    second = DeliveryMeta.from_headers(retried)
    failed = AttemptResult(error_class="timeout", error_message="timed out", duration_s=3)
    dead = h.to_dict(records.dlq_headers(records.retry_headers(headers, meta, result, Retry(5, 5, 1005.0), 1000),
                                         second, failed, "exhausted", 1006.0, 1009.0))
    assert dead[h.DLQ_REASON] == "exhausted"
    assert dead[h.ATTEMPTS] == "2"
    assert dead[h.FIRST_ATTEMPT_AT] == "1000.0"
    assert dead[h.LAST_ATTEMPT_AT] == "1006.0"
    assert h.LAST_STATUS not in dead  # the last attempt had no response
    assert dead[h.LAST_ERROR_CLASS] == "timeout"
    assert h.DUE_AT not in dead
    assert dead[h.DELIVERY_ID] == meta.delivery_id


def test_attempt_record() -> None:
    meta = DeliveryMeta.from_headers(h.to_dict(meta_headers()))
    result = AttemptResult(status=503, body=b"busy", duration_s=0.25)
    value = orjson.loads(records.attempt_record(meta, result, outcome="retry", next_delay_s=5.0, dlq_reason=None,
                                                started_at=0.0, response_limit=65536))
    assert value["delivery_id"] == meta.delivery_id
    assert value["webhook_id"] == 42 and value["account_id"] == "7" and value["attempt"] == 1
    assert value["status"] == 503 and value["error_class"] == "http_status"
    assert value["duration_ms"] == 250.0 and value["next_delay_ms"] == 5000
    assert value["outcome"] == "retry" and value["response_excerpt"] == "busy"
    assert value["time"] == "1970-01-01T00:00:00.000Z"


def test_random_dispatch_invariants() -> None:
    rng = random.Random(5)
    running: list[FakeJob] = []
    dispatcher: Dispatcher[FakeJob] = Dispatcher(8, 3, running.append)
    active: list[FakeJob] = []
    order: dict[str, list[int]] = {}
    for n in range(2000):
        job = FakeJob(f"k{rng.randrange(30)}", rng.randrange(6), n)
        order.setdefault(job.key, []).append(n)
        dispatcher.submit(job)
        while running:
            active.append(running.pop())
        assert len(active) <= 8
        assert len({j.key for j in active}) == len(active)
        for webhook in range(6):
            assert sum(1 for j in active if j.webhook_id == webhook) <= 3
        if active and rng.random() < 0.7:
            done = active.pop(rng.randrange(len(active)))
            assert order[done.key].pop(0) == done.n
            dispatcher.release(done)
            while running:
                active.append(running.pop())
