"""The web console: the guide's Webhooks page, delivery logs, dead letters and replay, and the SRE
overview, served by the API process under ``/app/`` (``/`` leads there).

    add_console(app, settings, table)

Pages are server-rendered HTML built from the API's own answers (``services.console.client``),
plus one small stylesheet and one small script of our own (``static/``); a strict
Content-Security-Policy allows nothing else. Sign-in and CSRF: ``services.console.session``.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from services.console import html, logs, overview, webhooks
from services.console.client import http_session
from services.console.core import CONSOLE, Console, not_found, page
from services.console.health import HEALTH, HealthCache, health_json
from services.console.html import esc
from services.console.session import current, same_origin, sign_in, sign_out
from services.shared.auth import TokenAuthenticator
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable

ACCOUNT = "/app/accounts/{account_id}/webhooks"
WEBHOOK = ACCOUNT + "/{id}"
STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}


def is_console_page(path: str) -> bool:
    """A console route (HTML for browsers, not an API operation: not in ``openapi.json``)."""
    return path == "/" or path == "/app" or path.startswith("/app/")


def _static() -> dict[str, bytes]:
    folder = resources.files("services.console").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_TYPES}


def _sign_in_page(message: str = "", status: int = 200) -> web.Response:
    alert = f'<p class="error" role="alert" id="token-error">{esc(message)}</p>' if message else ""
    described = ' aria-invalid="true" aria-describedby="token-error"' if message else ""
    body = ('<form method="post" action="/app/sign-in" class="sign-in">'
            '<div class="field"><label for="token">API access token</label>'
            f'<input id="token" name="token" type="password" autocomplete="current-password" required{described}>'
            f'{alert}</div><p><button type="submit" class="primary">Sign in</button></p>'
            "<p class=\"hint\">An account's token shows that account's webhooks; the admin token shows every "
            "account and the pipeline's status. The token is kept in a session cookie only.</p></form>")
    return html.respond(html.layout("Sign in", body, None), status=status)


async def root(_: web.Request) -> web.StreamResponse:
    return html.redirect("/app/")  # the session cookie is scoped to /app


async def home(request: web.Request) -> web.StreamResponse:
    session = current(request, request.app[CONSOLE].auth)
    return html.redirect(session.home() if session else "/app/sign-in")


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    return _sign_in_page()


async def sign_in_submit(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        return _sign_in_page("The form came from another site.", 403)
    form = await request.post()
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    principal = request.app[CONSOLE].auth.authenticate(token)
    if principal is None:
        return _sign_in_page("Invalid Access Token", 401)
    home_path = "/app/overview" if principal.is_admin else f"/app/accounts/{principal.account_id}/webhooks"
    response = html.redirect(home_path)
    sign_in(response, request, token)
    return response


async def not_found_page(request: web.Request) -> web.StreamResponse:
    return not_found(current(request, request.app[CONSOLE].auth))


async def sign_out_submit(request: web.Request, _: object) -> web.StreamResponse:
    response = html.redirect("/app/sign-in")
    sign_out(response)
    return response


def add_console(app: web.Application, settings: Settings, table: SubscriptionTable) -> None:
    """Mount the console on the API application."""
    app[CONSOLE] = Console(settings, table, TokenAuthenticator.from_settings(settings))
    app[HEALTH] = HealthCache()
    app.cleanup_ctx.append(http_session)
    files = _static()

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in files:
            return html.error_page(None, 404, "Not found", "There is no such file.")
        response = web.Response(body=files[name], content_type=STATIC_TYPES[name],
                                headers={"Cache-Control": "public, max-age=300"})
        response.enable_compression()
        return html.secured(response)

    add = app.router.add_route
    add("GET", "/", root)
    add("GET", "/app", home)
    add("GET", "/app/", home)
    add("GET", "/app/static/{name}", static)
    add("GET", "/app/sign-in", sign_in_form)
    add("POST", "/app/sign-in", sign_in_submit)
    add("POST", "/app/sign-out", page(sign_out_submit))
    add("GET", "/app/overview", page(overview.overview, admin_only=True))
    add("GET", ACCOUNT, page(webhooks.list_page))
    add("POST", ACCOUNT, page(webhooks.create))
    add("GET", ACCOUNT + "/new", page(webhooks.new_page))
    add("GET", ACCOUNT + "/health.json", page(health_json))
    add("GET", WEBHOOK, page(webhooks.detail))
    add("POST", WEBHOOK, page(webhooks.save))
    add("POST", WEBHOOK + "/enabled", page(webhooks.set_enabled))
    add("POST", WEBHOOK + "/rotate", page(webhooks.rotate))
    add("GET", WEBHOOK + "/delete", page(webhooks.confirm_delete))
    add("POST", WEBHOOK + "/delete", page(webhooks.delete))
    add("GET", WEBHOOK + "/deliveries", page(logs.deliveries))
    add("GET", WEBHOOK + "/dead_letters", page(logs.dead_letters))
    add("POST", WEBHOOK + "/replay", page(logs.replay))
    add("GET", WEBHOOK + "/replays/{replay_id}", page(logs.replay_state))
    add("GET", "/app/{tail:.*}", not_found_page)  # last: an HTML 404 for any other console path
