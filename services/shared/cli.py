"""Shared subcommand: ``topics ensure``."""

from __future__ import annotations

import argparse
import asyncio
import logging

from services.contract.topics import topic_specs
from services.shared import kafka
from services.shared.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    topics = sub.add_parser("topics", help="manage the pipeline's topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    ensure = topics_sub.add_parser("ensure", help="create every topic the pipeline uses (idempotent)")
    ensure.set_defaults(func=ensure_command)


def quiet_client_logs() -> None:
    """One-shot commands report a Kafka failure themselves, in one line: no aiokafka log lines too.

    Its ERROR records are still created (``kafka.start`` reads the cause of a failed connection
    from them), just not printed."""
    logger = logging.getLogger("aiokafka")
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


def ensure_command(_: argparse.Namespace) -> int:
    settings = Settings()
    quiet_client_logs()
    result = asyncio.run(kafka.ensure_topics(settings))
    specs = {s.name: s for s in topic_specs(settings)}
    isr = settings.kafka.min_insync_replicas
    replicas = f"replicas={settings.kafka.replication_factor}" + (f" min.insync={isr}" if isr else "")
    for name in sorted(result):
        spec = specs[name]
        policy = spec.config.get("cleanup.policy", "delete")
        print(f"{result[name]:8} {name:40} partitions={spec.partitions:<3} {replicas} {policy:8} {spec.purpose}")
    return 0
