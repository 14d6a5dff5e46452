"""What the delivery worker keeps per record it holds (up to ``AKECE_DELIVERY_MAX_IN_FLIGHT``, 10,000).

Measured with ``tracemalloc`` on fixed inputs (allocations, not timings, so the numbers do not move
between runs): a record taken in costs a few hundred bytes beside the bytes Kafka gave (its value,
key and header values, which the job keeps as they are); an attempt record costs its own size while
the attempt log holds it; an attempt waiting for the broker's acknowledgement keeps nothing of its record.
No Kafka here: the intake, the attempt log and the attempt run with stand-ins for the clients.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time
import tracemalloc
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.contract import headers as h
from services.contract.attempts import AttemptRecord
from services.contract.deliveries import DeliveryMeta
from services.contract.topics import Topics
from services.delivery.attempt import Attempts
from services.delivery.commits import Commits
from services.delivery.dispatch import Dispatcher
from services.delivery.intake import Intake, Job, Malformed
from services.delivery.policy import AttemptResult
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.webhooks import Webhook
from tests.delivery_support import delivery, make_webhook

RECORDS = 2000
BODY = b'{"content": "' + b"x" * 2400 + b'"}'
# What intake adds per record beside Kafka's bytes: the job, its DeliveryMeta and the header texts it
# decoded, a tuple of the header values, the offset ledger's entry (750 bytes; a list of
# (name, value) pairs instead of the tuple was 550 more).
INTAKE_BYTES_PER_RECORD = 900


def _settings() -> Settings:
    return Settings(topic_prefix="memory", kafka={"bootstrap_servers": "127.0.0.1:9"},  # type: ignore[arg-type]
                    allowed_private_cidrs=["127.0.0.0/8"])


class _Consumer:
    """What the intake asks of a consumer when nothing is full or due: nothing."""

    def seek(self, tp: TopicPartition, offset: int) -> None:
        raise AssertionError("nothing is held back here")

    def pause(self, *tps: TopicPartition) -> None:
        raise AssertionError("nothing is paused here")

    def resume(self, *tps: TopicPartition) -> None:
        raise AssertionError("nothing is paused here")


def _fetched(webhook: Webhook, tp: TopicPartition, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Delivery records as aiokafka hands them out: fresh bytes and a fresh string per header name."""
    out = []
    for offset in range(count):
        d = delivery(webhook, conversation=offset % 7, body=BODY, seq=offset)
        headers = tuple(("".join(name), bytes(bytearray(value))) for name, value in d.headers)
        out.append(ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, bytes(bytearray(d.key)), bytes(bytearray(BODY)),
                                  None, len(d.key), len(BODY), headers))
    return out


def test_a_held_record_costs_a_few_hundred_bytes_beside_its_own() -> None:
    settings = _settings()
    intake = Intake(settings.delivery, Topics.from_settings(settings), 0.0, Commits("memory.delivery", 60.0))
    intake.bind(_Consumer())  # type: ignore[arg-type]
    tp = TopicPartition(Topics.from_settings(settings).deliveries, 0)
    records = _fetched(make_webhook("http://127.0.0.1:9/"), tp, RECORDS)
    jobs: list[Job] = []
    rejected: list[Malformed] = []
    intake.accept(tp, records[:1], time.time(), jobs.append, rejected.append)  # the first of its kind: shared names
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        intake.accept(tp, records[1:], time.time(), jobs.append, rejected.append)
        gc.collect()
        added = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert not rejected and len(jobs) == RECORDS
    per_record = added / (RECORDS - 1)
    assert per_record < INTAKE_BYTES_PER_RECORD, f"{per_record:.0f} bytes per held record"
    for job, record in zip(jobs, records, strict=True):  # retries and dead letters start from these
        assert job.headers == list(record.headers)
        assert job.value is record.value and job.record_key is record.key
    assert len({id(job.header_names) for job in jobs}) == 1


def test_an_attempt_record_costs_its_own_size() -> None:
    """orjson's result keeps its whole write buffer (8 KiB); the attempt log holds thousands at a time."""
    records = [AttemptRecord(delivery_id=f"{n:036d}", webhook_id=n, attempt=1, outcome="success",
                             time="2026-12-06T14:25:48.123Z", event_type="message_created", status=200,
                             duration_ms=31.3) for n in range(500)]
    tracemalloc.start()
    try:
        values = [record.encode() for record in records]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    own = sum(sys.getsizeof(value) for value in values) + sys.getsizeof(values)
    assert held < own * 1.25, f"{held / len(values):.0f} bytes held per {len(values[0])}-byte record"


class _Table:
    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook

    def get(self, webhook_id: int) -> Webhook | None:
        return self.webhook if webhook_id == self.webhook.id else None


class _Sender:
    async def post(self, url: str, body: bytes, headers: Any, **timeouts: Any) -> AttemptResult:
        return AttemptResult(status=200, body=b"{}", duration_s=0.001)


class _Batch:
    def append(self, **record: Any) -> object:
        return record


class _Producer:
    """Takes the writer's batches and acknowledges them when the test says so."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.acks: list[asyncio.Future[None]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        self.sent.set()
        return ack


async def test_an_attempt_waiting_for_its_acknowledgement_keeps_nothing_of_its_record() -> None:
    """A fast receiver finishes thousands of attempts per second; until the broker acknowledges their
    attempt records, the attempts' records (body, headers, response) would otherwise stay held."""
    settings = _settings()
    webhook = make_webhook("http://127.0.0.1:9/hook")
    finished: list[tuple[Any, int, int]] = []
    producer = _Producer()
    tasks: list[asyncio.Task[None]] = []
    attempts: Attempts

    def start(job: Job) -> None:
        tasks.append(asyncio.get_running_loop().create_task(attempts.deliver(job)))

    dispatcher: Dispatcher[Job] = Dispatcher(10, 10, start)
    attempts = Attempts(settings, _Table(webhook), None, Metrics(CollectorRegistry()), dispatcher,  # type: ignore[arg-type]
                        lambda ledger, offset, size: finished.append((ledger, offset, size)), random.Random(1),
                        max_record_bytes=1024 * 1024)
    attempts.bind(producer, _Sender(), None)  # type: ignore[arg-type]
    d = delivery(webhook, body=BODY)
    tp = TopicPartition(Topics.from_settings(settings).deliveries, 0)
    commits = Commits("memory.delivery", 60.0)
    ledger = commits.add(tp, 41)
    names, values = zip(*d.headers, strict=True)
    job = Job(tp, 41, ledger, d.key, d.key, BODY, names, values, webhook.id,
              DeliveryMeta.from_headers(h.to_dict(d.headers)), time.time(), len(BODY))
    dispatcher.submit(job)
    async with asyncio.timeout(10):
        await producer.sent.wait()
    gc.collect()
    assert not finished and not tasks[0].done()  # still waiting for the acknowledgement
    assert sys.getrefcount(job) == 2, gc.get_referrers(job)  # this test's name for it, and the call's argument
    producer.acks[0].set_result(None)
    async with asyncio.timeout(10):
        await tasks[0]
    assert finished == [(ledger, 41, len(BODY))]
    attempts.close()
