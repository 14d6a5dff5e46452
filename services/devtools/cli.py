"""``akece-webhooks kafka start|stop|status|reset``: the local broker's commands."""

from __future__ import annotations

import argparse

from services.devtools.kafka_local import add_kafka_parser


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_kafka_parser(sub)
