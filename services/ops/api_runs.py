"""Starting replay and recover runs from the API: planned within the caller's request, sent in the
background once claimed, stopped (and recorded as interrupted, so resumable) with the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ops.api_requests import Refusal, ScanSlots, body_flag, body_rate, json_response
from services.ops.render import plan_json
from services.replay.engine import Engine
from services.replay.plans import Options, Plan, ReplayRefusedError, Source
from services.replay.window import Window
from services.shared import kafka
from services.shared import logging as logs
from services.shared.auth import PRINCIPAL
from services.shared.errors import AkeceError
from services.shared.metrics import Metrics
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore
from services.shared.webhooks import Webhook

log = logs.get("replay.api")


class RunStarter:
    """Plans, claims and starts runs; owns the background tasks and, if it started one, the producer."""

    def __init__(self, settings: Settings, store: SubscriptionStore, producer: AIOKafkaProducer | None,
                 scans: ScanSlots, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.scans = scans
        self.metrics = metrics
        self._producer = producer
        self._own_producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[Any]] = set()

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

    async def start(self, kind: str, source: Source[Any], body: dict[str, Any], request: web.Request,
                    window: Window, webhook: Webhook, *, limit: int = 0) -> web.Response:
        """Plan the run (at most ``limit`` records, oldest first; 0: all); answer a dry run or an empty plan
        at once, else claim it, answer 202 and send it in the background (409: refused, or claimed by
        another run first)."""
        principal = request.get(PRINCIPAL)
        account = request.match_info["account_id"]
        user = "api:admin" if principal is not None and principal.is_admin else f"api:account:{account}"
        options = Options(dry_run=body_flag(body, "dry_run"), force=body_flag(body, "force"),
                          enable=body_flag(body, "enable"), rate=body_rate(body), user=user, limit=limit)
        engine = Engine(self.settings, source, producer=await self.producer(), options=options, store=self.store,
                        metrics=self.metrics)
        try:
            async with self.scans.slot(webhook.account_id):
                plan = await engine.plan(window)
        except ReplayRefusedError as exc:
            raise Refusal(409, {"error": str(exc)}) from None
        answer = {"replay_id": plan.run_id, "count": plan.total, **plan_json(kind, plan)}
        if options.dry_run or plan.total == 0:
            summary = await engine.execute(plan)
            status = 409 if summary.status == "refused" else 200
            payload = {**answer, "status": summary.status}
            if summary.status == "refused":
                return json_response({"error": "already replayed: pass force to send again", "payload": payload},
                                     status)
            return json_response({"payload": payload}, status)
        try:  # before answering 202: of two identical calls at once, one is refused here
            await engine.claim(plan)
        except ReplayRefusedError as exc:
            raise Refusal(409, {"error": str(exc), "payload": {**answer, "status": "refused"}}) from None
        task = asyncio.create_task(self._background(engine, plan))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return json_response({"payload": {**answer, "status": "running"}}, 202)

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


__all__ = ["RunStarter"]
