"""``dlq list|show|replay``, ``recover`` and ``status``: the SRE's tools for what failed.

Output for people goes to stdout (tables, plans, summaries; ``--json`` for scripts); progress and
logs go to stderr. Exit codes (``services.shared.exits``): 0 done (or dry run / nothing to do), 1
aborted, 2 an error (bad input, Kafka unreachable), 3 refused (already replayed, or running
elsewhere: also when an identical run started at the same moment won the claim; the one-line
``refused: ...`` on stderr names it), 4 not found (no such dead letter or webhook).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from services.contract.attempts import AttemptRecord
from services.contract.dead_letters import DlqFilter
from services.contract.topics import Topics
from services.ops import render
from services.ops import status as status_mod
from services.ops.attempts import delivery_attempts
from services.ops.dlq import find_dead_letters, list_dead_letters
from services.replay.dlq_source import replay
from services.replay.plans import Options, Plan, ReplayRefusedError, Summary
from services.replay.progress import Progress
from services.replay.recover import recover
from services.replay.runs import RunBook
from services.replay.window import Window, reader
from services.shared import kafka, output
from services.shared.cli import one_shot
from services.shared.digits import ascii_int
from services.shared.errors import ValidationError
from services.shared.exits import Exit
from services.shared.runtime import run_async
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, caught_up_table

TABLE_READY_S = 30.0
DEFAULT_SINCE = "24h"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay",
                         epilog="example:\n  akece-webhooks dlq list --since 2h")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list dead letters of a time window", epilog=(
        "examples:\n  akece-webhooks dlq list --since 2h --reason exhausted\n"
        "  akece-webhooks dlq list --webhook 42 --limit 0 --json"))
    _filters(listing)
    listing.add_argument("--limit", type=parse_limit, default=100, metavar="N",
                         help="newest N shown (0: all; default 100)")
    output.add_json_option(listing, "a table (every matching dead letter, one object each)")
    listing.set_defaults(func=_sync(list_command))

    show = actions.add_parser("show", help="one dead letter in full: body, headers, attempts, webhook state",
                              epilog="example:\n  akece-webhooks dlq show 3f2a9c4e-7d1b-5e8f-9a0b-1c2d3e4f5a6b")
    show.add_argument("delivery_id", help="the delivery id (X-Chatwoot-Delivery / webhook-id of its attempts)")
    show.add_argument("--since", default="30d", help="how far back to look (default 30d)")
    output.add_json_option(show, "text and tables")
    show.set_defaults(func=_sync(show_command))

    again = actions.add_parser("replay", help="re-enqueue matching dead letters (once)", epilog=(
        "examples:\n  akece-webhooks dlq replay --webhook 42 --since 6h --dry-run\n"
        "  akece-webhooks dlq replay --reason exhausted --since 1d --rate 200/s --yes\n"
        "  akece-webhooks dlq replay --reason exhausted --since 1d --limit 5 --yes   # a canary first"))
    _filters(again)
    again.add_argument("--limit", type=parse_limit, default=0, metavar="N",
                       help="re-enqueue at most N, the oldest first; the same command again sends the next "
                            "ones (0: all; default 0)")
    _run_flags(again)
    again.set_defaults(func=_sync(replay_command))

    rec = sub.add_parser("recover", help="re-fan-out one webhook's events from the events topic", epilog=(
        "example:\n  akece-webhooks recover --webhook 42 --since 2026-12-01T08:00:00Z --until 2026-12-01T10:00:00Z"))
    rec.add_argument("--webhook", type=int, required=True, help="the webhook id whose events are sent again")
    rec.add_argument("--since", required=True, help="ISO-8601 or relative (2h, 30m, 7d)")
    rec.add_argument("--until", help="ISO-8601 or relative (default: now)")
    _run_flags(rec)
    rec.set_defaults(func=_sync(recover_command))

    stat = sub.add_parser("status", help="one screen for the on-call: lag, retry tiers, DLQ, disabled webhooks",
                          epilog="examples:\n  akece-webhooks status\n  akece-webhooks status --json")
    output.add_json_option(stat, "tables")
    stat.add_argument("--max-scan", type=int, default=status_mod.DEFAULT_MAX_SCAN,
                      help=f"most DLQ records read to count reasons (default {status_mod.DEFAULT_MAX_SCAN})")
    stat.set_defaults(func=_sync(status_command))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", help="account id (comma-separated for several)")
    parser.add_argument("--webhook", help="webhook id (comma-separated for several)")
    parser.add_argument("--event", help="event name (comma-separated for several)")
    parser.add_argument("--reason", help="DLQ reason, e.g. exhausted, webhook_disabled (comma-separated)")
    parser.add_argument("--since", default=DEFAULT_SINCE, help="ISO-8601 or relative: 2h, 30m, 7d (default 24h)")
    parser.add_argument("--until", help="ISO-8601 or relative (default: now)")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="count and show a sample; send nothing")
    parser.add_argument("--rate", type=parse_rate, help="records per second, e.g. 200 or 200/s (default: unthrottled)")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--enable", action="store_true", help="re-enable disabled webhooks first")
    parser.add_argument("--force", action="store_true", help="send again what an earlier run already re-enqueued")
    parser.add_argument("--checkpoint-every", type=int, default=2000, metavar="N",
                        help="record the run's progress every N records, where an interrupted run resumes "
                             "(default 2000)")
    output.add_json_option(parser, "the plan and summary as text (no progress bar)")


def parse_rate(text: str) -> float:
    value = text.strip().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: use N or N/s") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("rate must be positive")
    return rate


def parse_limit(text: str) -> int:
    limit = ascii_int(text.strip())
    if limit is None:
        raise argparse.ArgumentTypeError(f"invalid limit {text!r}: use a whole number of records, 0 or more "
                                         "(0: all)")
    return limit


def _sync(handler: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]],
          ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return run_async(handler(args, one_shot(args)))
    return run


def _filter_of(args: argparse.Namespace) -> DlqFilter:
    try:
        return DlqFilter.of(account=args.account, webhook=args.webhook, event=args.event, reason=args.reason)
    except ValueError:
        raise ValidationError("--webhook takes numeric webhook ids", "webhook") from None



async def list_command(args: argparse.Namespace, settings: Settings) -> int:
    listing = await list_dead_letters(settings, _filter_of(args), Window.parse(args.since, args.until),
                                      limit=args.limit)
    if args.json:
        output.emit_json([d.to_json() for d in listing.items])
        return 0
    shown = len(listing.items)
    more = f", newest {shown} shown (--limit)" if shown < listing.matched else ""
    twice = (f" ({listing.superseded} earlier dead letters of the same deliveries not shown)"
             if listing.superseded else "")
    output.emit(render.dead_letter_table(listing.items),
                f"{listing.matched} matching dead letters{more}{twice}; {listing.stats.records} records read")
    return 0


async def show_command(args: argparse.Namespace, settings: Settings) -> int:
    found = await find_dead_letters(settings, args.delivery_id, Window.parse(args.since, None))
    if not found:
        print(f"no dead letter with delivery id {args.delivery_id} since {args.since}", file=sys.stderr)
        return Exit.NOT_FOUND
    dead = found[-1]
    attempts: list[AttemptRecord] = []
    truncated = False
    if dead.webhook_id is not None:
        since = (dead.first_attempt_at or dead.dead_lettered_at) - 60
        async with kafka.started(reader(settings)) as consumer:
            attempts, truncated = await delivery_attempts(consumer, Topics.from_settings(settings).attempts,
                                                          dead.webhook_id, dead.delivery_id,
                                                          since_ms=int(since * 1000))
    async with caught_up_table(settings, timeout=TABLE_READY_S) as table:
        webhook = table.get(dead.webhook_id) if dead.webhook_id is not None else None
    book = await RunBook.load(settings)
    replays = [r.id for r in book.of_kind("replay") if r.covers(dead.partition, dead.offset)
               and DlqFilter.from_json(r.filters).matches(dead) and dead.webhook_id not in r.skipped_webhooks]
    if args.json:
        output.emit_json({**dead.to_json(), "headers": dict(render.header_pairs(dead.headers)),
               "body": render.body_text(dead.value), "last_response": dead.last_response,
               "attempt_history": [a.to_json() for a in attempts], "attempts_truncated": truncated,
               "dead_letters": len(found),
               "webhook": webhook.model_dump(mode="json", exclude={"secrets"}) if webhook else None,
               "replayed_by": replays})
        return 0
    output.emit(render.show_view(dead, len(found), attempts, truncated, webhook, replays))
    return 0


def _progress(json_output: bool) -> Callable[[str, int], Progress] | None:
    return None if json_output else (lambda label, total: Progress(label, total))


def _confirm(args: argparse.Namespace, kind: str, filters: dict[str, Any]) -> Callable[[Plan], Awaitable[bool]]:
    async def confirm(plan: Plan) -> bool:
        if not args.json:
            _plan(kind, plan, filters, plan.sample[:5])
        if args.yes:
            return True
        if not sys.stdin.isatty():
            print("not confirmed: stdin is not a terminal; pass --yes", file=sys.stderr)
            return False
        answer = await asyncio.to_thread(input, f"re-enqueue {plan.total} records to the deliveries topic? [y/N] ")
        return answer.strip().lower() in {"y", "yes"}
    return confirm


def _plan(kind: str, plan: Plan, filters: dict[str, Any], sample: list[dict[str, Any]]) -> None:
    table = render.sample_table(sample)
    if table is None:
        output.emit(render.plan_text(kind, plan, filters))
    else:
        output.emit(render.plan_text(kind, plan, filters), "sample:", table)


def _options(args: argparse.Namespace, limit: int = 0) -> Options:
    return Options(dry_run=args.dry_run, force=args.force, enable=args.enable, rate=args.rate,
                   checkpoint_every=args.checkpoint_every, limit=limit)


def _report(args: argparse.Namespace, kind: str, summary: Summary, filters: dict[str, Any]) -> int:
    if args.json:
        output.emit_json(render.summary_json(kind, summary, filters))
    else:
        if summary.status in {"dry_run", "refused", "nothing_to_do"}:
            _plan(kind, summary.plan, filters, summary.plan.sample if summary.status == "dry_run" else [])
        output.emit(render.summary_text(summary))
    return {"refused": Exit.REFUSED, "aborted": Exit.FAILED}.get(summary.status, 0)


async def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    filters = _filter_of(args)
    window = Window.parse(args.since, args.until)
    async with (caught_up_table(settings, timeout=TABLE_READY_S) as table,
                kafka.started(kafka.producer(settings)) as producer):
        store = SubscriptionStore(settings, table, producer)
        try:
            summary = await replay(settings, filters, window, lookup=table.get, producer=producer,
                                   options=_options(args, args.limit), store=store,
                                   confirm=_confirm(args, "replay", filters.to_json()),
                                   progress=_progress(args.json))
        except ReplayRefusedError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return Exit.REFUSED
    return _report(args, "replay", summary, filters.to_json())


async def recover_command(args: argparse.Namespace, settings: Settings) -> int:
    window = Window.parse(args.since, args.until)
    async with (caught_up_table(settings, timeout=TABLE_READY_S) as table,
                kafka.started(kafka.producer(settings)) as producer):
        webhook = table.get(args.webhook)
        if webhook is None:
            print(f"webhook {args.webhook} does not exist", file=sys.stderr)
            return Exit.NOT_FOUND
        filters = {"webhook": webhook.id, "account": webhook.account_id, "events": webhook.subscriptions}
        store = SubscriptionStore(settings, table, producer)
        try:
            summary = await recover(settings, webhook, window, producer=producer, options=_options(args), store=store,
                                    confirm=_confirm(args, "recover", filters), progress=_progress(args.json))
        except ReplayRefusedError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return Exit.REFUSED
    return _report(args, "recover", summary, filters)


async def status_command(args: argparse.Namespace, settings: Settings) -> int:
    async with caught_up_table(settings, timeout=TABLE_READY_S) as table:
        report = await status_mod.collect(settings, table, max_scan=args.max_scan)
    if args.json:
        output.emit_json(status_mod.to_json(report))
    else:
        output.emit(status_mod.render(report))
    return 0
