"""Property tests of the router's pure core over arbitrary records: it never raises and never fails as
``internal`` (an unforeseen error), whatever a producer writes into the key, value or headers.

``internal`` exists so that a bug costs one record, not the partition; these tests make sure no input we
can think of reaches it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import EVENT_NAMES
from schemas.examples import example
from services.contract import headers as h
from services.router import core
from services.router.core import IncomingEvent, Invalid, Routed, RoutePolicy, route

ROUTED_AT = "2026-03-04T05:06:07.890Z"
CE_NAMES = [h.CE_SPECVERSION, h.CE_ID, h.CE_SOURCE, h.CE_TYPE, h.CE_TIME, h.CE_ACCOUNT_ID, "content-type"]
POLICIES = st.sampled_from([RoutePolicy("full", 4096), RoutePolicy("structural", 4096)])


class _Hook:
    def __init__(self, webhook_id: int) -> None:
        self.id = webhook_id


def lookup(account: str, event_type: str) -> list[_Hook]:
    return [_Hook(1), _Hook(2)] if account == "7" else []


header_value = st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=40).map(str.encode),
                         st.sampled_from([b"1.0", b"7", b"message_created", b"2026-03-04T05:06:07Z", b"\xff\xfe"]))
headers = st.lists(st.tuples(st.one_of(st.sampled_from(CE_NAMES), st.text(max_size=12)), header_value),
                   max_size=10)

# Every ``akece_invalid_reason`` the router writes.
INVALID_REASONS = (core.MISSING_HEADER, core.BAD_HEADER, core.BAD_KEY, core.UNKNOWN_EVENT_TYPE, core.TOO_LARGE,
                   core.NOT_JSON, core.SCHEMA_INVALID, core.NO_ACCOUNT, core.ACCOUNT_MISMATCH, core.INTERNAL)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


def _check(result: Any) -> None:
    assert isinstance(result, Routed | Invalid)
    if isinstance(result, Invalid):
        assert result.reason != core.INTERNAL, result.detail
        assert result.reason in INVALID_REASONS
        names = [name for name, _ in result.headers]
        assert h.INVALID_REASON in names and h.SOURCE_OFFSET in names


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.one_of(st.none(), st.binary(max_size=30)), value=st.one_of(st.none(), st.binary(max_size=200)),
       headers=headers, policy=POLICIES)
def test_arbitrary_bytes_never_raise_nor_fail_as_internal(key: bytes | None, value: bytes | None,
                                                          headers: list[tuple[str, bytes | None]],
                                                          policy: RoutePolicy) -> None:
    _check(route(IncomingEvent("events", 0, 1, key, value, headers), lookup, routed_time=ROUTED_AT,
                 policy=policy))


def _ce(event_type: str, account: bytes, time: bytes | None) -> list[tuple[str, bytes | None]]:
    return [(h.CE_SPECVERSION, b"1.0"), (h.CE_ID, b"evt-1"), (h.CE_SOURCE, b"/test"),
            (h.CE_TYPE, event_type.encode()), (h.CE_ACCOUNT_ID, account), (h.CE_TIME, time)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_type=st.sampled_from(EVENT_NAMES), path=st.lists(st.sampled_from(
           ["account", "id", "conversation", "inbox", "sender", "meta", "messages", "content", "event"]),
           min_size=1, max_size=3),
       replacement=json_values, account=st.sampled_from([b"7", b"07", b"7.0", b" 7", b"x"]),
       time=st.one_of(st.none(), st.binary(max_size=30)), key=st.one_of(st.none(), st.binary(max_size=20)),
       policy=POLICIES)
def test_a_real_body_with_any_field_replaced_never_fails_as_internal(
        event_type: str, path: list[str], replacement: Any, account: bytes, time: bytes | None,
        key: bytes | None, policy: RoutePolicy) -> None:
    body: Any = example(event_type, account_id=7, conversation_id=42)
    node = body
    for name in path[:-1]:  # walk down where the path exists, then replace the last step
        child = node.get(name) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            break
        node = child
    if isinstance(node, dict):
        node[path[-1]] = replacement
    try:
        value = orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):  # NaN is not JSON for orjson; write it the way Python does
        value = json.dumps(body).encode()
    _check(route(IncomingEvent("events", 0, 1, key, value, _ce(event_type, account, time)), lookup,
                 routed_time=ROUTED_AT, policy=RoutePolicy(policy.validation, 1 << 20)))


@given(st.one_of(st.none(), st.text(max_size=40)))
def test_event_time_parsing_never_raises(text: str | None) -> None:
    seconds = core.epoch_of(text)
    assert seconds is None or isinstance(seconds, float)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(required=st.lists(st.tuples(st.sampled_from(h.CLOUDEVENT_REQUIRED), header_value), max_size=12),
       extra=headers)
def test_cloudevent_headers_over_arbitrary_bytes_are_read_or_rejected(
        required: list[tuple[str, bytes | None]], extra: list[tuple[str, bytes | None]]) -> None:
    """The CloudEvents reading itself: text for every required attribute, or a rejection naming why."""
    try:
        found = core._cloudevent_headers(required + extra)
    except core._Reject as reject:
        assert reject.reason in INVALID_REASONS and reject.reason != core.INTERNAL
        return
    assert set(h.CLOUDEVENT_REQUIRED) <= set(found) and found[h.CE_SPECVERSION] == "1.0"
    assert all(isinstance(v, str) and v for v in found.values())
