"""Unit tests of the event contract in ``schemas/`` (no Kafka)."""

from typing import Any

import orjson
import pytest

from schemas import (
    DEFAULT_SUBSCRIPTIONS,
    EVENT_MODELS,
    EVENT_NAMES,
    EventValidationError,
    account_id_of,
    check_event_structure,
    conversation_key_of,
    validate_event,
)
from schemas.examples import EXAMPLES, GUIDE_EXAMPLE, example
from schemas.generate import JSON_DIR, render_all, stale_files, write_all

Json = dict[str, Any]
CHECKS = [validate_event, check_event_structure]


def body(payload: Json) -> bytes:
    return orjson.dumps(payload)


def field_error(event: str, payload: Json) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        validate_event(event, body(payload))
    return info.value


def test_event_names_follow_the_contract() -> None:
    assert len(EVENT_NAMES) == 12
    assert set(EVENT_MODELS) == set(EVENT_NAMES) == set(EXAMPLES)
    assert DEFAULT_SUBSCRIPTIONS == (
        "conversation_created",
        "conversation_updated",
        "conversation_status_changed",
        "message_created",
        "message_updated",
        "webwidget_triggered",
        "contact_created",
        "contact_updated",
    )


@pytest.mark.parametrize("event", EVENT_NAMES)
@pytest.mark.parametrize("check", CHECKS)
def test_every_example_validates_and_comes_back_as_sent(event: str, check: Any) -> None:
    payload = EXAMPLES[event]
    assert payload["event"] == event
    assert check(event, body(payload)) == payload


def test_guide_example_is_a_message_created() -> None:
    for check in CHECKS:
        assert check("message_created", body(GUIDE_EXAMPLE)) == GUIDE_EXAMPLE
    assert account_id_of(GUIDE_EXAMPLE) == "1"
    assert conversation_key_of(GUIDE_EXAMPLE) == "1234"


def test_message_created_example_is_realistic() -> None:
    payload = EXAMPLES["message_created"]
    assert 2000 <= len(body(payload)) <= 3500
    assert payload["conversation"]["meta"]["assignee"]["type"] == "user"
    assert payload["attachments"][0]["file_type"] == "image"


def test_examples_carry_no_tokens_or_secrets() -> None:
    def keys(value: object) -> list[str]:
        if isinstance(value, dict):
            return [k for k, v in value.items() for k in [k, *keys(v)]]
        return [k for item in value for k in keys(item)] if isinstance(value, list) else []

    for payload in EXAMPLES.values():
        assert not [k for k in keys(payload) if "token" in k or "secret" in k or "password" in k]


def test_example_sets_account_and_conversation_everywhere() -> None:
    payload = example("message_created", account_id=9, conversation_id=77, source_id="wamid.1")
    assert account_id_of(payload) == "9"
    assert conversation_key_of(payload) == "77"
    assert payload["conversation"]["account"]["id"] == 9
    assert payload["conversation"]["messages"][0]["conversation_id"] == 77
    assert payload["source_id"] == "wamid.1"
    assert example("message_created") == EXAMPLES["message_created"]
    assert example("message_created") is not example("message_created")


def test_example_of_unknown_event() -> None:
    with pytest.raises(ValueError, match="nope"):
        example("nope")


def test_unknown_keys_are_preserved() -> None:
    payload = example("message_created")
    payload["brand_new_field"] = {"nested": [1, 2]}
    payload["conversation"]["meta"]["sender"]["x_extra"] = "kept"
    model = EVENT_MODELS["message_created"].model_validate_json(body(payload))
    dumped = model.model_dump(exclude_unset=True)
    assert dumped["brand_new_field"] == {"nested": [1, 2]}
    assert dumped["conversation"]["meta"]["sender"]["x_extra"] == "kept"
    assert validate_event("message_created", body(payload)) == payload


@pytest.mark.parametrize("ident", [5, "5"])
def test_ids_may_be_integers_or_strings(ident: int | str) -> None:
    payload = example("conversation_updated", account_id=ident, conversation_id=ident)
    payload["contact_inbox"]["contact_id"] = ident
    assert validate_event("conversation_updated", body(payload)) == payload
    assert account_id_of(payload) == "5"
    assert conversation_key_of(payload) == "5"


@pytest.mark.parametrize(
    ("event", "path", "value", "field", "message"),
    [
        ("message_created", ["private"], "no", "private", "valid boolean"),
        ("message_created", ["content"], 42, "content", "valid string"),
        ("message_created", ["message_type"], "inbound", "message_type", "'incoming'"),
        ("message_created", ["account"], "1", "account", "object"),
        ("message_created", ["account", "id"], 1.5, "account.id", "integer or a string"),
        ("message_created", ["conversation", "status"], "closed", "conversation.status", "'open'"),
        ("message_created", ["id"], True, "id", "integer or a string"),
        ("message_created", ["created_at"], False, "created_at", "epoch number or a date string"),
        ("message_created", ["event"], "message_updated", "event", "'message_created'"),
        ("conversation_created", ["status"], "done", "status", "'open'"),
        ("conversation_updated", ["changed_attributes"], {"status": {}}, "changed_attributes", "valid array"),
        ("conversation_typing_on", ["is_private"], "false", "is_private", "valid boolean"),
        ("contact_created", ["blocked"], 0, "blocked", "valid boolean"),
        ("inbox_created", ["channel"], "web", "channel", "an object"),
    ],
)
def test_wrong_types_are_rejected_naming_the_field(
    event: str, path: list[str], value: object, field: str, message: str
) -> None:
    payload = example(event)
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    error = field_error(event, payload)
    assert (error.event, error.field) == (event, field)
    assert message in error.message
    assert str(error).startswith(f"{event}: field '{field}': ")


def test_error_text_matches_the_documented_form() -> None:
    error = field_error("message_created", example("message_created", private="yes"))
    assert str(error) == "message_created: field 'private': Input should be a valid boolean"


def test_nested_paths_name_list_positions() -> None:
    payload = example("conversation_updated")
    payload["messages"][0]["private"] = "yes"
    assert field_error("conversation_updated", payload).field == "messages[0].private"
    payload = example("conversation_updated")
    payload["changed_attributes"][1] = {"status": {}, "updated_at": {}}
    assert field_error("conversation_updated", payload).field == "changed_attributes[1]"
    payload["changed_attributes"][1] = {"status": "resolved"}
    assert field_error("conversation_updated", payload).field == "changed_attributes[1].status"


def test_changed_attributes_may_be_null() -> None:
    payload = example("contact_updated", changed_attributes=None)
    assert validate_event("contact_updated", body(payload)) == payload


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("raw", [b"", b"not json", b'{"event": ', b"[1, 2]", b'"text"'])
def test_non_json_or_non_object_is_rejected(check: Any, raw: bytes) -> None:
    with pytest.raises(EventValidationError) as info:
        check("message_created", raw)
    assert info.value.field == "<body>"


@pytest.mark.parametrize("check", CHECKS)
def test_unknown_event_is_rejected(check: Any) -> None:
    with pytest.raises(EventValidationError) as info:
        check("message_deleted", body(EXAMPLES["message_created"]))
    assert (info.value.event, info.value.field) == ("message_deleted", "event")


@pytest.mark.parametrize("check", CHECKS)
def test_payload_must_identify_its_account(check: Any) -> None:
    payload = example("conversation_typing_on")
    del payload["conversation"]["account"]
    with pytest.raises(EventValidationError) as info:
        check("conversation_typing_on", body(payload))
    assert info.value.field == "account"
    payload = example("message_created")
    del payload["account"]
    with pytest.raises(EventValidationError) as info:
        check("message_created", body(payload))
    assert info.value.field == "account"


def test_typing_account_may_come_from_the_user() -> None:
    payload = example("conversation_typing_off", account_id=4)
    del payload["conversation"]["account"]
    assert account_id_of(payload) == "4"
    assert validate_event("conversation_typing_off", body(payload)) == payload


def test_structure_check_rejects_another_event() -> None:
    with pytest.raises(EventValidationError) as info:
        check_event_structure("message_updated", body(EXAMPLES["message_created"]))
    assert info.value.field == "event"
    payload = dict(EXAMPLES["message_created"])
    del payload["event"]
    assert check_event_structure("message_updated", body(payload)) == payload


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (example("message_created", conversation_id=12), "12"),
        (GUIDE_EXAMPLE, "1234"),
        (example("conversation_created", conversation_id=13), "13"),
        (example("conversation_status_changed", conversation_id="14"), "14"),
        (example("conversation_typing_on", conversation_id=15), "15"),
        (example("webwidget_triggered", conversation_id=16), "16"),
        (example("webwidget_triggered", current_conversation=None), None),
        (example("contact_updated"), None),
        (example("inbox_created"), None),
        ({"event": "message_created", "account": {"id": 1}}, None),
    ],
)
def test_conversation_key_of(payload: Json, expected: str | None) -> None:
    assert conversation_key_of(payload) == expected


def test_conversation_key_of_with_explicit_event() -> None:
    payload = {"id": 3, "account": {"id": 1}}
    assert conversation_key_of(payload, "conversation_updated") == "3"
    assert conversation_key_of(payload, "contact_updated") is None


def test_account_id_of_ignores_malformed_accounts() -> None:
    assert account_id_of({"account": {"id": True}}) is None
    assert account_id_of({"account": {"id": ""}}) is None
    assert account_id_of({"account": 1}) is None
    assert account_id_of({"account": {"id": 3}, "conversation": {"account": {"id": 4}}}) == "3"


def test_json_schema_files_are_in_sync() -> None:
    rendered = render_all()
    assert sorted(rendered) == sorted(f"{event}.json" for event in EVENT_NAMES)
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in JSON_DIR.glob("*.json")}
    assert on_disk == rendered, "run: python -m schemas.generate"


def test_rendering_is_deterministic() -> None:
    first = render_all()
    assert first == render_all()
    for name, text in first.items():
        assert text.endswith("}\n")
        assert orjson.loads(text)["additionalProperties"] is True
        assert orjson.loads(text)["$id"] == f"https://akece.ai/schemas/webhooks/{name}"


def test_generator_check_and_write(tmp_path: Any) -> None:
    (tmp_path / "old_event.json").write_text("{}\n")
    assert "message_created.json" in stale_files(tmp_path)
    written = write_all(tmp_path)
    assert "old_event.json" in written
    assert stale_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(render_all())


def test_only_typing_events_nest_their_account() -> None:
    nested = {"conversation": {"account": {"id": 8}}}
    assert account_id_of({"event": "conversation_typing_on", **nested}) == "8"
    assert account_id_of(nested) == "8"
    assert account_id_of({"event": "message_created", **nested}) is None
    assert account_id_of({"event": "message_created", **nested}, "conversation_typing_off") == "8"
