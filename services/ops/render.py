"""What the ops commands show people: tables (``services.shared.output``), a run's plan and summary, a dead
letter in full. Scripts get the same facts as JSON (``--json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from services.contract.attempts import AttemptRecord
from services.contract.dead_letters import DeadLetter
from services.contract.times import iso
from services.replay.plans import Plan, Summary
from services.replay.progress import duration
from services.shared import output
from services.shared.output import styled, table
from services.shared.webhooks import Webhook

DLQ_COLUMNS = ("time", "account", "webhook", "event", "reason", "attempts", "last status/error")


def dead_letter_row(dead: DeadLetter) -> list[object]:
    return [iso(dead.dead_lettered_at), dead.account_id, dead.webhook_id, dead.event_type,
            styled(dead.reason, "red"), dead.attempts, dead.last_outcome]


def dead_letter_table(items: Sequence[DeadLetter]) -> Table:
    return table(DLQ_COLUMNS, [dead_letter_row(d) for d in items])


def sample_table(sample: Sequence[dict[str, Any]]) -> Table | None:
    if not sample:
        return None
    if "reason" in sample[0]:
        rows = sorted([[s.get("dead_lettered_at"), s.get("account_id"), s.get("webhook_id"), s.get("event"),
                        s.get("reason"), s.get("attempts"),
                        f"HTTP {s['last_status']}" if s.get("last_status") else s.get("last_error")] for s in sample],
                      key=lambda row: str(row[0]))
        return table(DLQ_COLUMNS, rows)
    rows = sorted([[s.get("time"), s.get("account_id"), s.get("webhook_id"), s.get("event"), s.get("event_id")]
                   for s in sample], key=lambda row: str(row[0]))
    return table(("time", "account", "webhook", "event", "event id"), rows)


def _filters(filters: dict[str, Any]) -> str:
    parts = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in filters.items() if v]
    return " ".join(parts) or "none"


def plan_text(kind: str, plan: Plan, filters: dict[str, Any]) -> str:
    window = f"{plan.window.get('since') or 'beginning'} .. {plan.window.get('until') or 'now'}"
    lines = [f"{kind} {plan.run_id}  window {window}  filters: {_filters(filters)}"]
    if plan.notice:
        lines.append(f"  note: {plan.notice}")
    lines.append(f"  read {plan.stats.records} records; {plan.matched} match the filters")
    hooks = ", ".join(f"{w}: {n}" for w, n in plan.by_webhook.most_common(10))
    lines.append(f"  to re-enqueue: {plan.total}" + (f" (by webhook: {hooks})" if hooks else ""))
    if plan.left:
        lines.append(f"  left for a later run (--limit): {plan.left}")
    if plan.done_before:
        lines.append(f"  done before the interruption: {plan.done_before}")
    if plan.covered_by:
        runs = ", ".join(f"{run} ({n})" for run, n in plan.covered_by.most_common(5))
        lines.append(f"  already replayed, skipped (use --force to send again): {plan.already_replayed} by {runs}")
    for reason, count in plan.skipped.most_common():
        hooks_of = sorted(w for w, r in plan.skipped_webhooks.items() if r == reason)
        suffix = f" (webhooks {', '.join(map(str, hooks_of[:10]))})" if hooks_of else ""
        hint = " (use --enable to re-enable and send)" if reason == "webhook_disabled" else ""
        lines.append(f"  skipped {reason}: {count}{suffix}{hint}")
    if plan.to_enable:
        lines.append(f"  webhooks to re-enable first: {', '.join(map(str, sorted(plan.to_enable)))}")
    return "\n".join(lines)


def summary_text(summary: Summary) -> str:
    plan = summary.plan
    if summary.status == "refused":
        return (f"refused: all {plan.already_replayed} matching records were already re-enqueued by "
                f"{', '.join(plan.covered_by)}; use --force to send them again")
    if summary.status not in {"done", "partial"}:
        return {"dry_run": "dry run: nothing sent", "aborted": "aborted: nothing sent",
                "nothing_to_do": "nothing to re-enqueue"}.get(summary.status, summary.status)
    text = (f"{summary.status}: {summary.enqueued} re-enqueued in {duration(summary.seconds)} "
            f"({summary.rate:,.0f}/s), run {plan.run_id}")
    if summary.vanished:
        text += f"; {summary.vanished} gone since planning (retention or webhook deleted)"
    if plan.left:
        text += f"; {plan.left} left for a later run: the same command sends the next ones (--limit 0: all of them)"
    return text


def plan_json(kind: str, plan: Plan) -> dict[str, Any]:
    return {"kind": kind, "run_id": plan.run_id, "resumed": plan.resumed is not None, "window": plan.window,
            "counts": plan.counts(), "already_replayed_by": dict(plan.covered_by),
            "skipped_webhooks": plan.skipped_webhooks, "enabled_webhooks": sorted(plan.to_enable),
            "records_read": plan.stats.records, "sample": plan.sample}


def summary_json(kind: str, summary: Summary, filters: dict[str, Any]) -> dict[str, Any]:
    return {**plan_json(kind, summary.plan), "status": summary.status, "filters": filters,
            "enqueued": summary.enqueued, "seconds": round(summary.seconds, 3), "rate": round(summary.rate, 1)}


def webhook_text(webhook: Webhook | None, webhook_id: int | None) -> str:
    if webhook is None:
        return f"webhook {webhook_id}: deleted (not in the subscription table)"
    state = "enabled" if webhook.enabled else f"DISABLED ({webhook.disabled_reason or 'no reason recorded'})"
    return (f"webhook {webhook.id} (account {webhook.account_id}) {state}\n  url: {webhook.url}\n"
            f"  subscriptions: {', '.join(webhook.subscriptions)}\n  updated: {webhook.updated_at}")


def body_text(value: bytes | None) -> str:
    if value is None:
        return "(no body)"
    try:
        return orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


def attempts_table(attempts: Sequence[AttemptRecord]) -> Table:
    rows = [[a.attempt, a.time, styled(a.outcome, "green" if a.outcome == "success" else "red"),
             a.status or a.error_class, a.duration_ms, a.error_message, a.next_delay_ms] for a in attempts]
    return table(("attempt", "time", "outcome", "status", "ms", "error", "next delay ms"), rows)


def header_pairs(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
    return [(k, v.decode("utf-8", "replace")) for k, v in headers]


def show_view(dead: DeadLetter, count: int, attempts: Sequence[AttemptRecord], truncated: bool,
              webhook: Webhook | None, replays: Sequence[str]) -> Group:
    key = dead.key.decode("utf-8", "replace") if dead.key else "-"
    parts: list[RenderableType] = [
        f"dead letter of delivery {dead.delivery_id}" + (f" (latest of {count})" if count > 1 else ""),
        f"  event {dead.event_type} {dead.event_id}, account {dead.account_id}, webhook {dead.webhook_id}",
        f"  reason {dead.reason}, {dead.attempts} attempts, last: {dead.last_outcome}",
        f"  first attempt {iso(dead.first_attempt_at)}, last attempt {iso(dead.last_attempt_at)}, "
        f"dead-lettered {iso(dead.dead_lettered_at)}",
        f"  DLQ partition {dead.partition} offset {dead.offset}, key {key}",
        "", output.heading("headers:"), table(("header", "value"), header_pairs(dead.headers)),
        "", output.heading("last response (excerpt):"), dead.last_response or "-",
        "", output.heading("body:"), body_text(dead.value),
        "", output.heading("attempt history:" + (" (attempt log read partially: the window is large)"
                                                 if truncated else "")),
        attempts_table(attempts) if attempts else "  none found in the attempt log",
        "", webhook_text(webhook, dead.webhook_id),
        "", f"replayed by: {', '.join(replays)}" if replays else "not replayed yet",
    ]
    return Group(*(Text(p) if isinstance(p, str) else p for p in parts))
