"""``akece-webhooks kafka start|stop|status|reset``: the local broker's commands.

``kafka start`` takes its port from ``--bootstrap-server`` (or an ``--env-file``'s
``AKECE_KAFKA_BOOTSTRAP_SERVERS``) when that names this machine and ``--port`` is not given.
"""

from __future__ import annotations

import argparse
import re

from services.devtools.kafka_commands import add_kafka_parser, kafka_cli
from services.shared.cli import load_settings

EXAMPLES = {
    "kafka": "akece-webhooks kafka start",
    "start": "akece-webhooks kafka start --port 9092\n  akece-webhooks kafka start --nodes 3",
    "stop": "akece-webhooks kafka stop",
    "status": "akece-webhooks kafka status",
    "reset": "akece-webhooks kafka reset --data-dir .kafka/data",
}
LOCAL = re.compile(r"(?:\w+://)?(?:127\.0\.0\.1|localhost):(\d+)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    kafka = add_kafka_parser(sub)
    parsers = {"kafka": kafka, **_actions(kafka)}
    for name, parser in parsers.items():
        parser.epilog = ("examples:\n  " if "\n" in EXAMPLES[name] else "example:\n  ") + EXAMPLES[name]
        parser.set_defaults(func=kafka_command)


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def kafka_command(args: argparse.Namespace) -> int:
    if args.kafka_action == "start" and args.port is None and (args.bootstrap_server or args.env_file):
        first = load_settings(args).kafka.bootstrap_servers.split(",")[0].strip()
        match = LOCAL.fullmatch(first)
        args.port = int(match.group(1)) if match else None
    return kafka_cli(args)
