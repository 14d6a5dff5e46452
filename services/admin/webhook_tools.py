"""``akece-webhooks webhooks get ID`` and ``akece-webhooks webhooks test ID``.

``get`` shows one webhook (its secret masked). ``test`` POSTs a signed ``ping`` to it at once
(``services.delivery.ping``), prints the status, the latency and the start of the response, and
records the attempt in the attempt log as a test. Exit codes: 0 the webhook answered 2xx (``get``:
found), 1 it did not (a status or a connection error), 4 no webhook has that id
(``services.shared.exits``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from rich.table import Table

from services.admin.service import webhook_view
from services.delivery.http import HttpSender
from services.delivery.ping import PingResult, send_test
from services.shared import kafka, output
from services.shared.cli import one_shot
from services.shared.exits import Exit
from services.shared.netguard import NetworkGuard
from services.shared.settings import Settings
from services.shared.subscriptions import caught_up_table

READY_TIMEOUT_S = 60.0


def register(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``get`` and ``test`` to the ``webhooks`` subcommands."""
    get = actions.add_parser("get", help="show one webhook (secret masked)", description="Show one webhook.",
                             epilog="examples:\n  akece-webhooks webhooks get 42\n"
                                    "  akece-webhooks webhooks get 42 --json")
    get.add_argument("id", type=int, help="the webhook id")
    test = actions.add_parser(
        "test", help="send a signed test delivery (event 'ping') and print status, latency and response",
        description="POST a signed 'ping' to the webhook now (not retried; a disabled webhook too) and record "
                    "it in the attempt log as a test.",
        epilog="example:\n  akece-webhooks webhooks test 42")
    test.add_argument("id", type=int, help="the webhook id")
    for action in (get, test):
        output.add_json_option(action, "text")
        action.set_defaults(func=tools_command)


def tools_command(args: argparse.Namespace) -> int:
    return asyncio.run(_run(one_shot(args), args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    async with caught_up_table(settings, timeout=READY_TIMEOUT_S) as table:
        webhook = table.get(args.id)
        if webhook is None:
            print(f"webhook {args.id} not found", file=sys.stderr)
            return Exit.NOT_FOUND
        if args.webhooks_command == "get":
            view = webhook_view(webhook, time.time())
            output.emit_json(view) if args.json else output.emit(format_view(view))
            return 0
        async with HttpSender(settings.http, NetworkGuard(settings.allowed_private_cidrs)) as sender, \
                kafka.started(kafka.producer(settings)) as producer:
            sent = await send_test(settings, webhook, sender, producer)
    output.emit_json(test_view(sent, args.id)) if args.json else output.emit(*format_test(sent, args.id))
    return Exit.OK if sent.result.ok else Exit.FAILED


def format_view(view: dict[str, Any]) -> Table:
    return output.pairs([(key, _shown(value)) for key, value in view.items()])


def _shown(value: object) -> object:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return output.styled("yes", "green") if value else output.styled("no", "red")
    return "" if value is None else value


def test_view(sent: PingResult, webhook_id: int) -> dict[str, Any]:
    result = sent.result
    return {"webhook_id": webhook_id, "delivery_id": sent.delivery_id, "event": "ping", "ok": result.ok,
            "status": result.status, "error_class": result.error_class, "error": result.error_message,
            "latency_ms": sent.latency_ms, "response_excerpt": sent.excerpt}


def format_test(sent: PingResult, webhook_id: int) -> tuple[str, Table]:
    result = sent.result
    if result.status is not None:
        outcome = output.styled(f"HTTP {result.status}" + (
            "" if result.ok else " (not 2xx: a real delivery would be retried)"), "green" if result.ok else "red")
    else:
        outcome = output.styled(f"failed: {result.error_class}: {result.error_message}", "red")
    rows: list[tuple[str, object]] = [("status", outcome), ("latency", f"{sent.latency_ms:g} ms")]
    if result.status is not None:
        rows.append(("response", sent.excerpt or "(empty)"))
    return f"test delivery {sent.delivery_id} (event ping) to webhook {webhook_id}", output.pairs(rows)
