"""The composition root: ``akece-webhooks run --role all|api|router|delivery``.

Every role runs under the one supervisor with the subscription table it needs. ``all`` runs api,
router and delivery in one process (development, small installs); production runs each role as its
own process and scales by instance count.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from services.shared import kafka
from services.shared import logging as logs
from services.shared.metrics import Metrics
from services.shared.outage import BrokerLink, RidesOut
from services.shared.runtime import Supervisor, Worker, run_async
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable

ROLES = ("api", "router", "delivery")


def table_metrics(metrics: Metrics) -> SubscriptionTable.OnChange:
    def update(table: SubscriptionTable) -> None:
        webhooks = table.all()
        metrics.subscriptions.set(len(webhooks))
        metrics.webhooks_disabled.set(sum(1 for w in webhooks if not w.enabled))

    return update


def build_workers(settings: Settings, roles: Sequence[str], table: SubscriptionTable, store: SubscriptionStore,
                  metrics: Metrics, link: BrokerLink) -> list[Worker]:
    """The link first, then the table and the roles; what reads Kafka rides out its outages."""
    workers: list[Worker] = [link, RidesOut(lambda: table, link)]
    if "api" in roles:  # serves through an outage: reads from the table, writes refused with 503
        from services.admin.app import ApiWorker

        workers.append(ApiWorker(settings, table, store, metrics))
    if "router" in roles:
        from services.router.worker import RouterWorker

        workers.append(RidesOut(lambda: RouterWorker(settings, table, metrics), link))
    if "delivery" in roles:
        from services.delivery.worker import DeliveryWorker

        workers.append(RidesOut(lambda: DeliveryWorker(settings, table, store, metrics), link))
    return workers


async def run_roles(settings: Settings, roles: Sequence[str], *, registry: CollectorRegistry | None = None,
                    stop: asyncio.Event | None = None, install_signals: bool = True) -> int:
    """Run ``roles`` until a signal (or ``stop``). Returns the process exit code.

    Starts whether or not Kafka answers: the link starts the store's producer once it does.
    """
    if "api" in roles:  # refuse bad tokens at once, before waiting for Kafka
        from services.shared.auth import TokenAuthenticator

        TokenAuthenticator.from_settings(settings)
    metrics = Metrics(registry or CollectorRegistry())
    table = SubscriptionTable(settings, on_change=table_metrics(metrics), metrics=metrics)
    producer = kafka.producer(settings)
    link = BrokerLink(settings, clients=[producer])
    store = SubscriptionStore(settings, table, producer, available=link.ready)
    supervisor = Supervisor(
        build_workers(settings, roles, table, store, metrics, link), metrics=metrics,
        metrics_host=settings.metrics.host, metrics_port=settings.metrics.port,
        shutdown_deadline=settings.delivery.shutdown_grace_s + 10, stop=stop)
    for worker in supervisor.states:
        bind = getattr(worker.worker, "bind_health", None)
        if bind is not None:  # the API serves /healthz and /readyz of the whole process
            bind(supervisor.states)
    try:
        return await supervisor.run(install_signals=install_signals)
    finally:
        await link.close()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run pipeline roles under one supervisor")
    run.add_argument("--role", action="append", choices=[*ROLES, "all"],
                     help="role(s) to run; repeat for several (default: all)")
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    roles = ROLES if not args.role or "all" in args.role else tuple(args.role)
    settings = Settings()
    logs.configure(settings)
    logs.get("run").info("run.starting", roles=list(roles), metrics_port=settings.metrics.port,
                         api_port=settings.api.port if "api" in roles else None)
    return run_async(run_roles(settings, roles))
