"""The guide's "Webhooks" page: list, Add new webhook, edit, enable/disable, rotate secret, delete.

Each change is the API's own call (``POST``/``PATCH``/``DELETE /api/v1/accounts/{a}/webhooks...``);
a 422 puts the API's message (``Url is invalid``, ...) beside the field it names. A new or rotated
signing secret is shown once, in the answer to the POST that made it (``Cache-Control: no-store``);
no later page shows it again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schemas import EVENT_NAMES
from services.console import html
from services.console.core import Ctx, check
from services.console.html import esc

FIELDS = ("url", "name", "subscriptions")


def _events(webhook: dict[str, Any]) -> str:
    events = webhook.get("subscriptions") or []
    return ", ".join(f"<code>{esc(e)}</code>" for e in events)


def _row(ctx: Ctx, webhook: dict[str, Any]) -> list[str]:
    link = f"{ctx.app_webhooks}/{webhook['id']}"
    enabled = html.badge("enabled", "ok") if webhook.get("enabled") else html.badge("disabled", "off")
    health = f'data-health="{esc(webhook["id"])}"'
    return [
        f'<a href="{esc(link)}" class="url">{esc(webhook["url"])}</a>',
        esc(webhook.get("name") or "-"),
        _events(webhook),
        enabled,
        f'<span {health} data-field="circuit">…</span>',
        f'<span {health} data-field="last">…</span>',
        f'<a href="{esc(link)}/deliveries">Delivery log</a> · <a href="{esc(link)}/dead_letters">Dead letters</a>',
    ]


async def list_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    answer = check(await ctx.api.get(ctx.webhooks_path))
    hooks: list[dict[str, Any]] = answer.payload["webhooks"]
    rows = [_row(ctx, w) for w in hooks]
    add = f'<p><a class="button primary" href="{esc(ctx.app_webhooks)}/new">Add new webhook</a></p>'
    body = add + html.table(
        f"Webhooks of account {ctx.account_id} ({len(hooks)})",
        ("URL", "Name", "Events", "Enabled", "Circuit", "Last delivery", "Logs"), rows,
        empty="No webhooks yet: add one to receive events at your URL.", cls="webhooks")
    body = f'<div data-health-src="{esc(ctx.app_webhooks)}/health.json">{body}</div>'
    return html.respond(html.layout("Webhooks", body, ctx.session, crumbs=ctx.crumbs()[:-1]))


def _error(errors: dict[str, str], field: str) -> str:
    message = errors.get(field)
    return f'<p class="error" id="{field}-error">{esc(message)}</p>' if message else ""


def _described(errors: dict[str, str], field: str) -> str:
    return f' aria-invalid="true" aria-describedby="{field}-error"' if field in errors else ""


def webhook_form(ctx: Ctx, action: str, submit: str, values: dict[str, Any], errors: dict[str, str]) -> str:
    ticked = set(values.get("subscriptions") or ())
    boxes = "".join(
        f'<li><input type="checkbox" name="subscriptions" value="{esc(e)}" id="event-{esc(e)}"'
        f'{" checked" if e in ticked else ""}><label for="event-{esc(e)}">{esc(e)}</label></li>'
        for e in EVENT_NAMES)
    general = f'<p class="error" role="alert">{esc(errors["_"])}</p>' if "_" in errors else ""
    return (
        f'<form method="post" action="{esc(action)}" class="webhook-form" novalidate>{html.csrf_input(ctx.session)}'
        f"{general}"
        f'<div class="field"><label for="url">Webhook URL</label>'
        f'<input id="url" name="url" type="text" inputmode="url" autocomplete="url" spellcheck="false" '
        f'placeholder="https://example.com/akece" value="{esc(values.get("url"))}"{_described(errors, "url")}>'
        f'{_error(errors, "url")}</div>'
        f'<div class="field"><label for="name">Name</label>'
        f'<input id="name" name="name" type="text" value="{esc(values.get("name"))}"{_described(errors, "name")}>'
        f'{_error(errors, "name")}</div>'
        f'<fieldset{_described(errors, "subscriptions")}><legend>Events to monitor</legend>'
        f'<ul class="events">{boxes}</ul>{_error(errors, "subscriptions")}</fieldset>'
        f'<p><button type="submit" class="primary">{esc(submit)}</button> '
        f'<a href="{esc(ctx.app_webhooks)}">Cancel</a></p></form>'
    )


def _errors(message: str, attributes: list[str] | None) -> dict[str, str]:
    """The API's 422 (``{"message", "attributes"}``) as one message per field."""
    errors: dict[str, str] = {}
    for part in message.split(", "):
        field = next((a for a in attributes or () if part.lower().startswith(a.split("_")[0])), None)
        key = field if field in FIELDS else "_"
        errors[key] = f"{errors[key]}, {part}" if key in errors else part
    return errors


def _posted(ctx: Ctx) -> dict[str, Any]:
    return {"url": ctx.form.get("url", "").strip(), "name": ctx.form.get("name", "").strip(),
            "subscriptions": ctx.form_lists.get("subscriptions", [])}


async def new_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    form = webhook_form(ctx, ctx.app_webhooks, "Create webhook", {"subscriptions": []}, {})
    return html.respond(html.layout("Add new webhook", form, ctx.session, crumbs=ctx.crumbs()))


async def create(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    values = _posted(ctx)
    body = {**values, "name": values["name"] or None}
    answer = await ctx.api.call("POST", ctx.webhooks_path, body={"webhook": body})
    if answer.status in (400, 422):
        errors = _errors(answer.message, (answer.body or {}).get("attributes"))
        form = webhook_form(ctx, ctx.app_webhooks, "Create webhook", values, errors)
        return html.respond(html.layout("Add new webhook", form, ctx.session, crumbs=ctx.crumbs()), status=422)
    webhook = check(answer).payload["webhook"]
    return secret_page(ctx, webhook, "Webhook created")


def secret_page(ctx: Ctx, webhook: dict[str, Any], title: str) -> web.Response:
    link = f"{ctx.app_webhooks}/{webhook['id']}"
    prefix = ctx.console.settings.http.header_prefix
    body = (
        f'<p role="status">Webhook <strong>{esc(webhook.get("name") or webhook["url"])}</strong> will receive '
        f'{len(webhook.get("subscriptions") or [])} events at <code>{esc(webhook["url"])}</code>.</p>'
        '<section class="secret" aria-labelledby="secret-h"><h2 id="secret-h">Signing secret</h2>'
        "<p><strong>Copy it now: it is shown only once.</strong> Keep it with your receiver.</p>"
        f'<p class="copyable"><code id="secret">{esc(webhook["secret"])}</code> '
        '<button type="button" data-copy="secret">Copy secret</button> <span class="copied" aria-live="polite">'
        "</span></p>"
        "<h3>How to verify a delivery</h3><ol>"
        f"<li>Read the headers <code>{esc(prefix)}-Timestamp</code> and <code>{esc(prefix)}-Signature</code> "
        f"(<code>sha256=&lt;hex&gt;</code>).</li>"
        "<li>Compute HMAC-SHA256 with this secret over <code>&lt;timestamp&gt;.&lt;raw request body&gt;</code>.</li>"
        "<li>Compare the hex digest with the signature in constant time; refuse old timestamps "
        "(more than 5 minutes).</li></ol>"
        "<pre><code>expected = hmac.new(secret.encode(), f\"{timestamp}.\".encode() + body, "
        "hashlib.sha256).hexdigest()\nok = hmac.compare_digest(\"sha256=\" + expected, signature)</code></pre>"
        f'</section><p><a class="button primary" href="{esc(ctx.app_webhooks)}">Done</a> '
        f'<a href="{esc(link)}">Configure this webhook</a></p>'
    )
    return html.respond(html.layout(title, body, ctx.session, crumbs=ctx.crumbs()))


def _actions(ctx: Ctx, webhook: dict[str, Any]) -> str:
    enabled = bool(webhook.get("enabled"))
    toggle = html.post_button(ctx.session, f"{ctx.app_webhook}/enabled", "Disable" if enabled else "Enable",
                              fields={"enabled": "false" if enabled else "true"})
    rotate = html.post_button(ctx.session, f"{ctx.app_webhook}/rotate", "Rotate secret")
    delete = f'<a class="button danger" href="{esc(ctx.app_webhook)}/delete">Delete…</a>'
    state = "enabled" if enabled else f"disabled ({webhook.get('disabled_reason') or 'by the API'})"
    return (f'<section aria-labelledby="actions-h"><h2 id="actions-h">State</h2><p>This webhook is '
            f'<strong>{esc(state)}</strong>. Signing secret: <code>{esc(webhook.get("secret"))}</code> '
            f'(shown in full only once).</p><div class="actions">{toggle} {rotate} {delete}</div>'
            f'<p><a href="{esc(ctx.app_webhook)}/deliveries">Delivery log</a> · '
            f'<a href="{esc(ctx.app_webhook)}/dead_letters">Dead letters and replay</a></p></section>')


def _detail(ctx: Ctx, webhook: dict[str, Any], values: dict[str, Any], errors: dict[str, str],
            status: int = 200) -> web.Response:
    form = webhook_form(ctx, ctx.app_webhook, "Save changes", values, errors)
    body = f'{_actions(ctx, webhook)}<section aria-labelledby="edit-h"><h2 id="edit-h">Edit</h2>{form}</section>'
    title = f"Webhook {webhook.get('name') or webhook['id']}"
    return html.respond(html.layout(title, body, ctx.session, crumbs=ctx.crumbs()), status=status)


async def detail(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    webhook = await ctx.webhook()
    return _detail(ctx, webhook, webhook, {})


async def save(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    webhook = await ctx.webhook()
    values = _posted(ctx)
    answer = await ctx.api.call("PATCH", ctx.webhook_path, body={"webhook": {**values, "name": values["name"] or None}})
    if answer.status in (400, 422):
        return _detail(ctx, webhook, values, _errors(answer.message, (answer.body or {}).get("attributes")), 422)
    check(answer)
    return html.redirect(ctx.app_webhook)


async def set_enabled(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    check(await ctx.api.call("PATCH", ctx.webhook_path, body={"enabled": ctx.form.get("enabled") == "true"}))
    return html.redirect(ctx.app_webhook)


async def rotate(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    webhook = check(await ctx.api.post(ctx.webhook_path + "/rotate_secret")).payload["webhook"]
    return secret_page(ctx, webhook, "New signing secret")


async def confirm_delete(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    webhook = await ctx.webhook()
    button = html.post_button(ctx.session, f"{ctx.app_webhook}/delete", "Delete webhook", cls="danger")
    body = (f'<p>Delete the webhook <strong>{esc(webhook.get("name") or "")}</strong> '
            f'<code>{esc(webhook["url"])}</code>? It stops receiving events at once; this cannot be undone.</p>'
            f'<div class="actions">{button} '
            f'<a class="button" href="{esc(ctx.app_webhook)}">Cancel</a></div>')
    return html.respond(html.layout("Delete webhook?", body, ctx.session, crumbs=ctx.crumbs()))


async def delete(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    answer = await ctx.api.call("DELETE", ctx.webhook_path)
    if answer.status != 404:
        check(answer)
    return html.redirect(ctx.app_webhooks)


