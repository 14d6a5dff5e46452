"""The SRE overview (admin token only): the pipeline's status and every account's webhooks.

The status is ``akece-webhooks status``'s own report (``services.ops.status.collect``): lag per
consumer group, retry tiers, dead letters by reason over the last hour and day, open circuits,
disabled webhooks and unfinished replays. The webhook list reads the subscription table, filtered
by the search box (id, account, URL or name).
"""

from __future__ import annotations

from aiohttp import web
from aiokafka.errors import KafkaError

from services.console import html
from services.console.core import Ctx
from services.console.html import esc, when
from services.ops.status import collect, to_json
from services.shared.errors import AkeceError
from services.shared.webhooks import Webhook

MAX_ROWS = 500


def _matches(webhook: Webhook, query: str) -> bool:
    if not query:
        return True
    text = f"{webhook.id} {webhook.account_id} {webhook.url} {webhook.name or ''}".lower()
    return all(word in text for word in query.lower().split())


async def _status(ctx: Ctx) -> str:
    try:
        report = to_json(await collect(ctx.console.settings, ctx.console.table))
    except (AkeceError, KafkaError, OSError, TimeoutError) as exc:  # the page still shows the webhooks
        return f'<p role="alert">The status could not be read: {esc(str(exc)[:200])}</p>'
    lag = html.table("Consumer lag per group", ("Group", "Topic", "Lag"),
                     [[esc(r["group"]), esc(r["topic"]), esc(r["lag"])] for r in report["lag"]],
                     empty="No consumer group has committed offsets yet.")
    dead = report["dead_letters"] or {}
    reasons = sorted(set((dead.get("last_hour") or {}).get("by_reason") or {})
                     | set((dead.get("last_day") or {}).get("by_reason") or {}))
    hour, day = (dead.get("last_hour") or {}), (dead.get("last_day") or {})
    dlq_rows = [[esc(r), esc((hour.get("by_reason") or {}).get(r, 0)), esc((day.get("by_reason") or {}).get(r, "?"))]
                for r in reasons]
    dlq_rows.append(["<strong>total</strong>", esc(hour.get("total", 0)), esc(day.get("total", 0))])
    dlq = html.table("Dead letters (growth)", ("Reason", "Last hour", "Last day"), dlq_rows)
    circuits = html.table("Open circuits", ("Webhook", "Account", "Failures", "Failing since", "Last error"),
                          [[esc(c["webhook_id"]), esc(c["account_id"]), esc(c["failures"]), when(c["failing_since"]),
                            esc(c["last_error"])] for c in report["open_circuits"] or []],
                          empty="No open circuits.")
    replays = html.table("Replays running", ("Id", "Kind", "Status", "User", "Started", "Progress"),
                         [[esc(r["id"]), esc(r["kind"]), esc(r["status"]), esc(r["user"]), when(r["started_at"]),
                           esc(r["progress"])] for r in report["unfinished_replays"]],
                         empty="No replay is running.")
    tiers = html.table("Retry tiers", ("Topic", "Delay", "Depth", "Oldest due"),
                       [[esc(t["topic"]), f"{t['delay_s']:g} s", esc(t["depth"]), when(t["oldest_due"])]
                        for t in report["retry_tiers"]])
    return f'<p>Status at {when(report["time"])}</p>{lag}<div class="grid">{circuits}{dlq}{replays}</div>{tiers}'


async def overview(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    query = request.query.get("q", "").strip()
    hooks = [w for w in ctx.console.table.all() if _matches(w, query)]
    hooks.sort(key=lambda w: (w.account_id, w.id))
    rows = [[f'<a href="/app/accounts/{w.account_id}/webhooks">{esc(w.account_id)}</a>',
             f'<a href="/app/accounts/{w.account_id}/webhooks/{w.id}">{esc(w.id)}</a>', esc(w.url),
             esc(w.name or "-"), html.badge("enabled", "ok") if w.enabled else html.badge("disabled", "off"),
             esc(len(w.subscriptions))] for w in hooks[:MAX_ROWS]]
    search = (f'<form method="get" role="search" class="filters"><div class="field"><label for="q">Search webhooks '
              f'(id, account, URL or name)</label><input id="q" name="q" type="search" value="{esc(query)}"></div>'
              f'<button type="submit">Search</button></form>')
    more = f"<p>Showing the first {MAX_ROWS}; refine the search.</p>" if len(hooks) > MAX_ROWS else ""
    webhooks = html.table(f"Webhooks of every account ({len(hooks)})", ("Account", "Id", "URL", "Name", "Enabled",
                                                                       "Events"), rows,
                          empty="No webhook matches.")
    body = (f'<section aria-labelledby="status-h"><h2 id="status-h">Pipeline status</h2>{await _status(ctx)}</section>'
            f'<section aria-labelledby="hooks-h"><h2 id="hooks-h">Webhooks</h2>{search}{webhooks}{more}</section>')
    return html.respond(html.layout("Overview", body, ctx.session))
