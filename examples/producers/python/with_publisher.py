"""Publish one Akece event with the project's own publisher library (validates before sending).

Usage: python with_publisher.py [EVENT_FILE]
Env: the pipeline's settings (AKECE_KAFKA_BOOTSTRAP_SERVERS, AKECE_TOPIC_PREFIX, ...).
The publisher builds the CloudEvents headers and the key from the payload itself.
"""

import asyncio
import sys
from pathlib import Path

from services.publisher.publisher import Publisher
from services.shared.settings import Settings


async def main(body: bytes) -> None:
    async with Publisher(Settings(), source="akece://examples/python-publisher") as publisher:
        published = await publisher.publish(body)  # raises ValidationError before sending
    event = published.event
    print(f"published {event.event_id} partition={published.partition} offset={published.offset}")


if __name__ == "__main__":
    event_file = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "message_created.json"
    asyncio.run(main(event_file.read_bytes()))
