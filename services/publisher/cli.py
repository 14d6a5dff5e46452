"""``akece-webhooks publish [--dry-run] [FILE|-|--example EVENT]``: publish payloads (a JSON object, a JSON array
or JSON lines), or a realistic example of one event (``schemas.examples``) for an account and conversation.

Every payload is validated before anything is sent. Exit codes: 0 published (or valid, with
``--dry-run``), 1 Kafka unreachable, topic missing or no acknowledgement in time, 2 input refused
(unreadable, not JSON or invalid; nothing was sent) or the broker refused the connection settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from schemas import EVENT_NAMES
from schemas.examples import example
from services.publisher.events import OutgoingEvent, prepare
from services.publisher.publisher import Publisher
from services.shared import output
from services.shared.cli import one_shot
from services.shared.errors import KafkaSettingsRefusedError, KafkaUnavailableError, ValidationError
from services.shared.exits import Exit
from services.shared.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    publish = sub.add_parser("publish", help="publish event payloads to the events topic", epilog=(
        "examples:\n  akece-webhooks publish --example message_created --account 7\n"
        "  akece-webhooks publish events.jsonl\n  cat payload.json | akece-webhooks publish --dry-run -"))
    publish.add_argument("file", nargs="?", default="-", help="a JSON object, a JSON array or JSON lines; - for stdin")
    publish.add_argument("--dry-run", action="store_true", help="validate and print, send nothing")
    publish.add_argument("--source", default="akece://core", help="CloudEvents source attribute")
    publish.add_argument("--example", metavar="EVENT", choices=EVENT_NAMES,
                         help="publish a realistic example of EVENT instead of reading FILE "
                              "(e.g. --example message_created)")
    publish.add_argument("--account", type=int, default=1, help="account id of the --example payload (default 1)")
    publish.add_argument("--conversation", type=int, default=1,
                         help="conversation display id of the --example payload (default 1)")
    output.add_json_option(publish, "one line per event (event id, key, partition, offset)")
    publish.set_defaults(func=publish_command)


def parse_payloads(text: str) -> list[Any]:
    """One JSON document (an object, possibly pretty-printed, or an array of them) or JSON lines.

    Raises ValidationError naming the line (JSON lines) or the position (one document).
    """
    stripped = text.strip()
    if not stripped:
        raise ValidationError("no payloads given")
    try:
        loaded = orjson.loads(stripped)
    except orjson.JSONDecodeError as exc:
        if stripped.startswith("[") or len(stripped.splitlines()) == 1:
            raise ValidationError(f"input is not valid JSON: {exc}") from exc
        return _json_lines(stripped, exc)
    return list(loaded) if isinstance(loaded, list) else [loaded]


def _json_lines(text: str, as_document: orjson.JSONDecodeError) -> list[Any]:
    payloads = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            payloads.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            if not payloads:  # not even the first line parses: report it as one (broken) document
                raise ValidationError(f"input is neither one JSON document ({as_document}) nor JSON lines "
                                      f"(line {number}: {exc})") from exc
            raise ValidationError(f"line {number} is not valid JSON: {exc}") from exc
    return payloads


def read_input(name: str) -> str:
    """The text of FILE, or of stdin for ``-``. Raises ValidationError naming the file."""
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read {name}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValidationError(f"cannot read {name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


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
    try:
        events, errors = prepare_all(_payloads(args), args.source)
    except ValidationError as exc:
        print(f"refused: {exc}; nothing was published", file=sys.stderr)
        return Exit.USAGE
    if errors:
        for error in errors:
            print(f"refused: {error}", file=sys.stderr)
        print(f"{len(errors)} invalid payload(s); nothing was published", file=sys.stderr)
        return Exit.USAGE
    if args.dry_run:
        if args.json:
            output.emit_json([_event_json(event) for event in events])
            return 0
        for event in events:
            print(f"valid    {event.event_type:30} account={event.account_id} key={event.key.decode()}")
        print(f"{len(events)} payload(s) valid; dry run, nothing sent")
        return 0
    try:
        return asyncio.run(_send(one_shot(args), events, args))
    except KafkaUnavailableError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return Exit.USAGE if isinstance(exc, KafkaSettingsRefusedError) else Exit.FAILED


def _payloads(args: argparse.Namespace) -> list[Any]:
    if args.example is None:
        return parse_payloads(read_input(args.file))
    if args.file != "-":
        raise ValidationError(f"give FILE or --example, not both (got {args.file} and --example {args.example})")
    return [example(args.example, account_id=args.account, conversation_id=args.conversation)]


def _event_json(event: OutgoingEvent) -> dict[str, Any]:
    return {"event": event.event_type, "id": event.event_id, "account_id": event.account_id,
            "key": event.key.decode()}


async def _send(settings: Settings, events: list[OutgoingEvent], args: argparse.Namespace) -> int:
    async with Publisher(settings, source=args.source) as publisher:
        published = await publisher.send_prepared(events)
    if args.json:
        output.emit_json([{**_event_json(item.event), "partition": item.partition, "offset": item.offset}
                          for item in published])
        return 0
    for item in published:
        e = item.event
        print(f"published {e.event_type:30} id={e.event_id} account={e.account_id} "
              f"key={e.key.decode()} partition={item.partition} offset={item.offset}")
    return 0
