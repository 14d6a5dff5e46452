"""The publisher library the core platform embeds: validated CloudEvents records on ``akece.events``.

    async with Publisher(settings) as publisher:
        published = await publisher.publish(payload)

Idempotent producer, acks=all, compression; each payload is validated before anything is sent.
Connecting and each send (metadata of the topic included) are bounded by ``kafka.send_timeout_s``;
an unreachable broker or a missing topic raises ``KafkaUnavailableError`` with a one-line message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from services.contract.topics import Topics
from services.publisher.events import DEFAULT_SOURCE, OutgoingEvent, prepare
from services.shared import kafka
from services.shared import logging as logs
from services.shared.errors import KafkaUnavailableError
from services.shared.settings import Settings

log = logs.get("publisher")


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
            await self._start()
        self._started = True
        return self

    async def _start(self) -> None:
        timeout = self._settings.kafka.send_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await kafka.start(self._producer)  # a failure names its cause (password, certificate, ...)
        except KafkaUnavailableError as exc:
            raise KafkaUnavailableError(f"{exc}; nothing was sent") from exc
        except TimeoutError as exc:
            await self._producer.stop()
            raise KafkaUnavailableError(f"cannot reach Kafka at {self._bootstrap}: no answer within {timeout:g} s; "
                                        "nothing was sent") from exc

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the producer, bounded by ``kafka.send_timeout_s``: with the broker gone and records
        still queued (their ``publish`` already failed with a timeout), stopping would otherwise
        wait for the client's own request timeout."""
        if self._started and self._own_producer:
            timeout = self._settings.kafka.send_timeout_s
            try:
                async with asyncio.timeout(timeout):
                    await self._producer.stop()
            except TimeoutError:
                log.warning("publisher.close_timeout", seconds=timeout,
                            detail="records not acknowledged were reported as failed to their callers")
        self._started = False

    def prepare(self, payload: dict[str, object] | bytes) -> OutgoingEvent:
        return prepare(payload, source=self._source)

    async def publish(self, payload: dict[str, object] | bytes) -> Published:
        return (await self.publish_many([payload]))[0]

    async def publish_many(self, payloads: Sequence[dict[str, object] | bytes]) -> list[Published]:
        """Validate every payload first (nothing is sent if one is invalid), then send them all."""
        return await self.send_prepared([self.prepare(p) for p in payloads])

    async def send_prepared(self, events: Sequence[OutgoingEvent]) -> list[Published]:
        """Send and await every acknowledgement, all within ``kafka.send_timeout_s``."""
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._settings.kafka.send_timeout_s):
                for e in events:
                    futures.append(await self._producer.send(self._topic, value=e.value, key=e.key,
                                                             headers=e.headers))
                if futures:
                    await asyncio.wait(futures)  # unlike gather, a timeout does not cancel the sends
            metas = [f.result() for f in futures]
        except TimeoutError as exc:
            raise self._timed_out(len(events), futures) from exc
        except UnknownTopicOrPartitionError as exc:
            if not futures:  # the first send's metadata wait gave up: nothing was enqueued
                raise self._missing_topic() from exc
            raise self._failed(exc, len(events), futures) from exc
        except KafkaError as exc:
            raise self._failed(exc, len(events), futures) from exc
        return [Published(e, m.partition, m.offset) for e, m in zip(events, metas, strict=True)]

    @property
    def _bootstrap(self) -> str:
        servers = getattr(self._producer.client, "_bootstrap_servers", self._settings.kafka.bootstrap_servers)
        return servers if isinstance(servers, str) else ",".join(map(str, servers))

    def _missing_topic(self) -> KafkaUnavailableError:
        return KafkaUnavailableError(
            f"topic {self._topic} does not exist on {self._bootstrap} (no metadata within "
            f"{self._settings.kafka.send_timeout_s:g} s): run `akece-webhooks topics ensure`; nothing was sent")

    def _timed_out(self, total: int, futures: list[asyncio.Future[Any]]) -> KafkaUnavailableError:
        if self._producer.client.cluster.partitions_for_topic(self._topic) is None:
            return self._missing_topic()
        return KafkaUnavailableError(
            f"no acknowledgement from Kafka at {self._bootstrap} within {self._settings.kafka.send_timeout_s:g} s: "
            f"{_acked(futures)} of {total} record(s) acknowledged, the others may or may not have been written")

    def _failed(self, exc: KafkaError, total: int, futures: list[asyncio.Future[Any]]) -> KafkaUnavailableError:
        return KafkaUnavailableError(
            f"Kafka at {self._bootstrap} failed a send ({exc}): {_acked(futures)} of {total} record(s) "
            "acknowledged, the others may or may not have been written")


def _acked(futures: list[asyncio.Future[Any]]) -> int:
    return sum(1 for f in futures if f.done() and not f.cancelled() and f.exception() is None)
