"""What every command shares: the global options, the settings they give, one-shot logging; ``topics ensure``.

``akece-webhooks`` imports this module for every command, the router and delivery processes too: it
imports the logging, Kafka and output modules only in the functions that use them.

``--bootstrap-server``, ``--topic-prefix`` and ``--env-file`` go before the subcommand or after it
(``akece-webhooks --bootstrap-server h:9092 dlq list`` or ``akece-webhooks dlq list --bootstrap-server
h:9092``). ``--env-file`` reads settings from a dotenv file as pydantic-settings does (the environment
wins over the file); the two others win over both.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from services.shared.errors import ConfigError
from services.shared.settings import Settings

GLOBAL_OPTIONS = ("bootstrap_server", "topic_prefix", "env_file")


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options on ``parser``: on a subcommand they default to "not given", so a value given
    before the subcommand is kept unless it is given again after it."""
    group = parser.add_argument_group("global options (before or after the command)")
    default: Any = None if top else argparse.SUPPRESS
    group.add_argument("--bootstrap-server", metavar="HOST:PORT[,...]", default=default,
                       help="Kafka bootstrap servers (overrides AKECE_KAFKA_BOOTSTRAP_SERVERS)")
    group.add_argument("--topic-prefix", metavar="PREFIX", default=default,
                       help="prefix of every topic name (overrides AKECE_TOPIC_PREFIX)")
    group.add_argument("--env-file", metavar="FILE", type=Path, default=default,
                       help="read AKECE_* settings from this dotenv file (variables already set win)")


def global_argv(args: argparse.Namespace) -> list[str]:
    """The global options given, as arguments for a child process running a command of its own."""
    given = [(f"--{name.replace('_', '-')}", getattr(args, name, None)) for name in GLOBAL_OPTIONS]
    return [part for option, value in given if value is not None for part in (option, str(value))]


def check_env_file(args: argparse.Namespace) -> None:
    """Raise ConfigError when ``--env-file`` names no readable file (pydantic-settings would ignore it)."""
    path: Path | None = getattr(args, "env_file", None)
    if path is None:
        return
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: {exc.strerror or exc}") from None


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings of this command: the environment, ``--env-file``, then the two overriding options."""
    check_env_file(args)
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap_server", None):
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_server}
    if getattr(args, "topic_prefix", None):
        overrides["topic_prefix"] = args.topic_prefix
    return Settings(_env_file=getattr(args, "env_file", None), **overrides)


def one_shot(args: argparse.Namespace) -> Settings:
    """Settings and logging of a one-shot command: warnings only, on stderr (stdout is the command's output),
    and no client library lines (a Kafka failure is the command's own one line)."""
    import structlog

    from services.shared import logging as logs

    settings = load_settings(args)
    logs.configure(settings, level="warning")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    quiet_client_logs()
    return settings


def quiet_client_logs() -> None:
    """One-shot commands report a Kafka failure themselves, in one line: no aiokafka log lines too.

    Its ERROR records are still created (``kafka.start`` reads the cause of a failed connection
    from them), just not printed."""
    logger = logging.getLogger("aiokafka")
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


# --- topics ensure -------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from services.shared import output

    topics = sub.add_parser("topics", help="manage the pipeline's topics",
                            epilog="example:\n  akece-webhooks topics ensure")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    ensure = topics_sub.add_parser(
        "ensure", help="create every topic the pipeline uses (idempotent)",
        epilog="examples:\n  akece-webhooks topics ensure\n"
               "  akece-webhooks --bootstrap-server kafka:9092 --topic-prefix staging topics ensure --json")
    output.add_json_option(ensure)
    ensure.set_defaults(func=ensure_command)


def ensure_command(args: argparse.Namespace) -> int:
    from services.contract.topics import topic_specs
    from services.shared import kafka, output

    settings = one_shot(args)
    result = asyncio.run(kafka.ensure_topics(settings))
    specs = {s.name: s for s in topic_specs(settings)}
    isr = settings.kafka.min_insync_replicas
    rows = [{"topic": name, "result": result[name], "partitions": specs[name].partitions,
             "replication_factor": settings.kafka.replication_factor, "min_insync_replicas": isr,
             "cleanup_policy": specs[name].config.get("cleanup.policy", "delete"), "purpose": specs[name].purpose}
            for name in sorted(result)]
    if args.json:
        output.emit_json(rows)
        return 0
    columns = ("result", "topic", "partitions", "replicas", "min isr", "cleanup", "purpose")
    table = [[output.styled(r["result"], "green" if r["result"] == "created" else ""), r["topic"], r["partitions"],
              r["replication_factor"], isr or "-", r["cleanup_policy"], r["purpose"]] for r in rows]
    output.emit(output.table(columns, table, max_cell=None))
    return 0
