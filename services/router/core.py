"""Pure core of the router: one event record in, its delivery records (or why it is invalid) out.

``route(event, lookup, routed_time=...)`` takes no Kafka and no clock: the shell passes the record,
the subscription lookup (``SubscriptionTable.matching``) and the routing time. Event id, type and
account come from the CloudEvents headers; the body is parsed only to validate it (``full`` model
validation or a cheap ``structural`` check) and travels on as the very same bytes object.

A record that cannot be routed becomes an ``Invalid`` result carrying the record for the invalid
topic: the original key, value and headers plus reason, detail and source coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

from schemas import (
    EVENT_NAMES,
    EventValidationError,
    account_id_of,
    check_event_outline,
    conversation_key_of,
    validate_event,
)
from services.contract import headers as h
from services.contract.deliveries import (
    conversation_of_event_key,
    delivery_id,
    delivery_key,
    first_attempt_headers,
)
from services.shared.errors import ConfigError
from services.shared.settings import RouterSettings

MISSING_HEADER = "missing_header"
BAD_HEADER = "bad_header"
BAD_KEY = "bad_key"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
TOO_LARGE = "too_large"
NOT_JSON = "not_json"
SCHEMA_INVALID = "schema_invalid"
NO_ACCOUNT = "no_account"
ACCOUNT_MISMATCH = "account_mismatch"
INTERNAL = "internal"  # the router failed on this record in a way it did not foresee (a bug): kept, not lost

SPECVERSION = "1.0"
MAX_DETAIL_CHARS = 500
_EVENT_NAMES = frozenset(EVENT_NAMES)
_WANTED = frozenset({h.CE_SPECVERSION, h.CE_ID, h.CE_SOURCE, h.CE_TYPE, h.CE_TIME, h.CE_ACCOUNT_ID})


class Subscriber(Protocol):
    """What routing needs of a webhook (``services.shared.webhooks.Webhook`` fits)."""

    @property
    def id(self) -> int: ...


TableLookup = Callable[[str, str], Sequence[Subscriber]]
"""``(account id, event type) -> enabled webhooks subscribed to it``."""


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """One record of the events topic, as the router reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    validation: Literal["full", "structural"] = "structural"
    max_event_bytes: int = 1024 * 1024

    @classmethod
    def from_settings(cls, router: RouterSettings) -> RoutePolicy:
        """The policy the router settings name; an unknown validation mode is refused."""
        if router.validation not in ("full", "structural"):
            raise ConfigError(f"router.validation must be `full` or `structural`, not {router.validation!r}")
        return cls(router.validation, router.max_event_bytes)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery record for the deliveries topic: the event body, byte for byte."""

    webhook_id: int
    key: bytes
    value: bytes
    headers: h.Headers


@dataclass(frozen=True, slots=True)
class Routed:
    """A valid event and its deliveries (none: no enabled webhook of the account subscribes to it)."""

    event_id: str
    event_type: str
    account_id: str
    event_time: str | None
    deliveries: tuple[Delivery, ...]

    @property
    def outcome(self) -> str:
        return "routed" if self.deliveries else "no_subscriber"


@dataclass(frozen=True, slots=True)
class Invalid:
    """An event the router cannot route, and the record that quarantines it."""

    reason: str
    detail: str
    key: bytes | None
    value: bytes | None
    headers: h.Headers
    event_id: str | None = None
    event_type: str | None = None
    account_id: str | None = None

    @property
    def outcome(self) -> str:
        return "invalid"


RouteResult = Routed | Invalid


class _Reject(Exception):
    def __init__(self, reason: str, detail: str, known: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.known = known or {}


def route(event: IncomingEvent, lookup: TableLookup, *, routed_time: str,
          policy: RoutePolicy = RoutePolicy()) -> RouteResult:
    """Route one event: its deliveries, one per matching enabled webhook, or why it is invalid."""
    try:
        return _route(event, lookup, routed_time, policy)
    except _Reject as reject:
        return _invalid(event, reject)
    except Exception as exc:
        # Deliberately broad: a crash here would re-read the same uncommitted batch on every restart and
        # stall the partition forever. One record's surprise (a bug) is quarantined as ``internal``.
        known = {k: v.decode(errors="replace") for k, v in event.headers if k in _WANTED and v}
        return _invalid(event, _Reject(INTERNAL, f"{type(exc).__name__}: {exc}", known))


def _route(event: IncomingEvent, lookup: TableLookup, routed_time: str, policy: RoutePolicy) -> Routed:
    ce = _cloudevent_headers(event.headers)
    event_id, event_type, account = ce[h.CE_ID], ce[h.CE_TYPE], ce[h.CE_ACCOUNT_ID]
    if event_type not in _EVENT_NAMES:
        raise _Reject(UNKNOWN_EVENT_TYPE, f"unknown event type {event_type!r}", ce)
    body = event.value
    if not body:
        raise _Reject(NOT_JSON, "empty body", ce)
    if len(body) > policy.max_event_bytes:
        raise _Reject(TOO_LARGE, f"body is {len(body)} bytes; the limit is {policy.max_event_bytes}", ce)
    payload = _validate(event_type, account, body, policy, ce)
    try:
        keyed = conversation_of_event_key(event.key)
    except UnicodeDecodeError:
        raise _Reject(BAD_KEY, "record key is not UTF-8", ce) from None
    # The body says which conversation it is about; the record key only when it does not (a producer
    # keying by event id, or not at all, must not break per-conversation order).
    conversation = conversation_key_of(payload, event_type) or keyed
    event_time = ce.get(h.CE_TIME)
    webhooks = lookup(account, event_type)
    if not webhooks:
        return Routed(event_id, event_type, account, event_time, ())
    headers = _HeaderTemplate(event_id, event_type, account, webhooks[0].id, event_time, routed_time)
    deliveries = tuple(Delivery(w.id, delivery_key(w.id, conversation), body, headers.for_webhook(w.id))
                       for w in webhooks)
    return Routed(event_id, event_type, account, event_time, deliveries)


class _HeaderTemplate:
    """``first_attempt_headers`` of one event, built once: per webhook only two values differ.

    Half the cost of calling it per delivery; ``test_router_core`` checks both give the same list.
    Where the two values sit is looked up only when a second webhook needs them (fan-out 1 never does).
    """

    __slots__ = ("_at", "_event_id", "_first", "_template")

    def __init__(self, event_id: str, event_type: str, account: str, first_webhook: int, event_time: str | None,
                 routed_time: str) -> None:
        self._event_id = event_id
        self._first = first_webhook
        self._template = first_attempt_headers(event_id=event_id, event_type=event_type, account_id=account,
                                               webhook_id=first_webhook, event_time=event_time,
                                               routed_time=routed_time)
        self._at: tuple[int, int] | None = None

    def for_webhook(self, webhook_id: int) -> h.Headers:
        if webhook_id == self._first:
            return self._template
        if self._at is None:
            names = [name for name, _ in self._template]
            self._at = names.index(h.DELIVERY_ID), names.index(h.WEBHOOK_ID)
        delivery_at, webhook_at = self._at
        headers = self._template.copy()
        headers[delivery_at] = (h.DELIVERY_ID, delivery_id(self._event_id, webhook_id).encode())
        headers[webhook_at] = (h.WEBHOOK_ID, str(webhook_id).encode())
        return headers


def _cloudevent_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in headers:
        if key in _WANTED and value:
            try:
                found[key] = value.decode()
            except UnicodeDecodeError:
                raise _Reject(BAD_HEADER, f"header {key} is not UTF-8", found) from None
    missing = [name for name in h.CLOUDEVENT_REQUIRED if name not in found]
    if missing:
        raise _Reject(MISSING_HEADER, f"missing header(s): {', '.join(missing)}", found)
    if found[h.CE_SPECVERSION] != SPECVERSION:
        raise _Reject(BAD_HEADER, f"unsupported ce_specversion {found[h.CE_SPECVERSION]!r}", found)
    return found


def _validate(event_type: str, account: str, body: bytes, policy: RoutePolicy,
              ce: dict[str, str]) -> dict[str, Any]:
    check = validate_event if policy.validation == "full" else check_event_outline
    try:
        payload = check(event_type, body)
    except EventValidationError as exc:
        raise _Reject(_reason_of(exc, body), str(exc), ce) from None
    named = account_id_of(payload, event_type)
    if named != account:
        raise _Reject(ACCOUNT_MISMATCH, f"body names account {named!r}, header ce_accountid {account!r}", ce)
    return payload


def _reason_of(exc: EventValidationError, body: bytes) -> str:
    if exc.field == "account":
        return NO_ACCOUNT
    if exc.field == "<body>" and not _is_json(body):
        return NOT_JSON
    return SCHEMA_INVALID


def _is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def _invalid(event: IncomingEvent, reject: _Reject) -> Invalid:
    detail = reject.detail[:MAX_DETAIL_CHARS]
    headers = h.replace(event.headers, {
        h.INVALID_REASON: reject.reason,
        h.INVALID_DETAIL: detail,
        h.SOURCE_TOPIC: event.topic,
        h.SOURCE_PARTITION: event.partition,
        h.SOURCE_OFFSET: event.offset,
    })
    known = reject.known
    return Invalid(reject.reason, detail, event.key, event.value, headers, known.get(h.CE_ID),
                   known.get(h.CE_TYPE), known.get(h.CE_ACCOUNT_ID))


def event_type_label(event_type: str | None) -> str:
    """A bounded metric label: the event name if it is one of the twelve, else ``unknown``."""
    return event_type if event_type in _EVENT_NAMES else "unknown"


def epoch_of(time: str | None) -> float | None:
    """Unix seconds of an ISO-8601 ``ce_time`` (UTC when it names no zone); ``None`` if unreadable."""
    if not time:
        return None
    try:
        moment = datetime.fromisoformat(time)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()

