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

import orjson

from services.admin.service import webhook_view
from services.delivery.http import HttpSender
from services.delivery.ping import PingResult, send_test
from services.shared import kafka
from services.shared import logging as logs
from services.shared.cli import quiet_client_logs
from services.shared.exits import Exit
from services.shared.netguard import NetworkGuard
from services.shared.settings import Settings
from services.shared.subscriptions import caught_up_table

READY_TIMEOUT_S = 60.0


def register(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``get`` and ``test`` to the ``webhooks`` subcommands."""
    get = actions.add_parser("get", help="show one webhook (secret masked)",
                             description="Show one webhook. Example: akece-webhooks webhooks get 42")
    get.add_argument("id", type=int, help="the webhook id")
    test = actions.add_parser(
        "test", help="send a signed test delivery (event 'ping') and print status, latency and response",
        description="POST a signed 'ping' to the webhook now (not retried; a disabled webhook too) and record "
                    "it in the attempt log as a test. Example: akece-webhooks webhooks test 42")
    test.add_argument("id", type=int, help="the webhook id")
    for action in (get, test):
        action.add_argument("--json", action="store_true", help="print JSON instead of text")
        action.set_defaults(func=tools_command)


def tools_command(args: argparse.Namespace) -> int:
    settings = Settings()
    logs.configure(settings, level="warning")
    quiet_client_logs()
    return asyncio.run(_run(settings, args))



async def _run(settings: Settings, args: argparse.Namespace) -> int:
    async with caught_up_table(settings, timeout=READY_TIMEOUT_S) as table:
        webhook = table.get(args.id)
        if webhook is None:
            print(f"webhook {args.id} not found", file=sys.stderr)
            return Exit.NOT_FOUND
        if args.webhooks_command == "get":
            view = webhook_view(webhook, time.time())
            print(orjson.dumps(view).decode() if args.json else format_view(view))
            return 0
        async with HttpSender(settings.http, NetworkGuard(settings.allowed_private_cidrs)) as sender, \
                kafka.started(kafka.producer(settings)) as producer:
            sent = await send_test(settings, webhook, sender, producer)
    print(orjson.dumps(test_view(sent, args.id)).decode() if args.json else format_test(sent, args.id))
    return Exit.OK if sent.result.ok else Exit.FAILED


def format_view(view: dict[str, Any]) -> str:
    width = max(len(k) for k in view)
    lines = []
    for key, value in view.items():
        if isinstance(value, list):
            shown = ",".join(map(str, value))
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        else:
            shown = "" if value is None else str(value)
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)


def test_view(sent: PingResult, webhook_id: int) -> dict[str, Any]:
    result = sent.result
    return {"webhook_id": webhook_id, "delivery_id": sent.delivery_id, "event": "ping", "ok": result.ok,
            "status": result.status, "error_class": result.error_class, "error": result.error_message,
            "latency_ms": sent.latency_ms, "response_excerpt": sent.excerpt}


def format_test(sent: PingResult, webhook_id: int) -> str:
    result = sent.result
    if result.status is not None:
        outcome = f"HTTP {result.status}" + ("" if result.ok else " (not 2xx: a real delivery would be retried)")
    else:
        outcome = f"failed: {result.error_class}: {result.error_message}"
    lines = [f"test delivery {sent.delivery_id} (event ping) to webhook {webhook_id}",
             f"status    {outcome}", f"latency   {sent.latency_ms:g} ms"]
    if result.status is not None:
        lines.append(f"response  {sent.excerpt or '(empty)'}")
    return "\n".join(lines)
