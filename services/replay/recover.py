"""``recover``: re-fan-out one webhook's events from the events topic over a time window.

For endpoints that were disabled or misconfigured, where nothing reached the DLQ: every event of
the window that the webhook subscribes to (its account, one of its event types, published after
the webhook was created) is routed to it again by the router's own core, so the delivery id, key
and headers are the ones routing gave it the first time (plus ``akece_recover_id``). The run book,
``--force``, resume and rate limiting are the engine's, as for replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from services.contract import headers as h
from services.contract.times import iso, now_iso
from services.contract.topics import Topics
from services.replay.engine import Engine
from services.replay.plans import Confirm, Options, ProgressFactory, Send, Skip, Summary
from services.replay.runs import Kind
from services.replay.window import Window
from services.router.core import IncomingEvent, Invalid, RoutePolicy, route
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore
from services.shared.webhooks import Webhook

_CE = (h.CE_ID, h.CE_TYPE, h.CE_ACCOUNT_ID, h.CE_TIME)


def _ce_headers(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in record.headers or () if k in _CE and v}


class EventsSource:
    """One webhook's events as a recover source."""

    kind: Kind = "recover"
    id_header = h.RECOVER_ID

    def __init__(self, settings: Settings, webhook: Webhook, *, routed_time: str | None = None) -> None:
        self.topic = Topics.from_settings(settings).events
        self.webhook = webhook
        self.account = str(webhook.account_id)
        self.events = frozenset(webhook.subscriptions)
        self.filters: dict[str, Any] = {"webhook": webhook.id, "account": self.account,
                                        "events": sorted(self.events)}
        self.created_ms = int(datetime.fromisoformat(webhook.created_at).timestamp() * 1000)
        self.routed_time = routed_time or now_iso()
        self.policy = RoutePolicy.from_settings(settings.router)

    def parse(self, record: Any) -> Any:
        return record

    def select(self, record: Any) -> Send | Skip | None:
        ce = _ce_headers(record)
        if ce.get(h.CE_ACCOUNT_ID) != self.account or ce.get(h.CE_TYPE) not in self.events:
            return None
        if record.timestamp < self.created_ms:
            return Skip("before_webhook_created")
        event = IncomingEvent(record.topic, record.partition, record.offset, record.key, record.value,
                              record.headers or ())
        result = route(event, lambda _account, _event: (self.webhook,), routed_time=self.routed_time,
                       policy=self.policy)
        if isinstance(result, Invalid) or not result.deliveries:
            return Skip("invalid_event")
        delivery = result.deliveries[0]
        delivery_id = h.to_dict(delivery.headers)[h.DELIVERY_ID]
        return Send(self.webhook.id, delivery_id, delivery.key, delivery.value, delivery.headers,
                    webhook_disabled=not self.webhook.enabled)

    def matches(self, filters: Mapping[str, Any], record: Any) -> bool:
        return filters.get("webhook") == self.webhook.id and _ce_headers(record).get(h.CE_TYPE) in filters.get(
            "events", ())

    def describe(self, record: Any) -> dict[str, Any]:
        ce = _ce_headers(record)
        return {"event_id": ce.get(h.CE_ID), "event": ce.get(h.CE_TYPE), "account_id": ce.get(h.CE_ACCOUNT_ID),
                "time": ce.get(h.CE_TIME) or iso(record.timestamp / 1000), "webhook_id": self.webhook.id,
                "partition": record.partition, "offset": record.offset}


async def recover(settings: Settings, webhook: Webhook, window: Window, *, producer: AIOKafkaProducer,
                  options: Options, store: SubscriptionStore | None = None, confirm: Confirm | None = None,
                  progress: ProgressFactory | None = None) -> Summary:
    """Plan and (unless a dry run, refused or not confirmed) run one recover."""
    engine = Engine(settings, EventsSource(settings, webhook), producer=producer, options=options, store=store,
                    progress=progress)
    plan = await engine.plan(window)
    return await engine.execute(plan, confirm=confirm)
