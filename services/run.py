"""The composition root: every role is built here, for ``run --role``, ``router``, ``deliver`` and ``api``.

    akece-webhooks run --role all|api|router|delivery   (repeatable; default all)
    akece-webhooks router [--group-id G] [--until-idle] [--max-records N] [--processes N]
    akece-webhooks deliver [--group-id G] [--until-idle] [--processes N]
    akece-webhooks api

Every role runs under the one supervisor with the subscription table it needs. ``all`` runs api,
router and delivery in one process (development, small installs); production runs each role as its
own process and scales by instance count; ``router`` and ``deliver`` also run N processes of the
group on one host (``--processes``, ``services.shared.processes``: a parent, its children run the
same command with ``--processes 1``). The process starts whether or not Kafka answers and rides
out its outages (``services.shared.outage``). The supervisor's deadline is the delivery grace
period plus ``SHUTDOWN_MARGIN_S``; a parent of N processes keeps the same one.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from services.shared import kafka
from services.shared import logging as logs
from services.shared.broker_link import BrokerLink
from services.shared.cli import global_argv, load_settings
from services.shared.exits import Exit
from services.shared.metrics import Metrics, ProcessMetrics
from services.shared.rides_out import RidesOut
from services.shared.runtime import Supervisor, Worker, run_async
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable

ROLES = ("api", "router", "delivery")
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


# --- commands ----------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run pipeline roles under one supervisor", epilog=(
        "examples:\n  akece-webhooks run\n  akece-webhooks --env-file prod.env run --role router --role delivery"))
    run.add_argument("--role", action="append", choices=[*ROLES, "all"],
                     help="role(s) to run; repeat for several (default: all)")
    run.set_defaults(func=run_command)


def register_api(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    api = sub.add_parser("api", help="run the webhook management API (with its subscription table)",
                         epilog="example:\n  AKECE_API_ADMIN_TOKEN=... akece-webhooks api")
    api.set_defaults(func=api_command)


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def add_process_options(parser: argparse.ArgumentParser, env: str) -> None:
    parser.add_argument("--processes", type=_positive, default=None, metavar="N",
                        help=f"processes of this role on this host, all in the consumer group (default: {env}, "
                             "else the CPUs this process may use); 1: one process, no parent")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # INDEX:FD, given by the parent


def register_router(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    router = sub.add_parser("router", help="route events to one delivery record per matching webhook",
                            epilog="example:\n  akece-webhooks --bootstrap-server kafka:9092 router")
    router.add_argument("--group-id", default=None, help="consumer group (default: <topic prefix>.router)")
    router.add_argument("--until-idle", action="store_true",
                        help="exit 0 once every assigned partition is routed to its end (tests, benchmarks)")
    router.add_argument("--max-records", type=int, default=None,
                        help="exit 0 after routing this many events (with --processes 1)")
    add_process_options(router, "AKECE_ROUTER_PROCESSES")
    router.set_defaults(func=router_command)


def register_deliver(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    deliver = sub.add_parser("deliver", help="deliver webhooks: deliveries topic and retry tiers",
                             epilog="examples:\n  akece-webhooks deliver\n  akece-webhooks deliver --processes 4")
    deliver.add_argument("--group-id", default=None, help="consumer group (default <prefix>.delivery)")
    deliver.add_argument("--until-idle", action="store_true",
                         help="exit once every partition is read and nothing is in flight or scheduled")
    add_process_options(deliver, "AKECE_DELIVERY_PROCESSES")
    deliver.set_defaults(func=deliver_command)


def shutdown_deadline(settings: Settings) -> float:
    return settings.delivery.shutdown_grace_s + SHUTDOWN_MARGIN_S


def run_command(args: argparse.Namespace) -> int:
    roles = ROLES if not args.role or "all" in args.role else tuple(args.role)
    settings = load_settings(args)
    logs.configure(settings)
    logs.get("run").info("run.starting", roles=list(roles), metrics_port=settings.metrics.port,
                         api_port=settings.api.port if "api" in roles else None)
    return run_async(run_roles(settings, roles))


def api_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    logs.configure(settings)
    return run_async(run_roles(settings, ("api",)))


def router_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    logs.configure(settings)
    options = RoleOptions(group_id=args.group_id, until_idle=args.until_idle, max_records=args.max_records)
    return run_role(settings, "router", args, options, settings.router.processes)


def deliver_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    logs.configure(settings)
    return run_role(settings, "delivery", args, RoleOptions(args.group_id, args.until_idle),
                    settings.delivery.processes)


def run_role(settings: Settings, role: str, args: argparse.Namespace, options: RoleOptions,
             configured: int | None) -> int:
    """One process of ``role`` (``--processes 1``, or a parent's child), or a parent of N."""
    from services.shared.processes import cpu_count

    if args.child is not None:
        return run_async(run_child(settings, role, options, args.child))
    count = args.processes or configured or cpu_count()
    if count == 1:
        return run_async(run_roles(settings, (role,), options=options))
    if options.max_records is not None:
        print("akece-webhooks: --max-records counts one process's events: use it with --processes 1",
              file=sys.stderr)
        return Exit.USAGE
    return asyncio.run(run_processes(settings, role, args, count))


def child_argv(args: argparse.Namespace) -> list[str]:
    """The command a parent's children run: the parent's own, with ``--processes 1``."""
    argv = [sys.executable, "-m", "services", args.command, "--processes", "1", *global_argv(args)]
    if args.group_id is not None:
        argv += ["--group-id", args.group_id]
    if args.until_idle:
        argv.append("--until-idle")
    return argv


async def run_processes(settings: Settings, role: str, args: argparse.Namespace, count: int) -> int:
    from services.shared.process_health import ProcessHealth
    from services.shared.processes import ProcessGroup

    argv = child_argv(args)
    registry = CollectorRegistry()
    group = ProcessGroup(role, lambda index, fd: [*argv, "--child", f"{index}:{fd}"], count,
                         deadline_s=shutdown_deadline(settings), metrics=ProcessMetrics(registry))
    health = ProcessHealth(group, registry)
    group.install_signals()
    await health.start(settings.metrics.host, settings.metrics.port)
    try:
        return await group.run()
    finally:
        await health.close()


async def run_child(settings: Settings, role: str, options: RoleOptions, child: str) -> int:
    """A parent's child: its logs carry ``process``; it serves health on the socket the parent bound
    for it, and drains when the parent goes away."""
    import structlog

    from services.shared.processes import watch_parent

    index, fd = (int(part) for part in child.split(":"))
    structlog.contextvars.bind_contextvars(process=index)
    stop = asyncio.Event()
    watch_parent(stop)
    return await run_roles(settings, (role,), options=options, stop=stop, health_listener=socket.socket(fileno=fd))
