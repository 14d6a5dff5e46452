"""A webhook's delivery log, its dead letters, and replay from the page.

- Delivery log: the deliveries API (``GET .../deliveries``) newest first, filtered here by outcome
  and event, ``PER_PAGE`` a page; each row's response excerpt opens on demand (``<details>``).
- Dead letters: ``GET .../dead_letters`` with the page's filter (window, event, reason); "Count"
  is the API's dry run (``POST .../replay`` with ``dry_run``), "Replay" starts a run at the chosen
  rate and shows its page (``GET .../replays/{id}``), which follows progress until it ends. The API
  applies the CLI's claim rules: a 409 names the run (and who started it) that holds the range.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schemas import EVENT_NAMES
from services.console import html
from services.console.client import Answer
from services.console.core import Ctx, check
from services.console.html import esc, when
from services.shared.digits import ascii_int

PER_PAGE = 50
MAX_READ = 1000  # the deliveries API's largest page
OUTCOMES = ("success", "retry", "dead_letter", "skipped")
WINDOWS = ("1h", "6h", "24h", "7d")


def _select(name: str, label: str, options: tuple[str, ...], chosen: str, *, any_label: str = "any") -> str:
    items = "".join(f'<option value="{esc(o)}"{" selected" if o == chosen else ""}>{esc(o or any_label)}</option>'
                    for o in ("", *options) if o or any_label)
    return (f'<div class="field"><label for="{name}">{esc(label)}</label>'
            f'<select id="{name}" name="{name}">{items}</select></div>')


def _int(text: str | None, default: int) -> int:
    number = ascii_int(text, digits=9)
    return number if number is not None and 0 < number < 10_000 else default


def _status(attempt: dict[str, Any]) -> str:
    status = attempt.get("status")
    if status:
        return html.badge(f"{status}", "ok" if 200 <= int(status) < 300 else "bad")
    return html.badge(str(attempt.get("error_class") or attempt.get("outcome") or "-"), "bad")


def _response(attempt: dict[str, Any]) -> str:
    excerpt = attempt.get("response_excerpt")
    error = attempt.get("error_message")
    if not excerpt and not error:
        return "-"
    text = "\n".join(str(p) for p in (error, excerpt) if p)
    return f"<details><summary>Show</summary><pre>{esc(text)}</pre></details>"


def _outcome_matches(attempt: dict[str, Any], outcome: str) -> bool:
    if not outcome:
        return True
    if outcome == "skipped":
        return attempt.get("outcome") not in ("success", "retry", "dead_letter")
    return bool(attempt.get("outcome") == outcome)


async def deliveries(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    webhook = await ctx.webhook()
    query = request.query
    outcome, event, since = query.get("outcome", ""), query.get("event", ""), query.get("since", "24h")
    page = _int(query.get("page"), 1)
    filtered = bool(outcome or event)
    limit = MAX_READ if filtered else min(MAX_READ, page * PER_PAGE + 1)
    answer = check(await ctx.api.get(ctx.webhook_path + "/deliveries", since=since, limit=str(limit)))
    attempts = [a for a in answer.payload["deliveries"]
                if _outcome_matches(a, outcome) and (not event or a.get("event_type") == event)]
    shown = attempts[(page - 1) * PER_PAGE: page * PER_PAGE]
    rows = [[when(a.get("time")), f"<code>{esc(a.get('event_type'))}</code>",
             f'<code class="id">{esc(a.get("delivery_id"))}</code>', esc(a.get("attempt")), _status(a),
             f"{float(a.get('duration_ms') or 0):.0f} ms", _response(a)] for a in shown]
    filters = (f'<form method="get" class="filters" aria-label="Filter the log">'
               f'{_select("outcome", "Outcome", OUTCOMES, outcome)}{_select("event", "Event", EVENT_NAMES, event)}'
               f'{_select("since", "Since", WINDOWS, since, any_label="")}'
               f'<button type="submit">Apply</button></form>')
    body = (f'<p>Attempts to <code>{esc(webhook["url"])}</code>, newest first (the deliveries API). '
            f'<a href="{esc(ctx.app_webhook)}/dead_letters">Dead letters and replay</a></p>{filters}'
            + html.table(f"Delivery attempts, page {page}", ("Time", "Event", "Delivery id", "Attempt",
                                                             "Status", "Latency", "Response"), rows,
                         empty="No delivery attempts in this window.", cls="log")
            + _pager(request, page, more=len(attempts) > page * PER_PAGE))
    title = f"Delivery log: {webhook.get('name') or webhook['id']}"
    return html.respond(html.layout(title, body, ctx.session, crumbs=ctx.crumbs()))


def _pager(request: web.Request, page: int, *, more: bool) -> str:
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{esc(request.rel_url.update_query(page=str(page - 1)))}">← Newer</a>')
    if more:
        links.append(f'<a rel="next" href="{esc(request.rel_url.update_query(page=str(page + 1)))}">Older →</a>')
    return f'<nav class="pager" aria-label="Pages">{" ".join(links)}</nav>' if links else ""


def _dead_rows(items: list[dict[str, Any]], selected: set[str]) -> list[list[str]]:
    rows = []
    for d in items:
        delivery = str(d.get("delivery_id") or "")
        ticked = " checked" if delivery in selected else ""
        last = (f"HTTP {d['last_status']}" if d.get("last_status") else
                ": ".join(str(p) for p in (d.get("last_error_class"), d.get("last_error")) if p) or "-")
        rows.append([
            f'<input type="checkbox" form="replay-form" name="delivery_id" value="{esc(delivery)}"{ticked} '
            f'aria-label="Select {esc(delivery)}">',
            when(d.get("dead_lettered_at")), f"<code>{esc(d.get('event'))}</code>",
            f'<code class="id">{esc(delivery)}</code>', esc(d.get("reason")), esc(d.get("attempts")), esc(last),
            esc(d.get("replay_id") or "-")])
    return rows


def _scope(matched: Any, selected: bool) -> str:
    choices = (("all", f"All {matched} dead letters matching the filter", not selected),
               ("selected", "Only the dead letters ticked in the list", selected))
    radios = "".join(f'<div><input type="radio" name="scope" id="scope-{v}" value="{v}"{" checked" if on else ""}>'
                     f'<label for="scope-{v}">{esc(text)}</label></div>' for v, text, on in choices)
    return f"<fieldset><legend>Selection</legend>{radios}</fieldset>"


def _filter_fields(since: str, event: str, reason: str) -> str:
    return (f'{_select("since", "Dead-lettered since", WINDOWS, since, any_label="")}'
            f'{_select("event", "Event", EVENT_NAMES, event)}'
            f'<div class="field"><label for="reason">Reason</label><input id="reason" name="reason" type="text" '
            f'value="{esc(reason)}" placeholder="exhausted"></div>')


async def dead_letters(request: web.Request, ctx: Ctx, *, notice: str = "", status: int = 200) -> web.StreamResponse:
    webhook = await ctx.webhook()
    source = ctx.form if request.method == "POST" else request.query
    since, event, reason = source.get("since", "24h"), source.get("event", ""), source.get("reason", "")
    answer = check(await ctx.api.get(ctx.webhook_path + "/dead_letters", since=since, event=event, reason=reason,
                                     limit=str(MAX_READ)))
    items = list(reversed(answer.payload["dead_letters"]))
    matched = answer.payload.get("matched", len(items))
    selected = set(ctx.form_lists.get("delivery_id", [])) if request.method == "POST" else set()
    listing = html.table(f"Dead letters matching the filter: {matched}", (
        "Select", "Dead-lettered", "Event", "Delivery id", "Reason", "Attempts", "Last error", "Replayed by"),
        _dead_rows(items, selected), empty="No dead letters match this filter.", cls="log")
    replay = (f'<form method="post" action="{esc(ctx.app_webhook)}/replay" class="replay" id="replay-form">'
              f"{html.csrf_input(ctx.session)}"
              f'<input type="hidden" name="since" value="{esc(since)}"><input type="hidden" name="event" '
              f'value="{esc(event)}"><input type="hidden" name="reason" value="{esc(reason)}">'
              f'{_scope(matched, source.get("scope") == "selected")}'
              f'<div class="field"><label for="rate">Rate (records per second)</label>'
              f'<input id="rate" name="rate" type="number" min="0.1" step="0.1" '
              f'value="{esc(source.get("rate") or "50")}">'
              f'</div><p><button type="submit" name="dry_run" value="true">Count (dry run)</button> '
              f'<button type="submit" name="dry_run" value="false" class="primary">Replay</button></p></form>')
    filters = (f'<form method="get" class="filters" aria-label="Filter dead letters">'
               f'{_filter_fields(since, event, reason)}<button type="submit">Apply</button></form>')
    note = f'<p role="status" class="notice">{notice}</p>' if notice else ""
    body = (f'{note}<p>Deliveries to <code>{esc(webhook["url"])}</code> that ran out of retries. '
            f'<a href="{esc(ctx.app_webhook)}/deliveries">Delivery log</a></p>{filters}{listing}'
            f'<section aria-labelledby="replay-h"><h2 id="replay-h">Replay</h2>{replay}</section>')
    title = f"Dead letters: {webhook.get('name') or webhook['id']}"
    return html.respond(html.layout(title, body, ctx.session, crumbs=ctx.crumbs()), status=status)


async def replay(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    form = ctx.form
    dry_run = form.get("dry_run") != "false"
    body: dict[str, Any] = {"since": form.get("since") or "24h", "dry_run": dry_run}
    for name in ("event", "reason"):
        if form.get(name):
            body[name] = form[name]
    if form.get("scope") == "selected":
        chosen = ctx.form_lists.get("delivery_id", [])
        if not chosen:
            return await dead_letters(request, ctx, notice="Tick at least one dead letter, or choose all matching "
                                      "the filter.", status=422)
        body["delivery_id"] = chosen
    rate = form.get("rate", "")
    if rate:
        try:
            body["rate"] = float(rate)
        except ValueError:
            return await dead_letters(request, ctx, notice="Rate must be a number of records per second.",
                                      status=422)
    answer = await ctx.api.post(ctx.webhook_path + "/replay", body)
    payload = answer.payload or {}
    if answer.status == 409:
        return await dead_letters(request, ctx, status=409,
                                  notice=f"Replay refused: {esc(answer.message)}")
    check(answer)
    if dry_run or answer.status != 202:
        count = payload.get("count", 0)
        return await dead_letters(request, ctx, notice=f"Dry run: <strong>{esc(count)}</strong> dead letters would "
                                  "be replayed.")
    return html.redirect(f"{ctx.app_webhook}/replays/{payload['replay_id']}")


async def replay_state(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    replay_id = request.match_info["replay_id"]
    answer = await ctx.api.get(f"{ctx.webhook_path}/replays/{replay_id}")
    if answer.status == 404 and replay_id.startswith(("rp_", "rc_")):  # claimed; its first run record is coming
        answer = Answer(200, {"payload": {"id": replay_id, "status": "starting"}}, {})
    run = check(answer).payload
    finished = run.get("status") not in ("running", "starting")
    if isinstance(run.get("counts"), dict):
        run["counts"] = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in run["counts"].items())
    rows = [[esc(k.replace("_", " ")), esc(run.get(k))] for k in (
        "id", "kind", "status", "user", "started_at", "finished_at", "total", "enqueued", "counts", "rate", "error")
        if run.get(k) is not None]
    live = "" if finished else ' data-refresh="2"'
    body = (f'<div role="status" aria-live="polite"{live}><p>Replay <strong>{esc(run.get("status"))}</strong>: '
            f'{esc(run.get("enqueued", 0))} of {esc(run.get("total", 0))} re-enqueued.</p>'
            f'<progress aria-label="Replay progress" max="{esc(run.get("total") or 1)}" '
            f'value="{esc(run.get("enqueued") or 0)}"></progress></div>'
            + html.table("Replay run", ("Field", "Value"), rows)
            + f'<p><a href="{esc(ctx.app_webhook)}/deliveries">Delivery log</a> · '
              f'<a href="{esc(ctx.app_webhook)}/dead_letters">Dead letters</a></p>')
    return html.respond(html.layout(f"Replay {replay_id}", body, ctx.session, crumbs=ctx.crumbs()))
