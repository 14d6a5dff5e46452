"""The delivery record contract: deterministic ids and keys."""

from __future__ import annotations

import uuid

from services.contract import headers as h
from services.contract.deliveries import (
    DELIVERY_NAMESPACE,
    DeliveryMeta,
    conversation_of_event_key,
    delivery_id,
    delivery_key,
    first_attempt_headers,
)


def test_delivery_id_is_the_uuid5_of_event_and_webhook() -> None:
    for event_id, webhook_id in [("e1", 1), ("5f0c-uuid", 187431261053842), ("", 0)]:
        expected = str(uuid.uuid5(DELIVERY_NAMESPACE, f"{event_id}/{webhook_id}"))
        assert delivery_id(event_id, webhook_id) == expected
    assert delivery_id("e1", 1) != delivery_id("e1", 2) != delivery_id("e2", 1)


def test_keys() -> None:
    assert conversation_of_event_key(b"7:42") == "42"
    assert conversation_of_event_key(b"7") is None
    assert conversation_of_event_key(None) is None
    assert delivery_key(9, "42") == b"9:42"
    assert delivery_key(9, None) == b"9:-"


def test_first_attempt_headers_round_trip() -> None:
    headers = first_attempt_headers(event_id="e1", event_type="message_created", account_id="7", webhook_id=9,
                                    event_time="2026-01-01T00:00:00.000Z", routed_time="2026-01-01T00:00:01.000Z")
    meta = DeliveryMeta.from_headers(h.to_dict(headers))
    assert meta.delivery_id == delivery_id("e1", 9)
    assert (meta.attempt, meta.webhook_id, meta.account_id, meta.event_type) == (1, 9, "7", "message_created")
