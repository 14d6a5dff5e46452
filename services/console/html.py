"""HTML building blocks of the console: the page layout and a few escaped components.

Pages are plain server-rendered HTML: every value goes through ``esc``; the only script is the
console's own ``/app/static/console.js`` (the Content-Security-Policy allows nothing else).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any, TypeVar

from aiohttp import web

from services.console.session import CSRF_FIELD, Session

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
R = TypeVar("R", bound=web.StreamResponse)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # browsers then send Origin on our own POSTs
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(value: Any) -> str:
    """An ISO time or epoch seconds/ms as ``2026-12-06 07:41:02Z`` in a ``<time>`` element."""
    if value in (None, ""):
        return "-"
    try:
        number = float(value)
        moment = datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
    except (TypeError, ValueError):
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return esc(value)
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f'<time datetime="{esc(moment.isoformat())}">{text}</time>'


def respond(body: str, *, status: int = 200) -> web.Response:
    """An HTML page (gzip when the browser accepts it: a page of 100 webhooks is ~70 kB raw)."""
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.enable_compression()
    return secured(response)


def secured(response: R) -> R:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def redirect(location: str) -> web.Response:
    return secured(web.Response(status=303, headers={"Location": location}))


def csrf_input(session: Session) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{esc(session.csrf)}">'


def post_button(session: Session, action: str, label: str, *, cls: str = "", fields: dict[str, str] | None = None,
                ) -> str:
    """A one-button form: every change is a POST with the CSRF token."""
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (fields or {}).items())
    klass = f' class="{esc(cls)}"' if cls else ""
    return (f'<form method="post" action="{esc(action)}" class="inline">{csrf_input(session)}{hidden}'
            f'<button type="submit"{klass}>{esc(label)}</button></form>')


def table(caption: str, headers: Iterable[str], rows: Iterable[Iterable[str]], *, empty: str = "Nothing yet.",
          cls: str = "") -> str:
    """A table whose cells are already HTML (escape values with ``esc``)."""
    headers = list(headers)
    labels = [f' data-label="{esc(h)}"' for h in headers]
    body = "".join("<tr>" + "".join(f"<td{label}>{cell}</td>" for label, cell in zip(labels, row, strict=False))
                   + "</tr>" for row in rows)
    if not body:
        return f'<div class="scroll"><p class="caption">{esc(caption)}</p><p class="empty">{esc(empty)}</p></div>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    klass = f' class="{esc(cls)}"' if cls else ""
    return (f'<div class="scroll"><table{klass}><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def badge(text: str, kind: str) -> str:
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def layout(title: str, main: str, session: Session | None, *, crumbs: Iterable[tuple[str, str]] = ()) -> str:
    nav = ""
    if session is not None:
        who = "admin" if session.principal.is_admin else f"account {session.principal.account_id}"
        links = "".join(f'<a href="{esc(href)}">{esc(text)}</a> &rsaquo; ' for text, href in crumbs)
        nav = (f'<nav aria-label="Breadcrumb">{links}<span aria-current="page">{esc(title)}</span></nav>'
               f'<div class="who">Signed in as {esc(who)} '
               f'{post_button(session, "/app/sign-out", "Sign out", cls="link")}</div>')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)} · Akece Webhooks</title>"
        '<link rel="stylesheet" href="/app/static/console.css">'
        '<script src="/app/static/console.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><a class="brand" href="/app/">Akece Webhooks</a>{nav}</header>'
        f'<main id="main" tabindex="-1"><h1>{esc(title)}</h1>{main}</main></body></html>'
    )


def error_page(session: Session | None, status: int, title: str, text: str) -> web.Response:
    home = f'<p><a href="{esc(session.home() if session else "/app/sign-in")}">Back to the start</a></p>'
    return respond(layout(title, f'<p role="alert">{esc(text)}</p>{home}', session), status=status)
