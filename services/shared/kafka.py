"""Kafka clients built from settings, and the idempotent topic ensure.

Every stage builds its producers, consumers and admin client here, so the client options that
matter for correctness (idempotence, acks=all, manual commits, ``earliest`` for new groups) and the
connection's security (TLS, SASL: ``kafka_security``) are set once. ``start``/``started`` start a
client and, when it cannot connect, say why in one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, KafkaTimeoutError

from services.contract.topics import TopicSpec, topic_specs
from services.shared import kafka_codecs
from services.shared import logging as logs
from services.shared.errors import ConfigError, KafkaSettingsRefusedError, KafkaUnavailableError
from services.shared.kafka_security import bootstrap_failures, client_options, explain, settings_refused
from services.shared.settings import Settings

log = logs.get("kafka")

TOPIC_ALREADY_EXISTS = 36
CLOSE_TIMEOUT_S = 2.0  # a normal close takes milliseconds: the drain already awaited every acknowledgement
COMMIT_TIMEOUT_S = 5.0


def connection(settings: Settings) -> dict[str, Any]:
    """What every client (producer, consumer, admin) gets: servers, client id, timeout, TLS and SASL."""
    kafka = settings.kafka
    return {"bootstrap_servers": kafka.bootstrap_servers, "client_id": kafka.client_id,
            "request_timeout_ms": kafka.request_timeout_ms, **client_options(kafka)}


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all) with compression (lz4 as Kafka's own clients make it:
    ``kafka_codecs``) and a small linger."""
    kafka = settings.kafka
    kafka_codecs.install()
    options: dict[str, Any] = {
        **connection(settings),
        "enable_idempotence": True,
        "acks": "all",
        "compression_type": None if kafka.compression == "none" else kafka.compression,
        "linger_ms": kafka.linger_ms,
        "max_batch_size": 256 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with manual commits, reading new groups from the earliest offset."""
    kafka = settings.kafka
    options: dict[str, Any] = {
        **connection(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": max(1000, kafka.session_timeout_ms // 4),
        "rebalance_timeout_ms": kafka.rebalance_timeout_ms,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection(settings))


async def close(client: Any, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Stop a producer/consumer (``stop``) or admin client (``close``), bounded: a producer flushes
    its pending batches first, which lasts until they expire while the broker is away."""
    try:
        async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
            # One loop turn first: a group-less consumer stopped before its internal task ran once re-raises
            # that task's cancellation from stop(), before its fetcher is closed (a scan refused right after
            # its consumer started).
            await asyncio.sleep(0)
            await (client.stop() if hasattr(client, "stop") else client.close())
    except TimeoutError:
        log.warning("kafka.close_timeout", client=type(client).__name__, timeout_s=timeout)
        await _finish_close(client)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are cancelled ourselves
        # aiokafka's fetcher.close() re-raises the CancelledError of a fetch it cancelled while that
        # fetch slept in its retry backoff (so only while the broker is away): finish the stop here
        await _finish_close(client)


async def _finish_close(client: Any) -> None:
    """What ``stop()`` did not get to: the sender, pending fetches, connections (best effort)."""
    sender = getattr(client, "_sender", None)
    if sender is not None:
        await sender.close()
    fetcher = getattr(client, "_fetcher", None)
    pending = list(getattr(fetcher, "_pending_tasks", ()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    inner = getattr(client, "client", None) or getattr(client, "_client", None)
    if inner is not None:
        await inner.close()


async def commit(consumer_: AIOKafkaConsumer, offsets: dict[TopicPartition, Any],
                 timeout: float = COMMIT_TIMEOUT_S) -> None:
    """Commit ``offsets``, bounded: without a reachable group coordinator aiokafka retries a commit
    forever. A commit not acknowledged in time raises ``KafkaTimeoutError`` (a ``KafkaError``)."""
    try:
        async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
            await consumer_.commit(offsets)
    except TimeoutError as exc:
        raise KafkaTimeoutError(f"commit not acknowledged within {timeout:g}s") from exc


async def start(client: Any) -> None:
    """Start a producer/consumer/admin client. If it cannot connect, close it and raise
    ``KafkaUnavailableError`` naming the cause (wrong password, untrusted certificate, ...) in one line."""
    with bootstrap_failures() as failures:
        try:
            await client.start()
        except (KafkaError, OSError) as exc:
            await close(client)
            reason = explain(exc, failures, client_protocol(client))
            kind = KafkaSettingsRefusedError if settings_refused(failures) else KafkaUnavailableError
            raise kind(f"cannot reach Kafka at {client_bootstrap(client)}: {reason}") from exc


@asynccontextmanager
async def started(client: Any) -> AsyncIterator[Any]:
    """Start a producer/consumer/admin client and stop it on exit, whatever happens."""
    await start(client)
    try:
        yield client
    finally:
        await close(client)


def client_bootstrap(client: Any) -> str:
    """The bootstrap servers a consumer, producer or admin client was given, for error messages."""
    inner = getattr(client, "_client", None) or getattr(client, "client", None)
    servers: Any = getattr(inner, "_bootstrap_servers", None) or getattr(client, "_bootstrap_servers", None)
    if servers is None:
        return "?"
    return servers if isinstance(servers, str) else ",".join(map(str, servers))


def client_protocol(client: Any) -> str | None:
    """The security protocol a client was given (its cause lines depend on it)."""
    inner = getattr(client, "_client", None) or getattr(client, "client", None)
    protocol = getattr(inner, "_security_protocol", None)
    return protocol if isinstance(protocol, str) else None


async def send(producer_: AIOKafkaProducer, topic: str, value: bytes | None, *, key: bytes | None,
               headers: list[tuple[str, bytes]], timeout: float) -> Any:
    """Produce one record and await its acknowledgement, bounded (an idempotent send can wait forever)."""
    future = await producer_.send(topic, value=value, key=key, headers=headers)
    return await asyncio.wait_for(future, timeout)


async def create_topics(settings: Settings, specs: Iterable[TopicSpec]) -> dict[str, str]:
    """Create topics that do not exist. Returns name -> ``created`` | ``exists``."""
    specs = list(specs)
    client = admin(settings)
    async with started(client):
        new = [NewTopic(s.name, s.partitions, settings.kafka.replication_factor, topic_configs=replicated(settings, s))
               for s in specs]
        response = await client.create_topics(new, timeout_ms=settings.kafka.request_timeout_ms)
    result: dict[str, str] = {}
    for name, code, *rest in response.topic_errors:
        if code == 0:
            result[name] = "created"
        elif code == TOPIC_ALREADY_EXISTS:
            result[name] = "exists"
        else:
            message = rest[0] if rest else ""
            raise KafkaUnavailableError(f"cannot create topic {name}: error {code} {message}")
    return result


def replicated(settings: Settings, spec: TopicSpec) -> dict[str, str]:
    """A topic's configuration with the ``min.insync.replicas`` of the settings, when they set one."""
    isr = settings.kafka.min_insync_replicas
    return spec.config if isr is None else {**spec.config, "min.insync.replicas": str(isr)}


async def ensure_topics(settings: Settings) -> dict[str, str]:
    """Create every topic the pipeline uses (idempotent)."""
    return await create_topics(settings, topic_specs(settings))


RECORD_HEADROOM_BYTES = 40 * 1024
"""What our records add on top of an event body at most: delivery, retry and dead-letter headers
(the dead-letter story's response excerpt and error text are bounded well below this)."""


def max_record_bytes(max_event_bytes: int) -> int:
    """The largest record the pipeline writes for events up to ``max_event_bytes``: the producers'
    ``max_request_size`` and what the topics must accept."""
    return max_event_bytes + RECORD_HEADROOM_BYTES


async def max_message_bytes(admin_: AIOKafkaAdminClient, topics: Iterable[str]) -> dict[str, int]:
    """Each existing topic's effective ``max.message.bytes`` (its own setting or the broker's default)."""
    names = list(topics)
    responses = await admin_.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None}) for name in names])
    limits: dict[str, int] = {}
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            if error_code:
                continue
            for entry in entries:
                if entry[0] == "max.message.bytes" and entry[1] is not None:
                    limits[name] = int(entry[1])
    return limits


async def check_record_limits(admin_: AIOKafkaAdminClient, topics: Iterable[str], max_event_bytes: int) -> None:
    """Refuse to start when a topic we write deliveries to cannot hold the largest event we route.

    Otherwise the first such event would be accepted by the router and then refused by the broker
    at the delivery, retry or dead-letter step: a delivery that could never reach its end.
    """
    need = max_record_bytes(max_event_bytes)
    too_small = {name: limit for name, limit in (await max_message_bytes(admin_, topics)).items() if limit < need}
    if too_small:
        name, limit = sorted(too_small.items())[0]
        others = f" (and {len(too_small) - 1} more)" if len(too_small) > 1 else ""
        raise ConfigError(
            f"topic {name}{others} accepts records up to {limit:,} bytes (max.message.bytes), but events up to "
            f"{max_event_bytes:,} bytes (AKECE_ROUTER_MAX_EVENT_BYTES) plus {RECORD_HEADROOM_BYTES // 1024} KiB "
            f"of headers must fit: raise the topic's max.message.bytes to at least {need:,} or lower "
            f"AKECE_ROUTER_MAX_EVENT_BYTES")


async def end_offsets(consumer_: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    """End offset of every partition of ``topic`` (works before and after an assignment)."""
    partitions = consumer_.partitions_for_topic(topic) or set()
    if not partitions:
        # A consumer only tracks metadata of the topics it uses: ask for this one explicitly.
        await consumer_._client.add_topic(topic)
        partitions = consumer_.partitions_for_topic(topic) or set()
    if not partitions:  # already tracked, but metadata may predate the topic's creation
        await consumer_._client.force_metadata_update()
        partitions = consumer_.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    return dict(await consumer_.end_offsets(tps)) if tps else {}
