"""Produced lz4 batches are made with LZ4's fast compressor, as Kafka's own clients make them, and read
back unchanged by the broker and the consumer."""

from __future__ import annotations

import cramjam
import orjson
from aiokafka.record.default_records import DefaultRecordBatch

from schemas.examples import example
from services.contract.topics import Topics
from services.shared import kafka
from services.shared.settings import Settings

BATCH_HEADER_BYTES = 61  # a v2 record batch's header, ahead of its (compressed) records
EVENTS = ("message_created", "conversation_updated", "contact_updated", "message_updated")


def _bodies() -> list[bytes]:
    return [orjson.dumps(example(name, account_id=n, conversation_id=n * 7)) for n in range(1, 11) for name in EVENTS]


def _frame(data: bytes, level: int) -> bytes:
    compressor = cramjam.lz4.Compressor(level=level, content_checksum=False, block_linked=False)
    compressor.compress(data)
    return bytes(compressor.finish())


async def test_a_producers_lz4_batch_is_the_fast_compressors_frame(settings: Settings) -> None:
    """aiokafka alone compresses with LZ4HC (level 9): several times the CPU for a little less size."""
    producer = kafka.producer(_lz4(settings))
    async with kafka.started(producer):
        batch = producer.create_batch()
        bodies = _bodies()
        for body in bodies:
            assert batch.append(key=b"k", value=body, timestamp=None) is not None
        batch.close()
        built = bytes(batch._builder.build())  # the record batch as it goes to the broker
    read = DefaultRecordBatch(built)
    assert read.compression_type == DefaultRecordBatch.CODEC_LZ4
    assert [record.value for record in read] == bodies
    compressed = built[BATCH_HEADER_BYTES:]
    records = bytes(cramjam.lz4.decompress(compressed))
    assert _frame(records, 0) != _frame(records, 9)  # (the two compressors differ on this data)
    assert compressed == _frame(records, 0)


def _lz4(settings: Settings) -> Settings:
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"compression": "lz4"})})


async def test_lz4_records_go_through_the_broker_unchanged(settings: Settings, topics: Topics) -> None:
    lz4 = _lz4(settings)
    topic = topics.invalid
    bodies = _bodies()
    producer = kafka.producer(lz4)
    async with kafka.started(producer):
        for body in bodies:
            await producer.send(topic, value=body, key=b"k")
        await producer.flush()
    consumer = kafka.consumer(lz4, topic, group_id=None)
    got: list[bytes] = []
    async with kafka.started(consumer):
        while len(got) < len(bodies):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "no records within 10 s"
            got += [r.value for records in batches.values() for r in records]
    assert got == bodies
