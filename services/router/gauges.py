"""What the router reports of its work: counters and histograms per committed batch, consumer lag.

Called once per batch, after its commit (``events_routed`` counts committed events), never per
record on the produce path. Labelled children are cached: ``.labels()`` is a dict lookup under a lock.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.router.core import Invalid, RouteResult, epoch_of, event_type_label
from services.shared import logging as logs
from services.shared.metrics import Metrics, observe_all

log = logs.get("router")

Batch = Mapping[TopicPartition, Sequence[Any]]


class RouterGauges:
    """The router's metrics and per-event log lines, and the totals its ``RouterWorker`` exposes."""

    def __init__(self, metrics: Metrics, group_id: str) -> None:
        self._metrics = metrics
        self._group_id = group_id
        self._consumed: dict[tuple[str, str], Any] = {}
        self._invalid: dict[str, Any] = {}
        self._lag: dict[TopicPartition, Any] = {}
        self.events = 0  # events handled (routed, no subscriber or invalid) and committed
        self.deliveries = 0

    def observe(self, results: Sequence[RouteResult], acked: float) -> None:
        """Count a committed batch; ``acked``: when its last acknowledgement came in (routing latency)."""
        m = self._metrics
        outcomes: Counter[tuple[str, str]] = Counter()
        reasons: Counter[str] = Counter()
        produced = 0
        fanouts: list[int] = []
        latencies: list[float] = []
        debug = log.is_enabled_for(logging.DEBUG)
        for result in results:
            outcomes[event_type_label(result.event_type), result.outcome] += 1
            if isinstance(result, Invalid):
                reasons[result.reason] += 1
                log.info("event.invalid", event_id=result.event_id, event_type=result.event_type,
                         account_id=result.account_id, reason=result.reason, detail=result.detail)
                continue
            fanout = len(result.deliveries)
            produced += fanout
            fanouts.append(fanout)
            if fanout:
                started = epoch_of(result.event_time)
                if started is not None:
                    latencies.append(max(0.0, acked - started))
            if debug:
                log.debug("event.routed", event_id=result.event_id, event_type=result.event_type,
                          account_id=result.account_id, fanout=fanout)
        observe_all(m.fanout, fanouts)
        observe_all(m.routing_latency, latencies)
        for labels, count in outcomes.items():
            self._child(self._consumed, labels, m.events_consumed).inc(count)
        for reason, count in reasons.items():
            self._child(self._invalid, reason, m.events_invalid).inc(count)
        m.deliveries_routed.inc(produced)
        m.router_batch.observe(len(results))
        self.events += len(results)
        self.deliveries += produced

    def batch_lag(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        """Lag of the batch's partitions behind their high watermark, after its commit."""
        assigned = consumer.assignment()
        for tp, records in batch.items():
            highwater = consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                self._lag_of(tp).set(max(0, highwater - (records[-1].offset + 1)))

    async def refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag of every assigned partition, also when no records arrive (an idle router reads 0)."""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self._lag_of(tp).set(max(0, highwater - await consumer.position(tp)))

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Revoked partitions: their new owner reports their lag."""
        for tp in partitions:
            self._lag.pop(tp, None)
            self._metrics.consumer_lag.remove(self._group_id, tp.topic, str(tp.partition))

    def _lag_of(self, tp: TopicPartition) -> Any:
        child = self._lag.get(tp)
        if child is None:
            child = self._lag[tp] = self._metrics.consumer_lag.labels(self._group_id, tp.topic, str(tp.partition))
        return child

    @staticmethod
    def _child(cache: dict[Any, Any], labels: Any, metric: Any) -> Any:
        child = cache.get(labels)
        if child is None:
            child = cache[labels] = metric.labels(*labels) if isinstance(labels, tuple) else metric.labels(labels)
        return child
