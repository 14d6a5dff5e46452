"""The publisher library the core platform embeds: validated CloudEvents records on ``akece.events``.

    async with Publisher(settings) as publisher:
        published = await publisher.publish(payload)

Idempotent producer, acks=all, compression; each payload is validated before anything is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaProducer

from services.publisher.events import DEFAULT_SOURCE, OutgoingEvent, prepare
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.topics import Topics


@dataclass(frozen=True)
class Published:
    event: OutgoingEvent
    partition: int
    offset: int


class Publisher:
    def __init__(self, settings: Settings, *, source: str = DEFAULT_SOURCE,
                 producer: AIOKafkaProducer | None = None) -> None:
        self._settings = settings
        self._source = source
        self._topic = Topics.from_settings(settings).events
        self._own_producer = producer is None
        self._producer = producer or kafka.producer(settings)
        self._started = False

    async def __aenter__(self) -> Publisher:
        if self._own_producer:
            await self._producer.start()
        self._started = True
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._started and self._own_producer:
            await self._producer.stop()
        self._started = False

    def prepare(self, payload: dict[str, object] | bytes) -> OutgoingEvent:
        return prepare(payload, source=self._source)

    async def publish(self, payload: dict[str, object] | bytes) -> Published:
        return (await self.publish_many([payload]))[0]

    async def publish_many(self, payloads: Sequence[dict[str, object] | bytes]) -> list[Published]:
        """Validate every payload first (nothing is sent if one is invalid), then send them all."""
        return await self.send_prepared([self.prepare(p) for p in payloads])

    async def send_prepared(self, events: Sequence[OutgoingEvent]) -> list[Published]:
        futures = [await self._producer.send(self._topic, value=e.value, key=e.key, headers=e.headers)
                   for e in events]
        timeout = self._settings.kafka.send_timeout_s
        metas = await asyncio.wait_for(asyncio.gather(*futures), timeout)
        return [Published(e, m.partition, m.offset) for e, m in zip(events, metas, strict=True)]
