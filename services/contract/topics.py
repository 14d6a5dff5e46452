"""Every topic the pipeline uses, in one place, and their configuration.

``akece-webhooks topics ensure`` creates them idempotently. Retry tiers are one topic per distinct
delay of the retry schedule, named by the delay (``akece.webhooks.retry.5s``, ``...retry.2h``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

DAY_MS = 24 * 3600 * 1000


class _RetrySettings(Protocol):
    @property
    def schedule(self) -> Sequence[float]: ...


class _KafkaSettings(Protocol):
    @property
    def partitions(self) -> int: ...
    @property
    def events_retention_ms(self) -> int: ...
    @property
    def dlq_retention_ms(self) -> int: ...
    @property
    def attempts_retention_ms(self) -> int: ...


class TopicSettings(Protocol):
    """What the topics read of the settings (``services.shared.settings.Settings`` fits): the contract
    imports no other package, not even for its types."""

    @property
    def topic_prefix(self) -> str: ...
    @property
    def retry(self) -> _RetrySettings: ...
    @property
    def kafka(self) -> _KafkaSettings: ...


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def format_delay(seconds: float) -> str:
    """``5 -> 5s``, ``300 -> 5m``, ``7200 -> 2h``, ``0.5 -> 500ms``: the suffix of a retry topic."""
    if seconds < 1 or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


@dataclass(frozen=True)
class Topics:
    """Names of the pipeline's topics under a prefix."""

    prefix: str
    retry_delays: tuple[float, ...]

    @classmethod
    def from_settings(cls, settings: TopicSettings) -> Topics:
        return cls(settings.topic_prefix, tuple(dict.fromkeys(settings.retry.schedule)))

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def invalid(self) -> str:
        return f"{self.prefix}.events.invalid"

    @property
    def subscriptions(self) -> str:
        return f"{self.prefix}.webhooks.subscriptions"

    @property
    def deliveries(self) -> str:
        return f"{self.prefix}.webhooks.deliveries"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.webhooks.dlq"

    @property
    def attempts(self) -> str:
        return f"{self.prefix}.webhooks.attempts"

    @property
    def replays(self) -> str:
        return f"{self.prefix}.webhooks.replays"

    def retry(self, delay: float) -> str:
        return f"{self.prefix}.webhooks.retry.{format_delay(delay)}"

    @property
    def retry_topics(self) -> dict[str, float]:
        """Retry topic name -> its delay in seconds."""
        return {self.retry(delay): delay for delay in self.retry_delays}

    @property
    def delivery_inputs(self) -> list[str]:
        """What a delivery worker consumes: the deliveries topic and every retry tier."""
        return [self.deliveries, *self.retry_topics]


def topic_specs(settings: TopicSettings) -> list[TopicSpec]:
    topics = Topics.from_settings(settings)
    kafka = settings.kafka
    parts = kafka.partitions
    delete = {"cleanup.policy": "delete"}
    specs = [
        TopicSpec(topics.events, parts, {**delete, "retention.ms": str(kafka.events_retention_ms)},
                  "domain events from the core platform (CloudEvents, binary mode)"),
        TopicSpec(topics.invalid, 1, {**delete, "retention.ms": str(30 * DAY_MS)},
                  "events the router could not route, with the reason"),
        TopicSpec(topics.subscriptions, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                                            "segment.ms": str(3600 * 1000)},
                  "webhook records keyed by webhook id (compacted table)"),
        TopicSpec(topics.deliveries, parts, {**delete, "retention.ms": str(7 * DAY_MS)},
                  "one record per (event, webhook), first attempt"),
        TopicSpec(topics.dlq, parts, {**delete, "retention.ms": str(kafka.dlq_retention_ms)},
                  "deliveries that could not be delivered, with their story"),
        TopicSpec(topics.attempts, parts, {**delete, "retention.ms": str(kafka.attempts_retention_ms)},
                  "one record per delivery attempt"),
        TopicSpec(topics.replays, 1, {"cleanup.policy": "compact"},
                  "replay runs keyed by replay id (compacted)"),
    ]
    for name, delay in topics.retry_topics.items():
        retention = max(7 * DAY_MS, int(delay * 1000 * 4))
        specs.append(TopicSpec(name, parts, {**delete, "retention.ms": str(retention)},
                               f"retry tier: deliveries due {format_delay(delay)} after their failure"))
    return specs
