"""The router's outline of an event body (``schemas.outline``) decides exactly as the whole-body check.

``check_event_outline`` must accept and refuse the same bodies as ``check_event_structure``, with the
same error text, and find the same account and conversation in what it accepts. The one intended
difference, a number beyond a double's range, has its own test.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    EVENT_NAMES,
    EventValidationError,
    account_id_of,
    check_event_outline,
    check_event_structure,
    conversation_key_of,
    validate_event,
)
from schemas.examples import example
from schemas.outline import outline

EXAMPLES = {name: orjson.dumps(example(name, account_id=7, conversation_id=31)) for name in EVENT_NAMES}
READ = ["event", "id", "account", "user", "conversation", "current_conversation", "display_id", "x"]


def _decision(check: Any, event_type: str, body: bytes) -> tuple[str, Any, Any]:
    try:
        payload = check(event_type, body)
    except EventValidationError as exc:
        return "refused", exc.field, str(exc)
    return "accepted", account_id_of(payload, event_type), conversation_key_of(payload, event_type)


def _same(event_type: str, body: bytes) -> None:
    assert _decision(check_event_outline, event_type, body) == _decision(check_event_structure, event_type, body)


@pytest.mark.parametrize("event_type", EVENT_NAMES)
def test_every_example_is_read_from_its_outline(event_type: str) -> None:
    """The fast path is taken for real bodies, and finds what the whole payload says."""
    members = outline(EXAMPLES[event_type])
    assert members is not None
    payload = orjson.loads(EXAMPLES[event_type])
    assert account_id_of(members, event_type) == account_id_of(payload, event_type) == "7"
    assert conversation_key_of(members, event_type) == conversation_key_of(payload, event_type)
    _same(event_type, EXAMPLES[event_type])


UNUSUAL = {
    "invalid UTF-8 in a member nobody reads": b'{"x":"\xff\xfe","event":"message_created","account":{"id":7}}',
    "invalid UTF-8 in a key": b'{"\xff":1,"event":"message_created","account":{"id":7}}',
    "UTF-8-encoded surrogate": b'{"x":"\xed\xa0\x80","account":{"id":7}}',
    "lone surrogate escape": b'{"x":"\\ud800","account":{"id":7}}',
    "reversed surrogate pair": b'{"x":"\\ude00\\ud83d","account":{"id":7}}',
    "byte order mark": b'\xef\xbb\xbf{"account":{"id":7}}',
    "NaN": b'{"x":NaN,"account":{"id":7}}',
    "Infinity": b'{"x":-Infinity,"account":{"id":7}}',
    "leading zero": b'{"x":01,"account":{"id":7}}',
    "trailing comma": b'{"x":[1,],"account":{"id":7}}',
    "content after the object": b'{"account":{"id":7}} x',
    "NUL after the object": b'{"account":{"id":7}}\x00',
    "control character in a string": b'{"x":"a\x01b","account":{"id":7}}',
    "empty": b"",
    "an array": b'[{"account":{"id":7}}]',
    "a string": b'"message_created"',
    "nested 900 deep": b'{"x":' + b"[" * 900 + b"]" * 900 + b',"account":{"id":7}}',
    "nested 1000 deep": b'{"x":' + b"[" * 1000 + b"]" * 1000 + b',"account":{"id":7}}',
    "nested past orjson's limit": b'{"x":' + b"[" * 1100 + b"]" * 1100 + b',"account":{"id":7}}',
    "account given twice": b'{"account":{"id":1},"account":{"id":7}}',
    "conversation an object, then a string": b'{"account":{"id":7},"conversation":{"id":3},"conversation":"3"}',
    "conversation a string, then an object": b'{"account":{"id":7},"conversation":"3","conversation":{"id":3}}',
    "conversation a list": b'{"account":{"id":7},"conversation":[{"id":3}]}',
    "conversation null": b'{"account":{"id":7},"conversation":null}',
    "account null": b'{"account":null}',
    "account id a float": b'{"account":{"id":7.0}}',
    "account id true": b'{"account":{"id":true}}',
    "account id an empty string": b'{"account":{"id":""}}',
    "escaped member name": b'{"\\u0061ccount":{"id":7}}',
    "event null": b'{"event":null,"account":{"id":7}}',
    "DEL in a string": b'{"x":"a\x7fb","account":{"id":7}}',
    "escaped slash and a pair": b'{"x":"\\/\\ud83d\\ude00","account":{"id":7}}',
    "integer past 64 bits": b'{"x":123456789012345678901234567890,"account":{"id":7}}',
    "typing, account in the user": b'{"user":{"account":{"id":7}},"conversation":{"display_id":4}}',
    "typing, account in the conversation": b'{"conversation":{"account":{"id":7},"id":9}}',
}


@pytest.mark.parametrize("event_type", ["message_created", "conversation_typing_on", "conversation_updated",
                                        "webwidget_triggered"])
@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_bodies_are_decided_as_by_the_whole_payload(event_type: str, name: str) -> None:
    _same(event_type, UNUSUAL[name])


def test_a_number_beyond_a_double_is_routed_by_the_outline_only() -> None:
    """The intended difference: ``1e999`` is JSON; orjson refuses it, the outline skips it."""
    body = b'{"event":"message_created","x":1e999,"account":{"id":7},"conversation":{"display_id":3}}'
    assert _decision(check_event_outline, "message_created", body) == ("accepted", "7", "3")
    with pytest.raises(EventValidationError, match="Invalid JSON"):
        check_event_structure("message_created", body)
    with pytest.raises(EventValidationError):
        validate_event("message_created", body)


class _Object(list):  # type: ignore[type-arg]
    """Members of a JSON object, in order, names possibly repeated."""


def _render(value: Any) -> bytes:
    if isinstance(value, _Object):
        return b"{" + b",".join(json.dumps(k).encode() + b":" + _render(v) for k, v in value) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(_render(v) for v in value) + b"]"
    return json.dumps(value).encode()


scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**63),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                    st.sampled_from(["7", "", "message_created", "conversation_typing_on"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.lists(st.tuples(st.sampled_from(READ), inner), max_size=4).map(_Object)), max_leaves=14)
bodies = st.lists(st.tuples(st.sampled_from(READ), values), max_size=6).map(_Object).map(_render)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_type=st.sampled_from(EVENT_NAMES), body=bodies)
def test_any_object_of_the_read_members_is_decided_as_by_the_whole_payload(event_type: str, body: bytes) -> None:
    _same(event_type, body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_type=st.sampled_from(["message_created", "conversation_updated", "contact_created"]),
       edits=st.lists(st.tuples(st.floats(min_value=0, max_value=1, exclude_max=True),
                                st.integers(min_value=0, max_value=3),
                                st.binary(max_size=3) | st.sampled_from([b'"', b"{", b"}", b"[", b",", b":",
                                                                         b"\\", b"\xff", b"1e999"])),
                      min_size=1, max_size=3))
def test_damaged_examples_are_decided_as_by_the_whole_payload(
        event_type: str, edits: list[tuple[float, int, bytes]]) -> None:
    body = bytearray(EXAMPLES[event_type])
    for where, cut, insert in edits:
        at = int(where * len(body))
        body[at:at + cut] = insert
    damaged = bytes(body)
    outlined = _decision(check_event_outline, event_type, damaged)
    whole = _decision(check_event_structure, event_type, damaged)
    if whole[0] == "refused" and "number is infinity" in whole[2]:
        return  # the intended difference (test_a_number_beyond_a_double_is_routed_by_the_outline_only)
    assert outlined == whole
