"""``akece-webhooks publish [--dry-run] [FILE|-]``: publish payloads (JSON lines or a JSON array)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from services.publisher.events import OutgoingEvent, prepare
from services.publisher.publisher import Publisher
from services.shared.errors import ValidationError
from services.shared.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    publish = sub.add_parser("publish", help="publish event payloads to the events topic")
    publish.add_argument("file", nargs="?", default="-", help="JSON lines or a JSON array; - for stdin")
    publish.add_argument("--dry-run", action="store_true", help="validate and print, send nothing")
    publish.add_argument("--source", default="akece://core", help="CloudEvents source attribute")
    publish.set_defaults(func=publish_command)


def parse_payloads(text: str) -> list[Any]:
    """A JSON array, a single object, or JSON lines. Raises ValidationError naming the line."""
    stripped = text.strip()
    if not stripped:
        raise ValidationError("no payloads given")
    if stripped.startswith("["):
        try:
            loaded = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"input is not valid JSON: {exc}") from exc
        return list(loaded)
    payloads = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            payloads.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"line {number} is not valid JSON: {exc}") from exc
    return payloads


def prepare_all(payloads: list[Any], source: str) -> tuple[list[OutgoingEvent], list[str]]:
    events, errors = [], []
    for number, payload in enumerate(payloads, 1):
        try:
            if not isinstance(payload, dict):
                raise ValidationError("payload must be a JSON object")
            events.append(prepare(payload, source=source))
        except ValidationError as exc:
            errors.append(f"payload {number}: {exc}")
    return events, errors


def publish_command(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    try:
        events, errors = prepare_all(parse_payloads(text), args.source)
    except ValidationError as exc:
        print(f"refused: {exc}; nothing was published", file=sys.stderr)
        return 2
    if errors:
        for error in errors:
            print(f"refused: {error}", file=sys.stderr)
        print(f"{len(errors)} invalid payload(s); nothing was published", file=sys.stderr)
        return 2
    if args.dry_run:
        for event in events:
            print(f"valid    {event.event_type:30} account={event.account_id} key={event.key.decode()}")
        print(f"{len(events)} payload(s) valid; dry run, nothing sent")
        return 0
    return asyncio.run(_send(events, args.source))


async def _send(events: list[OutgoingEvent], source: str) -> int:
    async with Publisher(Settings(), source=source) as publisher:
        published = await publisher.send_prepared(events)
    for item in published:
        e = item.event
        print(f"published {e.event_type:30} id={e.event_id} account={e.account_id} "
              f"key={e.key.decode()} partition={item.partition} offset={item.offset}")
    return 0
