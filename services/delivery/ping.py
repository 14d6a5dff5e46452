"""A test delivery: a signed ``ping`` POSTed to one webhook at once, outside the delivery topics.

``akece-webhooks webhooks test ID`` uses it to check an endpoint and its signature verification
before (or after) real events flow. The request is a real attempt: the webhook's URL, its active
secrets, the same headers and signatures, the same HTTP client and network guard as the delivery
worker. It is sent once (never retried, never dead-lettered) and recorded in the attempt log with
``event_type: "ping"`` and ``outcome: "test"``, so the webhook's delivery history shows it as a test.

The body follows the contract's shape (no envelope, a top-level ``event``, the account)::

    {"event": "ping", "id": "<test id>", "webhook_id": 42, "account": {"id": 1},
     "created_at": "2026-12-06T08:00:00.000Z", "message": "Test delivery from Akece Webhooks"}
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer

from services.contract.deliveries import DeliveryMeta
from services.contract.times import iso_time
from services.contract.topics import Topics
from services.delivery import records
from services.delivery.http import HttpSender
from services.delivery.policy import AttemptResult
from services.delivery.signing import request_headers
from services.shared import kafka
from services.shared.settings import Settings
from services.shared.webhooks import Webhook

PING = "ping"
OUTCOME = "test"
EXCERPT_CHARS = 500


@dataclass(frozen=True)
class PingResult:
    """What was sent and what came back."""

    delivery_id: str
    body: bytes
    result: AttemptResult
    started_at: float

    @property
    def latency_ms(self) -> float:
        return round(self.result.duration_s * 1000, 1)

    @property
    def excerpt(self) -> str:
        return records.excerpt(self.result.body, EXCERPT_CHARS)


def ping_body(webhook: Webhook, test_id: str, now: float) -> bytes:
    return orjson.dumps({
        "event": PING,
        "id": test_id,
        "webhook_id": webhook.id,
        "account": {"id": webhook.account_id},
        "created_at": iso_time(now),
        "message": "Test delivery from Akece Webhooks",
    })


def attempt_meta(webhook: Webhook, delivery_id: str, started_at: float) -> DeliveryMeta:
    return DeliveryMeta(delivery_id=delivery_id, event_id=delivery_id, event_type=PING,
                        account_id=str(webhook.account_id), webhook_id=webhook.id, attempt=1,
                        event_time=iso_time(started_at))


async def send_test(settings: Settings, webhook: Webhook, sender: HttpSender,
                    producer: AIOKafkaProducer) -> PingResult:
    """POST one signed ping to the webhook and record the attempt (acknowledged) in the attempt log."""
    delivery_id = str(uuid.uuid4())
    started_at = time.time()
    body = ping_body(webhook, delivery_id, started_at)
    headers = request_headers(delivery_id=delivery_id, timestamp=int(started_at), body=body,
                              secrets=webhook.active_secrets(started_at), prefix=settings.http.header_prefix)
    result = await sender.post(webhook.url, body, headers, connect_timeout_s=webhook.connect_timeout_s,
                               total_timeout_s=webhook.total_timeout_s)
    record = records.attempt_record(attempt_meta(webhook, delivery_id, started_at), result, outcome=OUTCOME,
                                    next_delay_s=None, dlq_reason=None, started_at=started_at,
                                    response_limit=settings.http.max_response_bytes)
    await kafka.send(producer, Topics.from_settings(settings).attempts, record, key=str(webhook.id).encode(),
                     headers=[], timeout=settings.kafka.send_timeout_s)
    return PingResult(delivery_id, body, result, started_at)
