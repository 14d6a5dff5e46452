"""What every console page shares: who is signed in, which account and webhook the path names,
CSRF on changes, HTML error pages.

``page(handler)`` wraps a handler ``(request, ctx) -> Response``: without a session it redirects
to the sign-in page; a path naming an account the session may not act on is a 404 (revealing
nothing, as the API does); a POST without a valid CSRF token is a 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from services.console import html
from services.console.client import Answer, Api
from services.console.session import Session, csrf_ok, current
from services.shared.auth import TokenAuthenticator
from services.shared.digits import ascii_int
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable


@dataclass
class Console:
    settings: Settings
    table: SubscriptionTable
    auth: TokenAuthenticator


CONSOLE = web.AppKey("console", Console)


class NotFound(Exception):
    """No such page for this session: a 404 page."""


@dataclass
class Ctx:
    request: web.Request
    session: Session
    api: Api
    console: Console
    form: dict[str, str] = field(default_factory=dict)
    form_lists: dict[str, list[str]] = field(default_factory=dict)

    @property
    def account_id(self) -> int:
        return int(self.request.match_info["account_id"])

    @property
    def webhook_id(self) -> int:
        return int(self.request.match_info["id"])

    @property
    def webhooks_path(self) -> str:
        return f"/api/v1/accounts/{self.account_id}/webhooks"

    @property
    def webhook_path(self) -> str:
        return f"{self.webhooks_path}/{self.webhook_id}"

    @property
    def app_webhooks(self) -> str:
        return f"/app/accounts/{self.account_id}/webhooks"

    @property
    def app_webhook(self) -> str:
        return f"{self.app_webhooks}/{self.webhook_id}"

    async def webhook(self) -> dict[str, Any]:
        """The path's webhook as the API shows it; ``NotFound`` when the API says 404."""
        answer = await self.api.get(self.webhook_path)
        if answer.status == 404:
            raise NotFound
        check(answer)
        webhook: dict[str, Any] = answer.payload["webhook"]
        return webhook

    def crumbs(self, *more: tuple[str, str]) -> list[tuple[str, str]]:
        base = [("Overview", "/app/overview")] if self.session.principal.is_admin else []
        return [*base, ("Webhooks", self.app_webhooks), *more]


class ApiFailed(Exception):
    """The API answered an error the page cannot show beside a field."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.message)
        self.answer = answer


def check(answer: Answer) -> Answer:
    if not answer.ok:
        raise ApiFailed(answer)
    return answer


Handler = Callable[[web.Request, Ctx], Awaitable[web.StreamResponse]]


def _ids_ok(request: web.Request, session: Session) -> bool:
    for name in ("account_id", "id"):
        value = request.match_info.get(name)
        if value is not None and ascii_int(value) is None:
            return False
    account = request.match_info.get("account_id")
    return account is None or session.principal.may_access(int(account))


def page(handler: Handler, *, admin_only: bool = False) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        session = current(request, console.auth)
        if session is None:
            return html.redirect("/app/sign-in")
        if not _ids_ok(request, session) or (admin_only and not session.principal.is_admin):
            return not_found(session)
        ctx = Ctx(request, session, Api(request, session.token), console)
        if request.method == "POST":
            posted = await request.post()
            ctx.form = {k: v for k, v in posted.items() if isinstance(v, str)}
            for key, value in posted.items():
                if isinstance(value, str):
                    ctx.form_lists.setdefault(key, []).append(value)
            if not csrf_ok(session, ctx.form, request):
                return html.error_page(session, 403, "Refused", "The form was stale or came from another site: "
                                       "reload the page and try again.")
        try:
            return html.secured(await handler(request, ctx))
        except NotFound:
            return not_found(session)
        except ApiFailed as failed:
            return api_error(session, failed.answer)
    return handle


def not_found(session: Session | None) -> web.Response:
    return html.error_page(session, 404, "Not found", "There is no such page for this sign-in.")


def api_error(session: Session, answer: Answer) -> web.Response:
    status = answer.status if answer.status >= 400 else 502
    retry = answer.headers.get("Retry-After")
    text = answer.message + (f" (try again in {retry} s)" if retry else "")
    return html.error_page(session, status, "The API refused", text)
