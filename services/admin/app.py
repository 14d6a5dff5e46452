"""The management API: an aiohttp application and the ``api`` Worker that serves it.

Compose it with the subscription table under the supervisor::

    table = SubscriptionTable(settings)
    store = SubscriptionStore(settings, table, producer)      # producer started by the caller
    api = ApiWorker(settings, table, store, metrics)
    supervisor = Supervisor([table, api, ...], ...)
    api.bind_health(supervisor.states)                         # /healthz, /readyz on the API port

``api.port`` (or ``await api.wait_serving()``) tells the bound port when ``AKECE_API_PORT=0``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError

from services.admin import routes
from services.admin.routes import SERVICE, json_response
from services.admin.service import Clock, WebhookService
from services.admin.validation import BadRequest, Invalid
from services.console import add_console
from services.ops.api import add_replay_routes
from services.shared import logging as logs
from services.shared.auth import NOT_FOUND, PRINCIPAL, TokenAuthenticator, token_from_headers
from services.shared.errors import BrokerUnreachableError, KafkaUnavailableError
from services.shared.metrics import Metrics, status_class
from services.shared.netguard import NetworkGuard
from services.shared.runtime import WorkerState, health_routes
from services.shared.settings import Settings
from services.shared.subscriptions import NotYetVisibleError, SubscriptionStore, SubscriptionTable

log = logs.get("admin")

TABLE = web.AppKey("table", SubscriptionTable)
AUTH = web.AppKey("auth", TokenAuthenticator)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", SubscriptionStore)
API_PREFIX = "/api/"
UNAUTHORIZED = "Invalid Access Token"
RETRY_AFTER_S = 5  # what a write refused while Kafka is unreachable suggests
NOT_YET_VISIBLE = ("The change was stored but is not yet visible: this instance has not applied it yet. "
                   "Do not repeat it; read it back in a moment")


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


@web.middleware
async def observe(request: web.Request, handler: routes.Handler) -> web.StreamResponse:
    """Count and time every request by method, route template and status class."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.api_requests.labels(request.method, route, status_class(status)).inc()
        metrics.api_latency.labels(request.method).observe(elapsed)
        log.debug("api.request", method=request.method, route=route, status=status,
                  duration_ms=round(elapsed * 1000, 2))


@web.middleware
async def errors(request: web.Request, handler: routes.Handler) -> web.StreamResponse:
    """JSON bodies for every error: 400 bad JSON, 422 Chatwoot-shaped, 503 store unavailable or a
    stored change not yet applied here (a repeated create would make a second webhook)."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_response({"error": "Bad Request", "message": str(exc)}, status=400)
    except Invalid as exc:
        return json_response(exc.body(), status=422)
    except routes.NotFound:
        return _error(404, NOT_FOUND)
    except NotYetVisibleError as exc:  # before TimeoutError, its base: the write did happen
        log.warning("api.write_not_yet_visible", method=request.method, partition=exc.partition,
                    offset=exc.offset)
        body: dict[str, Any] = {"error": NOT_YET_VISIBLE, "stored": True}
        if exc.key.isdigit():
            body["webhook_id"] = int(exc.key)
        return json_response(body, status=503)
    except BrokerUnreachableError as exc:  # known before trying: nothing was stored
        response = _error(503, str(exc))
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    except (KafkaUnavailableError, KafkaError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("api.store_unavailable", method=request.method, error=error)
        return _error(503, "The subscription store is unavailable; try again")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, NOT_FOUND if exc.status == 404 else exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except ConnectionResetError:  # the client went away: nothing to answer, nothing wrong here
        raise
    except Exception as exc:  # a bug on one request: that request's 500, logged by type (no values), counted
        resource = request.match_info.route.resource
        log.error("api.internal_error", method=request.method, error_class="internal", error=type(exc).__name__,
                  route=resource.canonical if resource is not None else "unmatched")
        request.app[METRICS].internal_errors.labels(stage="api").inc()
        return _error(500, "Internal error")


@web.middleware
async def authenticate(request: web.Request, handler: routes.Handler) -> web.StreamResponse:
    """``/api/`` needs a token (401 without); and a caught-up table (503 before)."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    principal = request.app[AUTH].authenticate(token_from_headers(request.headers))
    if principal is None:
        return _error(401, UNAUTHORIZED)
    if not request.app[TABLE].ready():
        if request.app[STORE].available():
            return _error(503, "The subscription table is still loading; try again")
        response = _error(503, "Kafka is unreachable: the subscription table cannot load; try again later")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    request[PRINCIPAL] = principal
    return await handler(request)


def openapi_document() -> bytes:
    return resources.files("services.admin").joinpath("openapi.json").read_bytes()


def create_app(settings: Settings, table: SubscriptionTable, store: SubscriptionStore, metrics: Metrics, *,
               states: list[WorkerState] | None = None, guard: NetworkGuard | None = None,
               clock: Clock = time.time) -> web.Application:
    """The API application. ``states`` (a list, filled in later by ``ApiWorker.bind_health``) feeds
    ``/healthz`` and ``/readyz``; without it they report the subscription table alone."""
    auth = TokenAuthenticator.from_settings(settings)
    if not auth.configured:
        log.warning("api.no_tokens", hint="set AKECE_API_ADMIN_TOKEN or AKECE_API_ACCOUNT_TOKENS; "
                    "every /api/ request is refused until then")
    guard = guard or NetworkGuard(settings.allowed_private_cidrs)
    app = web.Application(middlewares=[observe, errors, authenticate],
                          client_max_size=settings.api.max_body_bytes)
    app[SERVICE] = WebhookService(table, store, guard, secret_overlap_s=settings.api.secret_overlap_s,
                                  clock=clock, max_webhooks=settings.api.max_webhooks_per_account)
    app[TABLE] = table
    app[STORE] = store
    app[AUTH] = auth
    app[METRICS] = metrics
    routes.add_routes(app)
    add_replay_routes(app, settings, table, store, metrics=metrics)
    add_console(app, settings, table)  # the web console: / and /app/...
    document = openapi_document()

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
    if states is None:
        states = [WorkerState(table)]
        states[0].alive = True
    health_routes(app, states, metrics.registry, metrics)
    return app


class ApiWorker:
    """Serves the API until ``stop``; then stops accepting and lets in-flight requests finish."""

    name = "api"

    def __init__(self, settings: Settings, table: SubscriptionTable, store: SubscriptionStore,
                 metrics: Metrics, *, guard: NetworkGuard | None = None, clock: Clock = time.time) -> None:
        self._settings = settings
        self._table = table
        self._states: list[WorkerState] = [WorkerState(table)]
        self._states[0].alive = True
        self.app = create_app(settings, table, store, metrics, states=self._states, guard=guard, clock=clock)
        self.port: int | None = None
        self._serving = asyncio.Event()

    def bind_health(self, states: Sequence[WorkerState]) -> None:
        """Report the supervisor's workers (instead of the table alone) on this port's health routes."""
        self._states[:] = list(states)

    def ready(self) -> bool:
        return self._serving.is_set() and self._table.ready()

    async def wait_serving(self) -> int:
        """Wait until the site listens; returns the bound port."""
        await self._serving.wait()
        assert self.port is not None
        return self.port

    async def run(self, stop: asyncio.Event) -> None:
        api = self._settings.api
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=api.shutdown_grace_s)
        await runner.setup()
        try:
            site = web.TCPSite(runner, api.host, api.port, reuse_address=True)
            await site.start()
            sockets = getattr(site._server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else api.port
            self._serving.set()
            log.info("api.listening", host=api.host, port=self.port)
            await stop.wait()
            log.info("api.stopping", grace_s=api.shutdown_grace_s)
        finally:
            self._serving.clear()
            await runner.cleanup()
        log.info("api.stopped")
