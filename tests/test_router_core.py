"""Router core: routing decisions without Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import pytest

from schemas import DEFAULT_SUBSCRIPTIONS, EVENT_NAMES
from schemas.examples import example
from services.contract import headers as h
from services.contract import times
from services.contract.deliveries import DeliveryMeta, delivery_id, first_attempt_headers
from services.publisher.events import prepare
from services.router import core
from services.router.core import IncomingEvent, Invalid, Routed, RoutePolicy, route
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable
from services.shared.webhooks import Webhook, encode_webhook

ROUTED_AT = "2026-03-04T05:06:07.890Z"
EVENT_AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def webhook(webhook_id: int, account_id: int, subscriptions: Sequence[str] = DEFAULT_SUBSCRIPTIONS,
            enabled: bool = True) -> Webhook:
    return Webhook(id=webhook_id, account_id=account_id, url=f"https://example.com/{webhook_id}",
                   subscriptions=list(subscriptions), enabled=enabled, created_at=ROUTED_AT,
                   updated_at=ROUTED_AT)


def table_of(*webhooks: Webhook) -> SubscriptionTable:
    table = SubscriptionTable(Settings())
    for w in webhooks:
        table.apply(str(w.id).encode(), encode_webhook(w))
    return table


def incoming(event: str = "message_created", *, account_id: int = 7, conversation_id: int = 42,
             event_id: str = "evt-1", offset: int = 11) -> IncomingEvent:
    out = prepare(example(event, account_id=account_id, conversation_id=conversation_id),
                  new_id=lambda: event_id, now=lambda: EVENT_AT)
    return IncomingEvent("t.events", 2, offset, out.key, out.value, out.headers)


def with_headers(event: IncomingEvent, **changes: bytes | None) -> IncomingEvent:
    headers = [(k, v) for k, v in event.headers if k not in changes]
    headers += [(k, v) for k, v in changes.items() if v is not None]
    return IncomingEvent(event.topic, event.partition, event.offset, event.key, event.value, headers)


def with_value(event: IncomingEvent, value: bytes | None) -> IncomingEvent:
    return IncomingEvent(event.topic, event.partition, event.offset, event.key, value, event.headers)


def routed(result: core.RouteResult) -> Routed:
    assert isinstance(result, Routed), result
    return result


def invalid(result: core.RouteResult) -> Invalid:
    assert isinstance(result, Invalid), result
    return result


def test_one_delivery_per_matching_enabled_webhook() -> None:
    table = table_of(webhook(1, 7), webhook(2, 7, ["message_created"]), webhook(3, 7, ["contact_created"]),
                     webhook(4, 7, enabled=False), webhook(5, 8))
    event = incoming()
    result = routed(route(event, table.matching, routed_time=ROUTED_AT))
    assert [d.webhook_id for d in result.deliveries] == [1, 2]
    assert result.outcome == "routed"
    for d in result.deliveries:
        assert d.value is event.value  # the same bytes, never re-serialized
        assert d.key == f"{d.webhook_id}:42".encode()
        meta = DeliveryMeta.from_headers(h.to_dict(d.headers))
        assert meta.delivery_id == delivery_id("evt-1", d.webhook_id)
        assert (meta.event_id, meta.event_type, meta.account_id, meta.attempt) == (
            "evt-1", "message_created", "7", 1)
        assert meta.event_time == "2026-03-04T05:06:07.000Z"
        assert h.to_dict(d.headers)[h.ROUTED_TIME] == ROUTED_AT


def test_headers_are_first_attempt_headers() -> None:
    table = table_of(webhook(1, 7), webhook(123456789012, 7))
    for event_time in (b"2026-03-04T05:06:07.000Z", None):
        event = with_headers(incoming(), **{h.CE_TIME: event_time})
        for d in routed(route(event, table.matching, routed_time=ROUTED_AT)).deliveries:
            assert d.headers == first_attempt_headers(
                event_id="evt-1", event_type="message_created", account_id="7", webhook_id=d.webhook_id,
                event_time=event_time.decode() if event_time else None, routed_time=ROUTED_AT)


def test_routing_again_gives_the_same_delivery_ids() -> None:
    table = table_of(webhook(1, 7), webhook(2, 7))
    first = routed(route(incoming(), table.matching, routed_time=ROUTED_AT))
    again = routed(route(incoming(), table.matching, routed_time="2030-01-01T00:00:00.000Z"))
    ids = [h.to_dict(d.headers)[h.DELIVERY_ID] for d in first.deliveries]
    assert ids == [h.to_dict(d.headers)[h.DELIVERY_ID] for d in again.deliveries]
    assert len(set(ids)) == 2


def test_no_subscriber_is_routed_to_nobody() -> None:
    result = routed(route(incoming(account_id=99), table_of(webhook(1, 7)).matching, routed_time=ROUTED_AT))
    assert result.deliveries == ()
    assert result.outcome == "no_subscriber"


def test_key_without_conversation() -> None:
    result = routed(route(incoming("contact_created"), table_of(webhook(1, 7)).matching, routed_time=ROUTED_AT))
    assert [d.key for d in result.deliveries] == [b"1:-"]


@pytest.mark.parametrize("event", EVENT_NAMES)
@pytest.mark.parametrize("validation", ["full", "structural"])
def test_every_event_type_routes(event: str, validation: str) -> None:
    table = table_of(webhook(1, 7, EVENT_NAMES))
    policy = RoutePolicy("full" if validation == "full" else "structural")
    result = routed(route(incoming(event), table.matching, routed_time=ROUTED_AT, policy=policy))
    assert [d.webhook_id for d in result.deliveries] == [1]


STRUCTURAL = RoutePolicy()


def _reason(event: IncomingEvent, policy: RoutePolicy = STRUCTURAL) -> str:
    return invalid(route(event, table_of(webhook(1, 7)).matching, routed_time=ROUTED_AT, policy=policy)).reason


@pytest.mark.parametrize(("changes", "reason"), [
    ({h.CE_ID: None}, core.MISSING_HEADER),
    ({h.CE_ACCOUNT_ID: None}, core.MISSING_HEADER),
    ({h.CE_ACCOUNT_ID: b""}, core.MISSING_HEADER),
    ({h.CE_TYPE: None}, core.MISSING_HEADER),
    ({h.CE_SPECVERSION: b"0.3"}, core.BAD_HEADER),
    ({h.CE_ID: b"\xff\xfe"}, core.BAD_HEADER),
    ({h.CE_TYPE: b"message_deleted"}, core.UNKNOWN_EVENT_TYPE),
    ({h.CE_TYPE: b"contact_created"}, core.SCHEMA_INVALID),  # body says message_created
    ({h.CE_ACCOUNT_ID: b"8"}, core.ACCOUNT_MISMATCH),
])
def test_bad_headers_are_invalid(changes: dict[str, bytes | None], reason: str) -> None:
    assert _reason(with_headers(incoming(), **changes)) == reason


@pytest.mark.parametrize(("value", "reason"), [
    (None, core.NOT_JSON),
    (b"", core.NOT_JSON),
    (b"{not json", core.NOT_JSON),
    (b"[1, 2]", core.SCHEMA_INVALID),
    (b'{"event": "message_created", "id": 1}', core.NO_ACCOUNT),
])
@pytest.mark.parametrize("validation", ["full", "structural"])
def test_bad_bodies_are_invalid(value: bytes | None, reason: str, validation: str) -> None:
    policy = RoutePolicy("full" if validation == "full" else "structural")
    assert _reason(with_value(incoming(), value), policy) == reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("validation", ["full", "structural"])
def test_non_standard_json_numbers_are_not_json(literal: bytes, validation: str) -> None:
    event = incoming()
    assert event.value is not None
    value = event.value[:-1] + b',"score":' + literal + b"}"  # pydantic's parser takes these, orjson does not
    policy = RoutePolicy("full" if validation == "full" else "structural")
    assert _reason(with_value(event, value), policy) == core.NOT_JSON


def test_an_unforeseen_failure_quarantines_the_record_instead_of_crashing() -> None:
    def broken(account_id: str, event: str) -> list[Webhook]:
        raise RuntimeError("table corrupted")

    result = invalid(route(incoming(), broken, routed_time=ROUTED_AT))
    assert result.reason == core.INTERNAL and "RuntimeError: table corrupted" in result.detail
    assert result.value == incoming().value
    assert (result.event_id, result.event_type, result.account_id) == ("evt-1", "message_created", "7")


@pytest.mark.parametrize("key", [None, b"evt-1", b"7"])
def test_the_conversation_comes_from_the_body_whatever_the_record_key(key: bytes | None) -> None:
    event = incoming(conversation_id=42)
    event = IncomingEvent(event.topic, event.partition, event.offset, key, event.value, event.headers)
    result = routed(route(event, table_of(webhook(1, 7)).matching, routed_time=ROUTED_AT))
    assert [d.key for d in result.deliveries] == [b"1:42"]


def test_too_large() -> None:
    event = incoming()
    assert event.value is not None
    assert _reason(event, RoutePolicy(max_event_bytes=len(event.value) - 1)) == core.TOO_LARGE
    assert routed(route(event, table_of().matching, routed_time=ROUTED_AT,
                        policy=RoutePolicy(max_event_bytes=len(event.value))))


def test_full_validation_checks_field_types_structural_does_not() -> None:
    payload = {**example("message_created", account_id=7), "private": "yes"}
    event = with_value(incoming(), orjson.dumps(payload))
    assert _reason(event, RoutePolicy("full")) == core.SCHEMA_INVALID
    assert routed(route(event, table_of(webhook(1, 7)).matching, routed_time=ROUTED_AT,
                        policy=RoutePolicy("structural"))).deliveries


def test_invalid_record_keeps_the_original_and_names_the_reason() -> None:
    event = with_headers(incoming(offset=31), **{h.CE_TYPE: b"message_deleted"})
    result = invalid(route(event, table_of().matching, routed_time=ROUTED_AT))
    assert result.value is event.value and result.key == event.key
    assert result.headers[:len(event.headers)] == list(event.headers)
    added = h.to_dict(result.headers)
    assert added[h.INVALID_REASON] == core.UNKNOWN_EVENT_TYPE
    assert "message_deleted" in added[h.INVALID_DETAIL]
    assert (added[h.SOURCE_TOPIC], added[h.SOURCE_PARTITION], added[h.SOURCE_OFFSET]) == ("t.events", "2", "31")
    assert (result.event_id, result.event_type, result.account_id) == ("evt-1", "message_deleted", "7")
    assert core.event_type_label(result.event_type) == "unknown"
    assert result.outcome == "invalid"


def test_detail_is_bounded() -> None:
    event = with_headers(incoming(), **{h.CE_TYPE: b"x" * 5000})
    assert len(invalid(route(event, table_of().matching, routed_time=ROUTED_AT)).detail) <= core.MAX_DETAIL_CHARS


def test_times() -> None:
    assert core.epoch_of("2026-03-04T05:06:07.000Z") == EVENT_AT.timestamp()
    assert core.epoch_of("2026-03-04T05:06:07") == EVENT_AT.timestamp()
    assert core.epoch_of("yesterday") is None and core.epoch_of(None) is None
    assert times.iso_time(EVENT_AT.timestamp()) == "2026-03-04T05:06:07.000Z"
    assert core.event_type_label("message_created") == "message_created"
