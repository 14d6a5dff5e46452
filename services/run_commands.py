"""The commands that run roles; each builds them through the composition root (``services.run``).

    akece-webhooks run --role all|api|router|delivery   (repeatable; default all)
    akece-webhooks router [--group-id G] [--until-idle] [--max-records N] [--processes N]
    akece-webhooks deliver [--group-id G] [--until-idle] [--processes N]
    akece-webhooks api

``router`` and ``deliver`` with ``--processes N`` (N > 1) run a parent whose N children run the same
command with ``--processes 1`` (``services.shared.processes``).

Registering these commands imports nothing heavy: each command imports the composition root when it
runs, so a router or delivery process loads only what its roles use (``tests/test_role_imports.py``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from services.shared.cli import global_argv, load_settings
from services.shared.digits import ascii_int
from services.shared.exits import Exit

if TYPE_CHECKING:
    from services.run import RoleOptions
    from services.shared.settings import Settings

ROLES = ("api", "router", "delivery")


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
    number = ascii_int(text)
    if number is None or number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return number


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


def without_rich(roles: tuple[str, ...]) -> None:
    """structlog imports rich when it is installed, for tracebacks these processes never render with it
    (``services.shared.logging`` formats exceptions before its renderer). A process of router and delivery
    roles only goes without (3 MB, 30 ms of start-up): once structlog is imported it is too late, and a
    process that already has them (tests calling ``main``) is left as it is."""
    if "api" not in roles and "structlog" not in sys.modules:
        sys.modules.setdefault("rich", None)  # type: ignore[arg-type]


def run_command(args: argparse.Namespace) -> int:
    roles = ROLES if not args.role or "all" in args.role else tuple(args.role)
    without_rich(roles)
    from services.run import run_roles
    from services.shared import logging as logs
    from services.shared.runtime import run_async

    settings = load_settings(args)
    logs.configure(settings)
    logs.get("run").info("run.starting", roles=list(roles), metrics_port=settings.metrics.port,
                         api_port=settings.api.port if "api" in roles else None)
    return run_async(run_roles(settings, roles))


def api_command(args: argparse.Namespace) -> int:
    from services.run import run_roles
    from services.shared import logging as logs
    from services.shared.runtime import run_async

    settings = load_settings(args)
    logs.configure(settings)
    return run_async(run_roles(settings, ("api",)))


def router_command(args: argparse.Namespace) -> int:
    without_rich(("router",))
    from services.run import RoleOptions
    from services.shared import logging as logs

    settings = load_settings(args)
    logs.configure(settings)
    options = RoleOptions(group_id=args.group_id, until_idle=args.until_idle, max_records=args.max_records)
    return run_role(settings, "router", args, options, settings.router.processes)


def deliver_command(args: argparse.Namespace) -> int:
    without_rich(("delivery",))
    from services.run import RoleOptions
    from services.shared import logging as logs

    settings = load_settings(args)
    logs.configure(settings)
    return run_role(settings, "delivery", args, RoleOptions(args.group_id, args.until_idle),
                    settings.delivery.processes)


def run_role(settings: Settings, role: str, args: argparse.Namespace, options: RoleOptions,
             configured: int | None) -> int:
    """One process of ``role`` (``--processes 1``, or a parent's child), or a parent of N."""
    import asyncio

    from services.run import run_roles
    from services.shared.processes import cpu_count
    from services.shared.runtime import run_async

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
    from prometheus_client import CollectorRegistry

    from services.run import shutdown_deadline
    from services.shared.metrics import ProcessMetrics
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
    import asyncio
    import socket

    import structlog

    from services.run import run_roles
    from services.shared.processes import watch_parent

    index, fd = (int(part) for part in child.split(":"))
    structlog.contextvars.bind_contextvars(process=index)
    stop = asyncio.Event()
    watch_parent(stop)
    return await run_roles(settings, (role,), options=options, stop=stop, health_listener=socket.socket(fileno=fd))
