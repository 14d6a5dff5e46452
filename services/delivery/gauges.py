"""The delivery worker's gauges, set on every commit tick: records and requests in flight, open
circuits, paused partitions, consumer lag per partition, and each retry tier's depth and how far its
head is behind its due time."""

from __future__ import annotations

import contextlib
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.contract.topics import Topics, format_delay
from services.delivery.intake import Intake
from services.delivery.ledger import Ledger
from services.shared.metrics import Metrics


class DeliveryGauges:
    """``DeliveryGauges(metrics, group_id, topics, offsets)``: ``update`` on each tick, ``remove_lag``
    for a partition taken away."""

    def __init__(self, metrics: Metrics, group_id: str, topics: Topics, offsets: Ledger) -> None:
        self._metrics = metrics
        self._group_id = group_id
        self._offsets = offsets
        self._tiers = {name: format_delay(delay) for name, delay in topics.retry_topics.items()}

    def update(self, consumer: AIOKafkaConsumer, intake: Intake, requests_in_flight: int, circuits_open: int) -> None:
        m, offsets = self._metrics, self._offsets
        assert intake.pauses is not None
        m.in_flight.set(intake.in_flight)
        m.requests_in_flight.set(requests_in_flight)
        m.circuits_open.set(circuits_open)
        m.paused_partitions.set(intake.pauses.count())
        depth = dict.fromkeys(self._tiers.values(), 0)
        behind = dict.fromkeys(self._tiers.values(), 0.0)
        now = time.time()
        for tp in consumer.assignment():
            end, committed = consumer.highwater(tp), offsets.committed(tp)
            if end is None or committed is None:
                continue
            lag = max(0, end - committed)
            m.consumer_lag.labels(self._group_id, tp.topic, str(tp.partition)).set(lag)
            tier = self._tiers.get(tp.topic)
            if tier is not None:
                depth[tier] += lag
                due = offsets.head_due_at(tp)
                if due is not None and due < now:
                    behind[tier] = max(behind[tier], now - due)
        for tier in depth:
            m.retry_tier_depth.labels(tier).set(depth[tier])
            m.retry_tier_behind.labels(tier).set(behind[tier])

    def remove_lag(self, tp: TopicPartition) -> None:
        with contextlib.suppress(KeyError):
            self._metrics.consumer_lag.remove(self._group_id, tp.topic, str(tp.partition))
