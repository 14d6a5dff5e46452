"""The Webhooks page's live columns: each webhook's circuit state and last delivery status.

Both come from the attempt log, as ``akece-webhooks status`` reads it: open circuits through
``services.ops.circuits.open_circuits`` (its last 15 minutes), the last attempt of each webhook
from the tail of the partitions its webhooks' attempts live in (at most ``MAX_SCAN`` records each).
The page shows its rows at once and fills these columns from ``health.json``; one scan runs at a
time per process and its answer is reused for ``TTL_S`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from services.console.core import Ctx
from services.console.html import secured
from services.contract.attempts import AttemptRecord, decode
from services.contract.topics import Topics
from services.ops.attempts import partition_of
from services.ops.circuits import open_circuits
from services.replay.window import read_ranges, reader, topic_ends
from services.shared import kafka
from services.shared.settings import Settings

MAX_SCAN = 20_000
TTL_S = 1.0


class HealthCache:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._answers: dict[int, tuple[float, dict[str, Any]]] = {}

    async def of(self, settings: Settings, account_id: int, webhook_ids: set[int]) -> dict[str, Any]:
        async with self._lock:
            cached = self._answers.get(account_id)
            if cached is not None and time.monotonic() - cached[0] < TTL_S and webhook_ids <= set(
                    map(int, cached[1])):
                return cached[1]
            answer = await scan(settings, webhook_ids)
            self._answers[account_id] = (time.monotonic(), answer)
            return answer


HEALTH = web.AppKey("console_health", HealthCache)


def _last(attempt: AttemptRecord) -> dict[str, Any]:
    status = attempt.status
    return {"outcome": attempt.outcome, "status": status, "error_class": attempt.error_class,
            "time": attempt.time, "text": f"HTTP {status}" if status else str(attempt.error_class or attempt.outcome)}


async def scan(settings: Settings, webhook_ids: set[int]) -> dict[str, Any]:
    """``{webhook id: {"circuit": "closed"|"open", "last": {...}|None}}``."""
    topic = Topics.from_settings(settings).attempts
    found: dict[int, dict[str, Any]] = {w: {"circuit": "closed", "last": None} for w in webhook_ids}
    if not webhook_ids:
        return {}
    async with kafka.started(reader(settings)) as consumer:
        ends = await topic_ends(consumer, topic)
        wanted = {partition_of(w, len(ends)) for w in webhook_ids}
        starts = await consumer.beginning_offsets([tp for tp in ends if tp.partition in wanted])
        ranges = {tp.partition: (max(starts[tp], end - MAX_SCAN), end) for tp, end in ends.items()
                  if tp.partition in wanted}
        async for records in read_ranges(consumer, topic, ranges):
            for record in records:
                attempt = decode(record.value)
                if attempt is not None and attempt.webhook_id in found:
                    found[attempt.webhook_id]["last"] = _last(attempt)
        circuits = await open_circuits(consumer, topic, now=time.time(),
                                       threshold=settings.circuit.failure_threshold)
    for circuit in circuits.circuits:
        if circuit.webhook_id in found:
            found[circuit.webhook_id]["circuit"] = "open"
    return {str(k): v for k, v in found.items()}


async def health_json(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    ids = {w.id for w in ctx.console.table.for_account(ctx.account_id)}
    answer = await request.app[HEALTH].of(ctx.console.settings, ctx.account_id, ids)
    return secured(web.json_response({"webhooks": {k: v for k, v in answer.items() if int(k) in ids}}))
