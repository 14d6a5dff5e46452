"""The composition root: every role is built here, for ``run --role``, ``router``, ``deliver`` and ``api``
(their commands: ``services.run_commands``).

Every role runs under the one supervisor with the subscription table it needs. ``all`` runs api,
router and delivery in one process (development, small installs); production runs each role as its
own process and scales by instance count; ``router`` and ``deliver`` also run N processes of the
group on one host (``--processes``, ``services.shared.processes``: a parent, its children run the
same command with ``--processes 1``). The process starts whether or not Kafka answers and rides
out its outages (``services.shared.outage``). The supervisor's deadline is the delivery grace
period plus ``SHUTDOWN_MARGIN_S``; a parent of N processes keeps the same one.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from services.shared import kafka
from services.shared.broker_link import BrokerLink
from services.shared.metrics import Metrics
from services.shared.rides_out import RidesOut
from services.shared.runtime import Supervisor, Worker
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable

SHUTDOWN_MARGIN_S = 10.0  # the supervisor's deadline beyond the delivery grace period


@dataclass(frozen=True)
class RoleOptions:
    """How the router and delivery roles run: their consumer group, and whether they end by themselves."""

    group_id: str | None = None
    until_idle: bool = False
    max_records: int | None = None  # router only


def table_metrics(metrics: Metrics) -> SubscriptionTable.OnChange:
    def update(table: SubscriptionTable) -> None:
        webhooks = table.all()
        metrics.subscriptions.set(len(webhooks))
        metrics.webhooks_disabled.set(sum(1 for w in webhooks if not w.enabled))

    return update


class TableUntil:
    """The subscription table as a worker that keeps following until ``done`` (not the global stop),
    so a draining delivery worker can still disable a webhook (read-your-writes needs the table)."""

    def __init__(self, table: SubscriptionTable, done: asyncio.Event) -> None:
        self.name = table.name
        self._table = table
        self._done = done

    async def run(self, stop: asyncio.Event) -> None:
        await self._table.run(self._done)

    def ready(self) -> bool:
        return self._table.ready()


class StopsWhenDone:
    """Runs a worker that may end by itself (idle, enough records, drained); when it returns, the
    other workers stop and ``done`` (if given) is set."""

    def __init__(self, worker: Worker, done: asyncio.Event | None = None) -> None:
        self.name = worker.name
        self._worker = worker
        self._done = done

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._worker.run(stop)
        finally:
            if self._done is not None:
                self._done.set()
            stop.set()

    def ready(self) -> bool:
        return self._worker.ready()


def build_workers(settings: Settings, roles: Sequence[str], table: SubscriptionTable,
                  store: SubscriptionStore | None, metrics: Metrics, link: BrokerLink,
                  options: RoleOptions = RoleOptions()) -> list[Worker]:
    """The link first, then the table and the roles; what reads Kafka rides out its outages. With the
    delivery role, the table follows until the delivery worker has drained."""
    table_worker: Worker = table
    delivered: asyncio.Event | None = None
    if "delivery" in roles:
        delivered = asyncio.Event()
        table_worker = TableUntil(table, delivered)
    workers: list[Worker] = [link, RidesOut(lambda: table_worker, link)]
    if "api" in roles:  # serves through an outage: reads from the table, writes refused with 503
        from services.admin.app import ApiWorker

        assert store is not None
        workers.append(ApiWorker(settings, table, store, metrics))
    if "router" in roles:
        from services.router.worker import RouterWorker

        def router() -> RouterWorker:
            return RouterWorker(settings, table, metrics, group_id=options.group_id, until_idle=options.until_idle,
                                max_records=options.max_records)

        workers.append(StopsWhenDone(RidesOut(router, link)))
    if "delivery" in roles:
        from services.delivery.worker import DeliveryWorker

        assert store is not None
        writer: SubscriptionStore = store

        def delivery() -> DeliveryWorker:
            return DeliveryWorker(settings, table, writer, metrics, group_id=options.group_id,
                                  until_idle=options.until_idle)

        workers.append(StopsWhenDone(RidesOut(delivery, link), delivered))
    return workers


async def run_roles(settings: Settings, roles: Sequence[str], *, options: RoleOptions = RoleOptions(),
                    registry: CollectorRegistry | None = None, stop: asyncio.Event | None = None,
                    install_signals: bool = True, health_listener: socket.socket | None = None) -> int:
    """Run ``roles`` until a signal, ``stop``, or a role's own end. Returns the process exit code.

    Starts whether or not Kafka answers: the link starts the store's producer once it does.
    ``health_listener``: serve /metrics, /healthz, /readyz there instead of the metrics settings'.
    """
    if "api" in roles:  # refuse bad tokens at once, before waiting for Kafka
        from services.shared.auth import TokenAuthenticator

        TokenAuthenticator.from_settings(settings)
    metrics = Metrics(registry or CollectorRegistry())
    table = SubscriptionTable(settings, on_change=table_metrics(metrics), metrics=metrics)
    writes = "api" in roles or "delivery" in roles  # webhooks: CRUD, auto-disable
    producer = kafka.producer(settings) if writes else None
    link = BrokerLink(settings, clients=[producer] if producer is not None else [])
    store = SubscriptionStore(settings, table, producer, available=link.ready) if producer is not None else None
    supervisor = Supervisor(
        build_workers(settings, roles, table, store, metrics, link, options), metrics=metrics,
        metrics_host=settings.metrics.host, metrics_port=settings.metrics.port,
        shutdown_deadline=shutdown_deadline(settings), stop=stop, listener=health_listener)
    for worker in supervisor.states:
        bind = getattr(worker.worker, "bind_health", None)
        if bind is not None:  # the API serves /healthz and /readyz of the whole process
            bind(supervisor.states)
    try:
        return await supervisor.run(install_signals=install_signals)
    finally:
        await link.close()


def shutdown_deadline(settings: Settings) -> float:
    return settings.delivery.shutdown_grace_s + SHUTDOWN_MARGIN_S
