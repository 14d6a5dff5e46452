"""Publish one Akece event with plain aiokafka (CloudEvents 1.0, Kafka protocol binding, binary mode).

Usage: python with_aiokafka.py [EVENT_FILE]
Env: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), AKECE_EVENTS_TOPIC (default akece.events).
"""

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer


async def main(body: bytes) -> None:
    """``body``: the event, sent byte for byte (receivers get exactly these bytes)."""
    event_id = str(uuid.uuid4())
    account_id = "1"  # must equal the body's account.id, or the event is quarantined
    conversation = "1234"  # the body's conversation.display_id
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"akece://examples/aiokafka"),
        ("ce_type", b"message_created"),
        ("ce_time", now.encode()),
        ("ce_accountid", account_id.encode()),
        ("content-type", b"application/json"),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                                acks="all", enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(os.environ.get("AKECE_EVENTS_TOPIC", "akece.events"), value=body,
                                            key=f"{account_id}:{conversation}".encode(), headers=headers)
    finally:
        await producer.stop()
    print(f"published {event_id} partition={meta.partition} offset={meta.offset}")


if __name__ == "__main__":
    event_file = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "message_created.json"
    asyncio.run(main(event_file.read_bytes()))
