"""Publish one Akece event with confluent-kafka (librdkafka; CloudEvents 1.0, Kafka binding, binary mode).

Usage: python with_confluent_kafka.py [EVENT_FILE]      (pip install confluent-kafka)
Env: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), AKECE_EVENTS_TOPIC (default akece.events).
"""

import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer


def main(path: Path) -> None:
    body = path.read_bytes()  # sent byte for byte: receivers get exactly this
    event_id = str(uuid.uuid4())
    account_id = "1"  # must equal the body's account.id, or the event is quarantined
    conversation = "1234"  # the body's conversation.display_id
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    headers: list[tuple[str, str | bytes | None]] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"akece://examples/confluent-kafka"),
        ("ce_type", b"message_created"),
        ("ce_time", now.encode()),
        ("ce_accountid", account_id.encode()),
        ("content-type", b"application/json"),
    ]
    producer = Producer({"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                         "acks": "all", "enable.idempotence": True,
                         # the partition Java's client picks for a key (librdkafka's default, CRC32, differs)
                         "partitioner": "murmur2_random"})
    outcome: dict[str, Message | KafkaError | None] = {}

    def delivered(err: KafkaError | None, msg: Message) -> None:
        outcome["error"], outcome["message"] = err, msg

    producer.produce(os.environ.get("AKECE_EVENTS_TOPIC", "akece.events"), value=body,
                     key=f"{account_id}:{conversation}".encode(), headers=headers, on_delivery=delivered)
    if producer.flush(30) or outcome.get("error"):
        sys.exit(f"publish failed: {outcome.get('error') or 'no acknowledgement within 30 s'}")
    msg = outcome["message"]
    assert isinstance(msg, Message)
    print(f"published {event_id} partition={msg.partition()} offset={msg.offset()}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "message_created.json"))
