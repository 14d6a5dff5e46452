"""The delivery worker's batched writer, on the real broker, and the ledger's bitmap of done offsets.

Batched records must land where one ``send`` per record put them (the partition of their key in their
topic: a webhook's attempts stay in one partition, a conversation's retries in one), with their
headers, each window acknowledged before its attempts finish; a record too large for the producer is
refused at once, alone.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from services.contract.topics import Topics
from services.delivery.ledger import PartitionLedger, encode_done
from services.delivery.writer import MAX_RECORD_BYTES, BatchedWriter
from services.shared import kafka
from services.shared.settings import Settings
from tests.delivery_support import read_topic


async def test_batched_records_land_where_send_would_put_them(settings: Settings, topics: Topics) -> None:
    keys = [str(webhook).encode() for webhook in range(1, 41)]
    tier = topics.retry(1)
    async with kafka.started(kafka.producer(settings)) as producer:
        writer = BatchedWriter(timeout_s=10)
        writer.bind(producer)
        windows = [writer.append(topics.attempts, key, b'{"n": %d}' % n) for n, key in enumerate(keys)]
        windows += [writer.append(tier, b"%s:7" % key, b'{"retry": %d}' % n, [("attempt", b"2"), ("empty", None)])
                    for n, key in enumerate(keys)]
        assert len({id(w) for w in windows}) == 1  # appended together: one window
        async with asyncio.timeout(15):
            await windows[0]
        later = writer.append(topics.attempts, keys[0], b'{"n": "later"}')
        assert later is not windows[0]
        async with asyncio.timeout(15):
            await later
        sent = [await producer.send_and_wait(topics.attempts, b'{"by": "send"}', key=key) for key in keys]
        sent_tier = [await producer.send_and_wait(tier, b'{"by": "send"}', key=b"%s:7" % key) for key in keys]
        with pytest.raises(MessageSizeTooLargeError):
            writer.append(topics.attempts, keys[0], b"x" * (MAX_RECORD_BYTES + 1))
        with pytest.raises(MessageSizeTooLargeError):  # the headers count
            writer.append(tier, keys[0], b"x" * (MAX_RECORD_BYTES - 100), [("h", b"y" * 200)])
        writer.close()
    records = await read_topic(settings, topics.attempts, 2 * len(keys) + 1)
    partition_of_send = {key: meta.partition for key, meta in zip(keys, sent, strict=True)}
    batched = [r for r in records if b"by" not in r.value]
    assert len(batched) == len(keys) + 1
    assert {r.key: r.partition for r in batched} == partition_of_send
    assert len({partition_of_send[key] for key in keys}) > 1  # the keys did spread over partitions
    retried = [r for r in await read_topic(settings, tier, 2 * len(keys)) if b"by" not in r.value]
    assert {r.key: r.partition for r in retried} == {b"%s:7" % key: meta.partition
                                                    for key, meta in zip(keys, sent_tier, strict=True)}
    assert [r.value for r in sorted(retried, key=lambda r: int(r.key.split(b":")[0]))] == [
        b'{"retry": %d}' % n for n in range(len(keys))]
    assert all(list(r.headers) == [("attempt", b"2"), ("empty", None)] for r in retried)


def test_ledger_metadata_from_its_bitmap_equals_the_done_offsets() -> None:
    rng = random.Random(7)
    for _ in range(50):
        ledger = PartitionLedger()
        first = rng.randint(0, 10**6)
        offsets = sorted(rng.sample(range(first, first + 5000), rng.randint(1, 1500)))
        for offset in offsets:
            ledger.add(offset)
        order = offsets[:]
        for start in range(0, len(order), 40):  # out of order within a window, as deliveries finish
            window = order[start:start + 40]
            rng.shuffle(window)
            order[start:start + 40] = window
        done: set[int] = set()
        for offset in order:
            ledger.done(offset)
            done.add(offset)
            if rng.random() < 0.05:
                point = ledger.commit()
                assert point is not None
                base, metadata = point
                assert metadata == encode_done(base, {o for o in done if o >= base})
