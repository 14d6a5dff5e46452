"""The API equivalents for account owners, under the admin API's auth rules.

    add_replay_routes(app, settings, table, store, producer=producer)

adds, under ``/api/v1/accounts/{account_id}/webhooks/{id}``:

- ``GET .../deliveries?since=24h&limit=100``: recent attempts (attempt log), newest first.
- ``GET .../dead_letters?since=24h&until=&event=&reason=&limit=100``: dead letters, oldest first.
- ``POST .../replay`` body ``{since, until, event, reason, delivery_id, dry_run, rate, force, enable}``
  (``delivery_id``: one id, a comma-separated string or a list: only those dead letters): 202 with
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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.contract.dead_letters import DlqFilter
from services.contract.topics import Topics, format_delay
from services.ops.attempts import recent_attempts
from services.ops.dlq import list_dead_letters
from services.ops.render import plan_json
from services.replay.dlq_source import DlqSource
from services.replay.engine import Engine
from services.replay.plans import Options, Plan, ReplayRefusedError, Source
from services.replay.recover import EventsSource
from services.replay.runs import RunBook
from services.replay.window import Window, reader
from services.shared import kafka
from services.shared import logging as logs
from services.shared.auth import NOT_FOUND, PRINCIPAL, TokenAuthenticator, token_from_headers
from services.shared.digits import ascii_int
from services.shared.errors import AkeceError, ValidationError
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from services.shared.webhooks import Webhook

log = logs.get("replay.api")

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
MAX_LIMIT = 1000
DEFAULT_SINCE = "24h"


def token_authorizer(settings: Settings) -> Authorize:
    """The admin API's rule: the principal its middleware set, else the request's own token."""
    tokens = TokenAuthenticator.from_settings(settings)

    def authorize(request: web.Request, account_id: int) -> bool:
        principal = request.get(PRINCIPAL) or tokens.authenticate(token_from_headers(request.headers))
        return principal is not None and principal.may_access(account_id)
    return authorize


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


class _Refusal(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = headers or {}


def _not_found() -> _Refusal:
    return _Refusal(404, {"error": NOT_FOUND})


def _bad(message: str) -> _Refusal:
    return _Refusal(400, {"error": "Bad Request", "message": message})


class ReplayRoutes:
    def __init__(self, settings: Settings, table: SubscriptionTable, store: SubscriptionStore,
                 producer: AIOKafkaProducer | None, authorize: Authorize, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.table = table
        self.store = store
        self.authorize = authorize
        self.topics = Topics.from_settings(settings)
        self._producer = producer
        self._own_producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.scans = ScanSlots(settings.api.max_scans_per_account)

    # --- plumbing ------------------------------------------------------------------------------
    async def producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._own_producer is None:
                producer = kafka.producer(self.settings)
                await kafka.start(producer)
                self._own_producer = producer
        return self._own_producer

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        """Stop background runs (recorded as interrupted: resumable) and our producer on shutdown."""
        yield
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._own_producer is not None:
            await self._own_producer.stop()

    def handler(self, method: Callable[[web.Request, Webhook], Any]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                webhook = self._webhook(request)
                response: web.StreamResponse = await method(request, webhook)
                return response
            except _Refusal as refusal:
                response = _json(refusal.body, refusal.status)
                response.headers.update(refusal.headers)
                return response
            except ValidationError as exc:
                return _json({"error": "Bad Request", "message": str(exc)}, 400)
        return handle

    def _webhook(self, request: web.Request) -> Webhook:
        account, webhook_id = ascii_int(request.match_info["account_id"]), ascii_int(request.match_info["id"])
        if account is None or webhook_id is None or not self.authorize(request, account):
            raise _not_found()
        webhook = self.table.get(webhook_id)
        if webhook is None or webhook.account_id != account:
            raise _not_found()
        return webhook

    # --- reads -------------------------------------------------------------------------------------
    def window(self, since: str, until: str | None) -> Window:
        """The request's window, refused (400) when it spans more than ``AKECE_API_MAX_WINDOW_S``."""
        now = datetime.now(UTC)
        window = Window.parse(since, until, now)
        limit = self.settings.api.max_window_s
        if window.since is not None and (window.until or now) - window.since > timedelta(seconds=limit):
            raise _bad(f"since: the window may span at most {format_delay(limit)} (AKECE_API_MAX_WINDOW_S)")
        return window

    async def deliveries(self, request: web.Request, webhook: Webhook) -> web.Response:
        window = self.window(request.query.get("since", DEFAULT_SINCE), None)
        limit = _limit(request)
        async with self.scans.slot(webhook.account_id), kafka.started(reader(self.settings)) as consumer:
            found = await recent_attempts(consumer, self.topics.attempts, webhook.id, since_ms=window.since_ms,
                                          limit=limit)
        return _json({"payload": {"deliveries": [attempt.to_json() for attempt in found]}})

    async def dead_letters(self, request: web.Request, webhook: Webhook) -> web.Response:
        query = request.query
        window = self.window(query.get("since", DEFAULT_SINCE), query.get("until"))
        filters = DlqFilter.of(account=str(webhook.account_id), webhook=webhook.id, event=query.get("event"),
                               reason=query.get("reason"))
        limit = _limit(request)
        async with self.scans.slot(webhook.account_id):
            listing = await list_dead_letters(self.settings, filters, window, limit=limit)
        return _json({"payload": {"dead_letters": [d.to_json() for d in listing.items], "matched": listing.matched,
                                  "superseded": listing.superseded,
                                  "window": window.describe()}})

    async def run_state(self, request: web.Request, webhook: Webhook) -> web.Response:
        run = (await RunBook.load(self.settings)).get(request.match_info["replay_id"])
        if run is None or webhook.id not in _webhooks_of(run.filters):
            raise _not_found()
        return _json({"payload": run.model_dump(mode="json", exclude={"pid", "host"})})

    # --- runs ----------------------------------------------------------------------------------------
    async def replay(self, request: web.Request, webhook: Webhook) -> web.Response:
        body = await _body(request)
        filters = DlqFilter.of(account=str(webhook.account_id), webhook=webhook.id, event=_str(body, "event"),
                               reason=_str(body, "reason"), delivery=_str(body, "delivery_id"))
        source = DlqSource(self.settings, filters, self.table.get)
        return await self._run("replay", source, body, request, _str(body, "since") or DEFAULT_SINCE, webhook)

    async def recover(self, request: web.Request, webhook: Webhook) -> web.Response:
        body = await _body(request)
        since = _str(body, "since")
        if not since:
            raise _bad("since is required")
        return await self._run("recover", EventsSource(self.settings, webhook), body, request, since, webhook)

    async def _run(self, kind: str, source: Source[Any], body: dict[str, Any], request: web.Request,
                   since: str, webhook: Webhook) -> web.Response:
        window = self.window(since, _str(body, "until"))
        principal = request.get(PRINCIPAL)
        account = request.match_info["account_id"]
        user = "api:admin" if principal is not None and principal.is_admin else f"api:account:{account}"
        options = Options(dry_run=_flag(body, "dry_run"), force=_flag(body, "force"), enable=_flag(body, "enable"),
                          rate=_rate(body), user=user)
        engine = Engine(self.settings, source, producer=await self.producer(), options=options, store=self.store,
                        metrics=self.metrics)
        try:
            async with self.scans.slot(webhook.account_id):
                plan = await engine.plan(window)
        except ReplayRefusedError as exc:
            raise _Refusal(409, {"error": str(exc)}) from None
        answer = _answer(kind, plan)
        if options.dry_run or plan.total == 0:
            summary = await engine.execute(plan)
            status = 409 if summary.status == "refused" else 200
            payload = {**answer, "status": summary.status}
            if summary.status == "refused":
                return _json({"error": "already replayed: pass force to send again", "payload": payload}, status)
            return _json({"payload": payload}, status)
        try:  # before answering 202: of two identical calls at once, one is refused here
            await engine.claim(plan)
        except ReplayRefusedError as exc:
            raise _Refusal(409, {"error": str(exc), "payload": {**answer, "status": "refused"}}) from None
        task = asyncio.create_task(self._background(engine, plan))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return _json({"payload": {**answer, "status": "running"}}, 202)

    async def _background(self, engine: Engine[Any], plan: Plan) -> None:
        try:
            summary = await engine.execute(plan)
            log.info("replay.api_done", run_id=plan.run_id, enqueued=summary.enqueued)
        except (AkeceError, KafkaError, OSError, TimeoutError) as exc:  # recorded as failed in the replays topic
            log.error("replay.api_failed", run_id=plan.run_id, error=str(exc)[:300])  # (or refused): resumable
        except Exception as exc:  # a bug: this run's failure (recorded as failed, resumable), not the process's
            log.error("replay.api_failed", run_id=plan.run_id, error_class="internal", error=type(exc).__name__)
            if self.metrics is not None:
                self.metrics.internal_errors.labels(stage="api").inc()


class ScanSlots:
    """At most ``limit`` topic scans per account at once; one more is refused (429), never queued."""

    RETRY_AFTER_S = 2

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: dict[int, int] = {}

    @asynccontextmanager
    async def slot(self, account_id: int) -> AsyncIterator[None]:
        if self.running.get(account_id, 0) >= self.limit:
            raise _Refusal(429, {"error": f"Too many scans: at most {self.limit} at once per account; "
                                          "try again shortly"}, {"Retry-After": str(self.RETRY_AFTER_S)})
        self.running[account_id] = self.running.get(account_id, 0) + 1
        try:
            yield
        finally:
            self.running[account_id] -= 1
            if not self.running[account_id]:
                del self.running[account_id]


def _answer(kind: str, plan: Plan) -> dict[str, Any]:
    return {"replay_id": plan.run_id, "count": plan.total, **plan_json(kind, plan)}


def _webhooks_of(filters: dict[str, Any]) -> set[int]:
    if "webhook" in filters:
        return {int(filters["webhook"])}
    return {int(w) for w in filters.get("webhooks", ())}


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise _bad(f"{name} must be a string")


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false")
    return value


def _rate(body: dict[str, Any]) -> float | None:
    value = body.get("rate")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _bad("rate must be a positive number (records per second)")
    return float(value)


def _limit(request: web.Request) -> int:
    limit = ascii_int(request.query.get("limit", "100"), digits=9)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"limit must be 1..{MAX_LIMIT}")
    return limit


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
    app.cleanup_ctx.append(routes.lifecycle)
    handlers = {"/deliveries": routes.deliveries, "/dead_letters": routes.dead_letters, "/replay": routes.replay,
                "/recover": routes.recover, "/replays/{replay_id}": routes.run_state}
    for method, path, _ in ROUTES:
        app.router.add_route(method, path, routes.handler(handlers[path.removeprefix(WEBHOOK)]))
    return routes
