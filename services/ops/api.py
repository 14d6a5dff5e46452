"""The API equivalents for account owners, under the admin API's auth rules.

    add_replay_routes(app, settings, table, store, producer=producer)

adds, under ``/api/v1/accounts/{account_id}/webhooks/{id}``:

- ``GET .../deliveries?since=24h&limit=100``: recent attempts (attempt log), newest first.
- ``GET .../dead_letters?since=24h&until=&event=&reason=&limit=100``: dead letters, oldest first.
- ``POST .../replay`` body ``{since, until, event, reason, delivery_id, dry_run, rate, force, enable, limit}``
  (``delivery_id``: one id, a comma-separated string or a list: only those dead letters; ``limit``: at
  most that many now, oldest first, the same request again sends the next ones): 202 with
  the count and the replay id (it runs in the background); 200 for a dry run or nothing to do;
  409 when everything matching was already replayed (``force`` to send again) or a run over an
  overlapping range is active: in this process or another, even one started at the same moment
  (the run's claim in the replays topic is won before the 202; the 409 names the run that won).
- ``POST .../recover`` body ``{since, until, dry_run, rate, force, enable}``: the same for recover.
- ``GET .../replays/{replay_id}``: a run's state from the replays topic (this webhook's runs only).

Auth: the caller's ``Principal`` set by the admin app's middleware, or (mounted elsewhere) the
token of the request checked by ``services.shared.auth``. A caller who may not act on the account,
or a webhook of another account, gets 404 with the admin API's body, revealing nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.contract.dead_letters import DlqFilter
from services.contract.topics import Topics, format_delay
from services.ops.api_requests import (
    MAX_LIMIT,
    Refusal,
    ScanSlots,
    bad,
    body_limit,
    body_str,
    json_response,
    not_found,
    query_limit,
    read_body,
)
from services.ops.api_runs import RunStarter
from services.ops.attempts import recent_attempts
from services.ops.dlq import list_dead_letters
from services.replay.dlq_source import DlqSource
from services.replay.recover import EventsSource
from services.replay.runs import RunBook
from services.replay.window import Window, reader
from services.shared import kafka
from services.shared.auth import PRINCIPAL, TokenAuthenticator, token_from_headers
from services.shared.digits import ascii_int
from services.shared.errors import ValidationError
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import Webhook

Authorize = Callable[[web.Request, int], bool]
"""``(request, account id) -> may the caller act on that account``."""

WEBHOOK = "/api/v1/accounts/{account_id}/webhooks/{id}"
ROUTES = (
    ("GET", WEBHOOK + "/deliveries", "Recent delivery attempts of a webhook (attempt log), newest first"),
    ("GET", WEBHOOK + "/dead_letters", "Dead letters of a webhook in a time window"),
    ("POST", WEBHOOK + "/replay", "Re-enqueue a webhook's dead letters (once); returns count and replay id"),
    ("POST", WEBHOOK + "/recover", "Re-fan-out a webhook's events of a time window from the events topic"),
    ("GET", WEBHOOK + "/replays/{replay_id}", "State of one replay or recover run"),
)
DEFAULT_SINCE = "24h"


def token_authorizer(settings: Settings) -> Authorize:
    """The admin API's rule: the principal its middleware set, else the request's own token."""
    tokens = TokenAuthenticator.from_settings(settings)

    def authorize(request: web.Request, account_id: int) -> bool:
        principal = request.get(PRINCIPAL) or tokens.authenticate(token_from_headers(request.headers))
        return principal is not None and principal.may_access(account_id)
    return authorize


class ReplayRoutes:
    """The handlers of ``ROUTES``: each resolves the caller's webhook, then reads or starts a run."""

    def __init__(self, settings: Settings, table: SubscriptionTable, store: SubscriptionStore,
                 producer: AIOKafkaProducer | None, authorize: Authorize, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.table = table
        self.store = store
        self.authorize = authorize
        self.topics = Topics.from_settings(settings)
        self.scans = ScanSlots(settings.api.max_scans_per_account)
        self.runs = RunStarter(settings, store, producer, self.scans, metrics)

    @property
    def tasks(self) -> set[asyncio.Task[Any]]:
        """The runs sending in the background."""
        return self.runs.tasks

    def handler(self, method: Callable[[web.Request, Webhook], Any]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                webhook = self._webhook(request)
                response: web.StreamResponse = await method(request, webhook)
                return response
            except Refusal as refusal:
                response = json_response(refusal.body, refusal.status)
                response.headers.update(refusal.headers)
                return response
            except ValidationError as exc:
                return json_response({"error": "Bad Request", "message": str(exc)}, 400)
        return handle

    def _webhook(self, request: web.Request) -> Webhook:
        account, webhook_id = ascii_int(request.match_info["account_id"]), ascii_int(request.match_info["id"])
        if account is None or webhook_id is None or not self.authorize(request, account):
            raise not_found()
        webhook = self.table.get(webhook_id)
        if webhook is None or webhook.account_id != account:
            raise not_found()
        return webhook

    # --- reads -------------------------------------------------------------------------------------
    def window(self, since: str, until: str | None) -> Window:
        """The request's window, refused (400) when it spans more than ``AKECE_API_MAX_WINDOW_S``."""
        now = datetime.now(UTC)
        window = Window.parse(since, until, now)
        limit = self.settings.api.max_window_s
        if window.since is not None and (window.until or now) - window.since > timedelta(seconds=limit):
            raise bad(f"since: the window may span at most {format_delay(limit)} (AKECE_API_MAX_WINDOW_S)")
        return window

    async def deliveries(self, request: web.Request, webhook: Webhook) -> web.Response:
        window = self.window(request.query.get("since", DEFAULT_SINCE), None)
        limit = query_limit(request)
        async with self.scans.slot(webhook.account_id), kafka.started(reader(self.settings)) as consumer:
            found = await recent_attempts(consumer, self.topics.attempts, webhook.id, since_ms=window.since_ms,
                                          limit=limit)
        return json_response({"payload": {"deliveries": [attempt.to_json() for attempt in found]}})

    async def dead_letters(self, request: web.Request, webhook: Webhook) -> web.Response:
        query = request.query
        window = self.window(query.get("since", DEFAULT_SINCE), query.get("until"))
        filters = DlqFilter.of(account=str(webhook.account_id), webhook=webhook.id, event=query.get("event"),
                               reason=query.get("reason"))
        limit = query_limit(request)
        async with self.scans.slot(webhook.account_id):
            listing = await list_dead_letters(self.settings, filters, window, limit=limit)
        return json_response({"payload": {"dead_letters": [d.to_json() for d in listing.items],
                                          "matched": listing.matched, "superseded": listing.superseded,
                                          "window": window.describe()}})

    async def run_state(self, request: web.Request, webhook: Webhook) -> web.Response:
        run = (await RunBook.load(self.settings)).get(request.match_info["replay_id"])
        if run is None or webhook.id not in _webhooks_of(run.filters):
            raise not_found()
        return json_response({"payload": run.model_dump(mode="json", exclude={"pid", "host"})})

    # --- runs ----------------------------------------------------------------------------------------
    async def replay(self, request: web.Request, webhook: Webhook) -> web.Response:
        body = await read_body(request)
        filters = DlqFilter.of(account=str(webhook.account_id), webhook=webhook.id, event=body_str(body, "event"),
                               reason=body_str(body, "reason"), delivery=body_str(body, "delivery_id"))
        source = DlqSource(self.settings, filters, self.table.get)
        window = self.window(body_str(body, "since") or DEFAULT_SINCE, body_str(body, "until"))
        return await self.runs.start("replay", source, body, request, window, webhook, limit=body_limit(body))

    async def recover(self, request: web.Request, webhook: Webhook) -> web.Response:
        body = await read_body(request)
        since = body_str(body, "since")
        if not since:
            raise bad("since is required")
        window = self.window(since, body_str(body, "until"))
        return await self.runs.start("recover", EventsSource(self.settings, webhook), body, request, window, webhook)


def _webhooks_of(filters: dict[str, Any]) -> set[int]:
    if "webhook" in filters:
        return {int(filters["webhook"])}
    return {int(w) for w in filters.get("webhooks", ())}


REPLAY_ROUTES = web.AppKey("replay_routes", ReplayRoutes)


def add_replay_routes(app: web.Application, settings: Settings, table: SubscriptionTable, store: SubscriptionStore,
                      *, producer: AIOKafkaProducer | None = None, authorize: Authorize | None = None,
                      metrics: Metrics | None = None) -> ReplayRoutes:
    """Add the dead-letter, replay and recover routes (``ROUTES``) to ``app``.

    ``producer``: a started producer to re-enqueue with (else one is started on first use and
    stopped with the app). ``authorize``: the account rule (default: ``token_authorizer``). ``metrics``:
    where unexpected per-record and background errors are counted (``internal_errors``).
    Returns the handlers' owner (``.tasks``: the replays running in the background).
    """
    routes = ReplayRoutes(settings, table, store, producer, authorize or token_authorizer(settings), metrics)
    app[REPLAY_ROUTES] = routes
    app.cleanup_ctx.append(routes.runs.lifecycle)
    handlers = {"/deliveries": routes.deliveries, "/dead_letters": routes.dead_letters, "/replay": routes.replay,
                "/recover": routes.recover, "/replays/{replay_id}": routes.run_state}
    for method, path, _ in ROUTES:
        app.router.add_route(method, path, routes.handler(handlers[path.removeprefix(WEBHOOK)]))
    return routes


__all__ = ["DEFAULT_SINCE", "MAX_LIMIT", "REPLAY_ROUTES", "ROUTES", "WEBHOOK", "Authorize", "ReplayRoutes",
           "add_replay_routes", "token_authorizer"]
