"""``dlq replay``: dead letters back onto the deliveries topic, once, at a rate the endpoint can take.

Each matching dead letter is re-enqueued with its original key, body and delivery id (receivers
deduplicate on it), attempt 1, and ``akece_replay_id`` naming the replay; the story headers of the
failure are dropped. The worker looks up the webhook's current URL and secret when it delivers. A
dead letter whose webhook is deleted is skipped; one whose webhook is disabled is skipped unless
``enable`` re-enables the webhook first. Planning, the run book and the once-only guarantee are the
engine's (``services.replay.engine``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from services.contract import headers as h
from services.contract.dead_letters import DeadLetter, DlqFilter
from services.contract.topics import Topics
from services.replay.engine import Engine
from services.replay.plans import Confirm, Options, ProgressFactory, Send, Skip, Summary
from services.replay.runs import Kind
from services.replay.window import Window
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore
from services.shared.webhooks import Webhook

STORY_HEADERS = (h.FIRST_ATTEMPT_AT, h.LAST_ATTEMPT_AT, h.DUE_AT, h.LAST_STATUS, h.LAST_ERROR,
                 h.LAST_ERROR_CLASS, h.LAST_RESPONSE, h.DLQ_REASON, h.DLQ_AT, h.ATTEMPTS, h.REPLAY_ID,
                 h.RECOVER_ID)
"""Headers describing the failed attempts: not carried back onto the deliveries topic."""

_FRESH: dict[str, str | int | None] = {**dict.fromkeys(STORY_HEADERS), h.ATTEMPT: 1}


def replay_headers(dead: DeadLetter) -> h.Headers:
    """The original delivery headers, attempt 1, without the failure's story (the engine adds the run id)."""
    return h.replace(dead.headers, _FRESH)


class DlqSource:
    """Dead letters as a replay source."""

    kind: Kind = "replay"
    id_header = h.REPLAY_ID

    def __init__(self, settings: Settings, filters: DlqFilter, lookup: Callable[[int], Webhook | None]) -> None:
        self.topic = Topics.from_settings(settings).dlq
        self.filter = filters
        self.filters: dict[str, Any] = filters.to_json()
        self._lookup = lookup
        self._parsed: dict[str, DlqFilter] = {}

    def parse(self, record: Any) -> DeadLetter:
        return DeadLetter.from_record(record)

    def select(self, dead: DeadLetter) -> Send | Skip | None:
        if not self.filter.matches(dead):
            return None
        if not dead.delivery_id or dead.webhook_id is None:
            return Skip("malformed")
        webhook = self._lookup(dead.webhook_id)
        if webhook is None:
            return Skip("webhook_deleted", dead.webhook_id)
        if str(webhook.account_id) != dead.account_id:
            return Skip("account_mismatch", dead.webhook_id)
        return Send(dead.webhook_id, dead.delivery_id, dead.key, dead.value, replay_headers(dead),
                    webhook_disabled=not webhook.enabled, origin=dead.replay_id)

    def matches(self, filters: Mapping[str, Any], dead: DeadLetter) -> bool:
        key = repr(sorted(filters.items()))
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = DlqFilter.from_json(filters)
        return parsed.matches(dead)

    def describe(self, dead: DeadLetter) -> dict[str, Any]:
        return dead.to_json()


async def replay(settings: Settings, filters: DlqFilter, window: Window, *, lookup: Callable[[int], Webhook | None],
                 producer: AIOKafkaProducer, options: Options, store: SubscriptionStore | None = None,
                 confirm: Confirm | None = None, progress: ProgressFactory | None = None) -> Summary:
    """Plan and (unless a dry run, refused or not confirmed) run one replay."""
    engine = Engine(settings, DlqSource(settings, filters, lookup), producer=producer, options=options,
                    store=store, progress=progress)
    plan = await engine.plan(window)
    return await engine.execute(plan, confirm=confirm)
