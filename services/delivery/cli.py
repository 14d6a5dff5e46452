"""``akece-webhooks deliver``: the subscription table and a delivery worker under the supervisor."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from services.delivery.worker import DeliveryWorker
from services.shared import kafka
from services.shared import logging as logs
from services.shared.metrics import Metrics
from services.shared.outage import BrokerLink, RidesOut
from services.shared.runtime import Supervisor, Worker, run_async
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable

SHUTDOWN_MARGIN_S = 10.0  # the supervisor's deadline beyond the delivery grace period


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    deliver = sub.add_parser("deliver", help="deliver webhooks: deliveries topic and retry tiers")
    deliver.add_argument("--group-id", default=None, help="consumer group (default <prefix>.delivery)")
    deliver.add_argument("--until-idle", action="store_true",
                         help="exit once every partition is read and nothing is in flight or scheduled")
    deliver.set_defaults(func=deliver_command)


def deliver_command(args: argparse.Namespace) -> int:
    settings = Settings()
    logs.configure(settings)
    return run_async(serve(settings, group_id=args.group_id, until_idle=args.until_idle))


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


class SignalsDone:
    """Runs a worker; when it returns (drained, or idle), sets ``done`` and ``stop``."""

    def __init__(self, worker: Worker, done: asyncio.Event) -> None:
        self.name = worker.name
        self._worker = worker
        self._done = done

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._worker.run(stop)
        finally:
            self._done.set()
            stop.set()

    def ready(self) -> bool:
        return self._worker.ready()


def delivery_workers(table: SubscriptionTable, make_worker: Callable[[], DeliveryWorker],
                     link: BrokerLink) -> list[Worker]:
    """The link, the table and the delivery worker, ordered so the table outlives the worker's drain."""
    done = asyncio.Event()
    following = TableUntil(table, done)
    return [link, RidesOut(lambda: following, link), SignalsDone(RidesOut(make_worker, link), done)]


async def serve(settings: Settings, *, group_id: str | None = None, until_idle: bool = False) -> int:
    """Run until a signal (or idle). Starts whether or not Kafka answers, and rides out its outages."""
    metrics = Metrics(CollectorRegistry())
    table = SubscriptionTable(settings, metrics=metrics)
    producer = kafka.producer(settings)
    link = BrokerLink(settings, clients=[producer])
    store = SubscriptionStore(settings, table, producer, available=link.ready)

    def worker() -> DeliveryWorker:
        return DeliveryWorker(settings, table, store, metrics, group_id=group_id, until_idle=until_idle)

    supervisor = Supervisor(delivery_workers(table, worker, link), metrics=metrics,
                            metrics_host=settings.metrics.host, metrics_port=settings.metrics.port,
                            shutdown_deadline=settings.delivery.shutdown_grace_s + SHUTDOWN_MARGIN_S)
    try:
        return await supervisor.run()
    finally:
        await link.close()
