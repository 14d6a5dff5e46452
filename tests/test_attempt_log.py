"""The attempt log's batched writer, on the real broker, and the ledger's bitmap of done offsets.

Batched attempt records must land where one ``send`` per record put them (the partition of their
webhook's key, so a webhook's attempts stay in one partition), each window acknowledged before its
attempts finish; a record too large for the producer is refused at once, alone.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from services.contract.topics import Topics
from services.delivery.attempt_log import MAX_RECORD_BYTES, AttemptLog
from services.delivery.ledger import PartitionLedger, encode_done
from services.shared import kafka
from services.shared.settings import Settings
from tests.delivery_support import read_topic


async def test_batched_records_land_where_send_would_put_them(settings: Settings, topics: Topics) -> None:
    keys = [str(webhook).encode() for webhook in range(1, 41)]
    async with kafka.started(kafka.producer(settings)) as producer:
        log = AttemptLog(topics.attempts, timeout_s=10)
        log.bind(producer)
        windows = [log.append(key, b'{"n": %d}' % n) for n, key in enumerate(keys)]
        assert len({id(w) for w in windows}) == 1  # appended together: one window
        async with asyncio.timeout(15):
            await windows[0]
        later = log.append(keys[0], b'{"n": "later"}')
        assert later is not windows[0]
        async with asyncio.timeout(15):
            await later
        sent = [await producer.send_and_wait(topics.attempts, b'{"by": "send"}', key=key) for key in keys]
        with pytest.raises(MessageSizeTooLargeError):
            log.append(keys[0], b"x" * (MAX_RECORD_BYTES + 1))
        log.close()
    records = await read_topic(settings, topics.attempts, 2 * len(keys) + 1)
    partition_of_send = {key: meta.partition for key, meta in zip(keys, sent, strict=True)}
    batched = [r for r in records if b"by" not in r.value]
    assert len(batched) == len(keys) + 1
    assert {r.key: r.partition for r in batched} == partition_of_send
    assert len({partition_of_send[key] for key in keys}) > 1  # the keys did spread over partitions


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
