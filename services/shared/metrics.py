"""Every Prometheus metric of the pipeline, on a registry passed in.

Labels are bounded: event type, outcome, status class, tier, reason, topic, partition, group.
Never a URL, an account or a webhook id.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from services import __version__

PREFIX = "akece_webhooks"
# Webhook latencies: from a fast local receiver (5 ms) to a slow one near the 60 s ceiling.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
# End to end includes retry tiers: up to a day and more.
E2E_BUCKETS = (*LATENCY_BUCKETS, 300.0, 1800.0, 7200.0, 36000.0, 86400.0)
FANOUT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 500)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, the same counts and sum, with one locked update per
    bucket touched and one for the sum instead of two per value (the router observes two per event).
    A histogram that is not prometheus_client's (a no-op stand-in) observes them one by one."""
    bounds = getattr(histogram, "_upper_bounds", None)
    if bounds is None:
        for value in values:
            histogram.observe(value)
        return
    if not values:
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as ``observe`` finds it
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    histogram._sum.inc(sum(values))
    for i, count in enumerate(counts):
        if count:
            histogram._buckets[i].inc(count)


def status_class(status: int | None) -> str:
    """``2xx``..``5xx`` for an HTTP status, ``none`` when no response came back."""
    return f"{status // 100}xx" if status and 100 <= status < 600 else "none"


class Metrics:
    """The pipeline's metrics, registered on ``registry`` (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = PREFIX
        self.build_info = Info(f"{p}_build", "Version of the running akece-webhooks build.", registry=registry)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

        # Router
        self.events_consumed = Counter(
            f"{p}_events_consumed", "Events read from the events topic, by event type and routing outcome "
            "(routed, no_subscriber, invalid).", ["event_type", "outcome"], registry=registry)
        self.events_invalid = Counter(
            f"{p}_events_invalid", "Events quarantined to the invalid topic, by reason.", ["reason"],
            registry=registry)
        self.deliveries_routed = Counter(
            f"{p}_deliveries_routed", "Delivery records produced by the router (one per event and webhook).",
            registry=registry)
        self.fanout = Histogram(
            f"{p}_router_fanout", "Deliveries produced per routed event.", buckets=FANOUT_BUCKETS,
            registry=registry)
        self.router_batch = Histogram(
            f"{p}_router_batch_size", "Events per router batch.", buckets=BATCH_BUCKETS, registry=registry)
        self.routing_latency = Histogram(
            f"{p}_routing_latency_seconds", "Time from the event's time to its deliveries acknowledged by Kafka.",
            buckets=LATENCY_BUCKETS, registry=registry)

        # Delivery
        self.deliveries = Counter(
            f"{p}_deliveries", "Delivery attempts by outcome (success, retry, dead_letter) and HTTP status "
            "class (2xx..5xx, none when no response).", ["outcome", "status_class"], registry=registry)
        self.first_attempts = Counter(
            f"{p}_first_attempts", "First delivery attempts by outcome (success or failure); their ratio is "
            "the first-attempt success ratio.", ["outcome"], registry=registry)
        self.attempt_duration = Histogram(
            f"{p}_attempt_duration_seconds", "Duration of one HTTP delivery attempt, by status class.",
            ["status_class"], buckets=LATENCY_BUCKETS, registry=registry)
        self.end_to_end = Histogram(
            f"{p}_end_to_end_latency_seconds", "Time from the event's time to the receiver's 2xx, retries included.",
            buckets=E2E_BUCKETS, registry=registry)
        self.in_flight = Gauge(
            f"{p}_in_flight", "Delivery records held by a worker and not yet finished.", registry=registry)
        self.requests_in_flight = Gauge(
            f"{p}_requests_in_flight", "HTTP requests to receivers currently open.", registry=registry)
        self.retries_scheduled = Counter(
            f"{p}_retries_scheduled", "Deliveries sent to a retry tier, by tier.", ["tier"], registry=registry)
        self.retry_tier_depth = Gauge(
            f"{p}_retry_tier_depth", "Records waiting in a retry tier (end offset minus committed), by tier.",
            ["tier"], registry=registry)
        self.retry_tier_behind = Gauge(
            f"{p}_retry_tier_behind_seconds", "How far past its due time the oldest due record of a retry "
            "tier is (0 when nothing is overdue).", ["tier"], registry=registry)
        self.dead_letters = Counter(
            f"{p}_dead_letters", "Deliveries put on the dead-letter topic, by reason.", ["reason"],
            registry=registry)
        self.circuits_open = Gauge(
            f"{p}_circuits_open", "Webhooks whose circuit breaker is open in this worker.", registry=registry)
        self.paused_partitions = Gauge(
            f"{p}_paused_partitions", "Partitions this worker paused (retry tier not due, or backpressure).",
            registry=registry)
        self.internal_errors = Counter(
            f"{p}_internal_errors", "Unexpected errors while handling one record, made that record's failure "
            "(class internal) instead of the process's, by stage (delivery, router, replay, subscriptions, api).",
            ["stage"], registry=registry)
        self.webhooks_auto_disabled = Counter(
            f"{p}_webhooks_auto_disabled", "Webhooks disabled by the pipeline, by reason.", ["reason"],
            registry=registry)

        # Subscriptions and Kafka
        self.subscriptions = Gauge(
            f"{p}_subscriptions", "Webhooks in the subscription table.", registry=registry)
        self.webhooks_disabled = Gauge(
            f"{p}_webhooks_disabled", "Webhooks in the subscription table that are disabled.", registry=registry)
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag", "Records behind the end of the partition, by consumer group, topic and partition.",
            ["group", "topic", "partition"], registry=registry)
        self.worker_up = Gauge(
            f"{p}_worker_up", "1 while a worker of this process runs, by role.", ["role"], registry=registry)
        self.worker_ready = Gauge(
            f"{p}_worker_ready", "1 while a worker of this process is ready, by role.", ["role"], registry=registry)
        self.asyncio_tasks = Gauge(
            f"{p}_asyncio_tasks", "Asyncio tasks of this process's event loop, counted when /metrics is scraped.",
            registry=registry)

        # API
        self.api_requests = Counter(
            f"{p}_api_requests", "Management API requests, by method, route and status class.",
            ["method", "route", "status_class"], registry=registry)
        self.api_latency = Histogram(
            f"{p}_api_request_duration_seconds", "Management API request duration.", ["method"],
            buckets=LATENCY_BUCKETS, registry=registry)


class ProcessMetrics:
    """The metrics of a parent of N role processes (``--processes N``); the children's own series are
    served beside them with a ``process`` label (``services.shared.process_health``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = PREFIX
        self.processes = Gauge(
            f"{p}_processes", "Child processes of this role's parent that are running, by role.", ["role"],
            registry=registry)
        self.process_restarts = Counter(
            f"{p}_process_restarts", "Child processes restarted after an unexpected exit, by role.", ["role"],
            registry=registry)
