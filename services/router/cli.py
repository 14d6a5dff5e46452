"""``akece-webhooks router``: the subscription table and the router under the one supervisor."""

from __future__ import annotations

import argparse
import asyncio

from prometheus_client import CollectorRegistry

from services.router.worker import RouterWorker
from services.shared import logging as logs
from services.shared.metrics import Metrics
from services.shared.outage import BrokerLink, RidesOut
from services.shared.runtime import Supervisor, Worker, run_async
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    router = sub.add_parser("router", help="route events to one delivery record per matching webhook")
    router.add_argument("--group-id", default=None, help="consumer group (default: <topic prefix>.router)")
    router.add_argument("--until-idle", action="store_true",
                        help="exit 0 once every assigned partition is routed to its end (tests, benchmarks)")
    router.add_argument("--max-records", type=int, default=None, help="exit 0 after routing this many events")
    router.set_defaults(func=router_command)


def router_command(args: argparse.Namespace) -> int:
    settings = Settings()
    logs.configure(settings)
    return run_async(run_router(settings, group_id=args.group_id, until_idle=args.until_idle,
                                max_records=args.max_records))


class _StopWhenDone:
    """Runs a worker that may finish by itself (``until_idle``), then stops the other workers."""

    def __init__(self, worker: Worker, stop: asyncio.Event) -> None:
        self._worker = worker
        self._stop = stop
        self.name = worker.name

    def ready(self) -> bool:
        return self._worker.ready()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._worker.run(stop)
        finally:
            self._stop.set()


async def run_router(settings: Settings, *, group_id: str | None = None, until_idle: bool = False,
                     max_records: int | None = None, registry: CollectorRegistry | None = None,
                     stop: asyncio.Event | None = None, install_signals: bool = True) -> int:
    """Run the table and the router until a signal, ``stop``, or the router's own end. The exit code."""
    metrics = Metrics(registry or CollectorRegistry())
    stop = stop or asyncio.Event()
    table = SubscriptionTable(settings, metrics=metrics)

    def router() -> RouterWorker:
        return RouterWorker(settings, table, metrics, group_id=group_id, until_idle=until_idle,
                            max_records=max_records)

    link = BrokerLink(settings)  # starts whether or not Kafka answers, and rides out its outages
    workers: list[Worker] = [link, RidesOut(lambda: table, link), _StopWhenDone(RidesOut(router, link), stop)]
    supervisor = Supervisor(workers, metrics=metrics, metrics_host=settings.metrics.host,
                            metrics_port=settings.metrics.port,
                            shutdown_deadline=settings.delivery.shutdown_grace_s + 10, stop=stop)
    return await supervisor.run(install_signals=install_signals)
