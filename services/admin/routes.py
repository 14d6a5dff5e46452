"""The webhook routes, as Chatwoot clients call them, plus ``GET .../{id}`` and ``rotate_secret``.

``ROUTES`` is the one list of routes: the app registers it and ``openapi.py`` documents it, so the
two cannot drift apart. Handlers are thin: parse, call ``WebhookService``, shape the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from services.admin.service import WebhookService, webhook_view
from services.admin.validation import BadRequest, parse_body
from services.shared.auth import NOT_FOUND, PRINCIPAL
from services.shared.digits import ascii_int
from services.shared.webhooks import Webhook

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE = web.AppKey("service", WebhookService)

WEBHOOKS = "/api/v1/accounts/{account_id}/webhooks"
WEBHOOK = WEBHOOKS + "/{id}"
ROTATE = WEBHOOK + "/rotate_secret"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class NotFound(Exception):
    """No such webhook (or account) for this caller: 404 with Chatwoot's body."""


def not_found() -> NotFound:
    return NotFound(NOT_FOUND)


def _account(request: web.Request) -> int:
    """The path's account, if the caller may touch it; 404 otherwise (do not reveal it exists)."""
    account_id = ascii_int(request.match_info["account_id"])
    principal = request[PRINCIPAL]
    if account_id is None or not principal.may_access(account_id):
        raise not_found()
    return account_id


def _webhook_id(request: web.Request) -> int:
    webhook_id = ascii_int(request.match_info["id"])
    if webhook_id is None:
        raise not_found()
    return webhook_id


def _one(service: WebhookService, webhook: Webhook | None, *, reveal: bool = False) -> web.Response:
    if webhook is None:
        raise not_found()
    return json_response({"payload": {"webhook": webhook_view(webhook, service.now(), reveal=reveal)}})


def _page_param(request: web.Request, name: str, default: int, most: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    number = ascii_int(text, digits=9)
    if number is None or not 1 <= number <= most:
        raise BadRequest(f"{name} must be a whole number from 1 to {most}")
    return number


async def list_webhooks(request: web.Request) -> web.StreamResponse:
    """Chatwoot's shape: every webhook of the account (at most the per-account cap); with ``page`` /
    ``per_page`` one page of them in id order, plus ``meta`` (page, per_page, total)."""
    service = request.app[SERVICE]
    now = service.now()
    account_id = _account(request)
    cap = service.max_webhooks
    webhooks = service.for_account(account_id)
    if "page" not in request.query and "per_page" not in request.query:
        return json_response({"payload": {"webhooks": [webhook_view(w, now) for w in webhooks[:cap]]}})
    page = _page_param(request, "page", 1, 10**9)
    per_page = _page_param(request, "per_page", min(25, cap), cap)
    shown = webhooks[(page - 1) * per_page: page * per_page]
    return json_response({"payload": {"webhooks": [webhook_view(w, now) for w in shown]},
                          "meta": {"page": page, "per_page": per_page, "total": len(webhooks)}})


async def create_webhook(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    account_id = _account(request)
    webhook = await service.create(account_id, parse_body(await request.read()))
    return _one(service, webhook, reveal=True)


async def get_webhook(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    return _one(service, service.get(_account(request), _webhook_id(request)))


async def update_webhook(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    account_id, webhook_id = _account(request), _webhook_id(request)
    if service.get(account_id, webhook_id) is None:
        raise not_found()
    body = parse_body(await request.read())
    return _one(service, await service.update(account_id, webhook_id, body))


async def delete_webhook(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    if not await service.delete(_account(request), _webhook_id(request)):
        raise not_found()
    return web.Response(status=200)


async def rotate_secret(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    webhook = await service.rotate_secret(_account(request), _webhook_id(request))
    return _one(service, webhook, reveal=True)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str


ROUTES: tuple[Route, ...] = (
    Route("GET", WEBHOOKS, list_webhooks, "listWebhooks", "List the account's webhooks"),
    Route("POST", WEBHOOKS, create_webhook, "createWebhook",
          "Create a webhook; the response shows its signing secret once"),
    Route("GET", WEBHOOK, get_webhook, "getWebhook", "Show one webhook"),
    Route("PATCH", WEBHOOK, update_webhook, "updateWebhook", "Change url, name, subscriptions or enabled"),
    Route("PUT", WEBHOOK, update_webhook, "putWebhook", "Same as PATCH (Chatwoot compatibility)"),
    Route("DELETE", WEBHOOK, delete_webhook, "deleteWebhook", "Delete a webhook; 200 with an empty body"),
    Route("POST", ROTATE, rotate_secret, "rotateWebhookSecret",
          "New signing secret (shown once); the previous one keeps signing during the overlap"),
)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
