"""``akece-webhooks webhooks list|create|update|delete|rotate-secret`` (``get`` and
``test``: ``services.admin.webhook_tools``).

The ``webhooks`` commands talk to Kafka through the same table and store as the API (and the same
validation and network guard), so they work without the API running. They print a table by
default and JSON with ``--json``; create and rotate-secret show the signing secret once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from rich.console import RenderableType
from rich.table import Table

from services.admin import webhook_tools
from services.admin.service import WebhookService, webhook_view
from services.admin.validation import Invalid
from services.shared import kafka, output
from services.shared.cli import one_shot
from services.shared.exits import Exit
from services.shared.netguard import NetworkGuard
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, caught_up_table
from services.shared.webhooks import Webhook

READY_TIMEOUT_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    hooks = sub.add_parser("webhooks", help="manage webhooks directly in Kafka (no API needed)",
                           epilog="example:\n  akece-webhooks webhooks list --account 7")
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list webhooks", epilog=(
        "examples:\n  akece-webhooks webhooks list\n  akece-webhooks webhooks list --account 7 --json"))
    listing.add_argument("--account", type=int, help="only this account's webhooks")
    create = actions.add_parser("create", help="create a webhook (prints its secret once)", epilog=(
        "example:\n  akece-webhooks webhooks create --account 7 --url https://crm.example.com/hooks/akece "
        "--subscriptions message_created,conversation_status_changed"))
    create.add_argument("--account", type=int, required=True, help="the account the webhook belongs to")
    create.add_argument("--url", required=True, help="where deliveries are POSTed (http or https)")
    update = actions.add_parser("update", help="change a webhook", epilog=(
        "examples:\n  akece-webhooks webhooks update 42 --url https://crm.example.com/v2/hooks\n"
        "  akece-webhooks webhooks update 42 --disable --reason maintenance"))
    update.add_argument("id", type=int, help="the webhook id")
    update.add_argument("--url", help="the new URL")
    for action in (create, update):
        action.add_argument("--name", help="a label for people")
        action.add_argument("--subscriptions", help="comma-separated events (create: the eight defaults)")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_true", default=None,
                       help="deliver to it again (clears disabled_reason)")
    state.add_argument("--disable", dest="enabled", action="store_false",
                       help="stop delivering (its deliveries are dead-lettered as webhook_disabled)")
    update.add_argument("--reason", help="disabled_reason with --disable (default disabled_by_api)")
    delete = actions.add_parser("delete", help="delete a webhook",
                                epilog="example:\n  akece-webhooks webhooks delete 42")
    delete.add_argument("id", type=int, help="the webhook id")
    rotate = actions.add_parser("rotate-secret", help="new signing secret; the old one signs for the overlap",
                                epilog="example:\n  akece-webhooks webhooks rotate-secret 42 --overlap-s 3600")
    rotate.add_argument("id", type=int, help="the webhook id")
    rotate.add_argument("--overlap-s", type=float,
                        help="seconds the old secret keeps signing too (default: AKECE_API_SECRET_OVERLAP_S)")
    for action in (listing, create, update, delete, rotate):
        output.add_json_option(action)
        action.set_defaults(func=webhooks_command)
    webhook_tools.register(actions)


# --- webhooks ----------------------------------------------------------------------------------
@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[WebhookService]:
    """A service over a caught-up table and a started producer, for one command."""
    async with kafka.started(kafka.producer(settings)) as producer, \
            caught_up_table(settings, timeout=READY_TIMEOUT_S) as table:
        yield WebhookService(table, SubscriptionStore(settings, table, producer),
                             NetworkGuard(settings.allowed_private_cidrs),
                             secret_overlap_s=settings.api.secret_overlap_s,
                             max_webhooks=settings.api.max_webhooks_per_account)


def webhooks_command(args: argparse.Namespace) -> int:
    return asyncio.run(_webhooks(one_shot(args), args))


async def _webhooks(settings: Settings, args: argparse.Namespace) -> int:
    async with opened(settings) as service:
        try:
            result = await _dispatch(service, args)
        except Invalid as exc:
            print(f"refused: {exc.message}", file=sys.stderr)
            return Exit.USAGE
        if result is None:
            print(f"webhook {args.id} not found", file=sys.stderr)
            return Exit.NOT_FOUND
        reveal = args.webhooks_command in ("create", "rotate-secret")
        _print(result, service.now(), reveal=reveal, as_json=args.json)
    return 0


Result = list[Webhook] | Webhook | bool | None


async def _dispatch(service: WebhookService, args: argparse.Namespace) -> Result:
    """list -> webhooks; create, update, rotate-secret -> the webhook; delete -> True; None: not found."""
    command = args.webhooks_command
    if command == "list":
        hooks = service.table.all() if args.account is None else service.for_account(args.account)
        return sorted(hooks, key=lambda w: (w.account_id, w.id))
    if command == "create":
        return await service.create(args.account, _body(args))
    existing = service.table.get(args.id)
    if existing is None:
        return None
    if command == "update":
        return await service.update(existing.account_id, args.id, _body(args))
    if command == "delete":
        return await service.delete(existing.account_id, args.id) or None
    return await service.rotate_secret(existing.account_id, args.id, args.overlap_s)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for field in ("url", "name"):
        if getattr(args, field, None) is not None:
            body[field] = getattr(args, field)
    if args.subscriptions is not None:
        body["subscriptions"] = [e.strip() for e in args.subscriptions.split(",") if e.strip()]
    if getattr(args, "enabled", None) is not None:
        body["enabled"] = args.enabled
        if args.reason:
            body["disabled_reason"] = args.reason
    return body


def _print(result: list[Webhook] | Webhook | bool, now: float, *, reveal: bool, as_json: bool) -> None:
    if isinstance(result, bool):
        data: Any = {"deleted": True}
        shown: RenderableType = "deleted"
    elif isinstance(result, Webhook):
        data = webhook_view(result, now, reveal=reveal)
        shown = webhooks_table([data], with_secret=reveal)
    else:
        data = [webhook_view(w, now) for w in result]
        shown = webhooks_table(data)
    if as_json:
        output.emit_json(data)
    else:
        output.emit(shown)


def webhooks_table(hooks: Sequence[dict[str, Any]], *, with_secret: bool = False) -> Table:
    columns = ["id", "account_id", "enabled", "name", "url", "subscriptions", *(["secret"] if with_secret else [])]
    return output.table(columns, [[_cell(h, c) for c in columns] for h in hooks], max_cell=None)


def _cell(hook: dict[str, Any], column: str) -> object:
    value = hook.get(column)
    if column == "subscriptions":
        return ",".join(value or [])
    if column == "enabled":
        return output.styled("yes", "green") if value else output.styled(f"no ({hook.get('disabled_reason')})", "red")
    return value
