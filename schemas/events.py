"""The twelve webhook events of the Chatwoot-compatible contract, and their validation.

A webhook body has no envelope: it is the resource itself with a top-level ``"event"``
(see ``docs/contract.md``). The models below are lenient about which keys are present,
because real payloads vary, and strict about the type of a key that is present. Unknown keys
are allowed and preserved: the platform adds fields over time and receivers expect them.

Two checks are offered for the router's hot path, both over the raw bytes:

- :func:`validate_event` validates the whole body against the event's model;
- :func:`check_event_structure` only checks that the body is a JSON object of that event which
  identifies its account; :func:`check_event_outline` checks the same without decoding the members
  the router does not read.

Both raise :class:`EventValidationError` naming the event and the field path.
"""

from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, StrictBool, StrictInt, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import CoreSchema, core_schema

from schemas.outline import outline

EVENT_NAMES: Final[tuple[str, ...]] = (
    "conversation_created",
    "conversation_updated",
    "conversation_status_changed",
    "message_created",
    "message_updated",
    "webwidget_triggered",
    "contact_created",
    "contact_updated",
    "inbox_created",
    "inbox_updated",
    "conversation_typing_on",
    "conversation_typing_off",
)
"""Every valid subscription, in the contract's order."""

_NOT_DEFAULT: Final = frozenset(
    {"inbox_created", "inbox_updated", "conversation_typing_on", "conversation_typing_off"}
)
DEFAULT_SUBSCRIPTIONS: Final[tuple[str, ...]] = tuple(e for e in EVENT_NAMES if e not in _NOT_DEFAULT)
"""What a webhook created without ``subscriptions`` receives."""


class EventValidationError(ValueError):
    """A body does not match its event's contract. Not retriable: the same bytes fail again."""

    retriable: Final = False

    def __init__(self, event: str, field: str, message: str) -> None:
        super().__init__(f"{event}: field '{field}': {message}")
        self.event = event
        self.field = field
        self.message = message


class _AnyOf:
    """A strict union of scalar types that fails with one error at the field's own path."""

    def __init__(self, message: str, *choices: CoreSchema) -> None:
        self._message = message
        self._choices: list[CoreSchema | tuple[CoreSchema, str]] = list(choices)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.union_schema(
            self._choices, custom_error_type="scalar_type", custom_error_message=self._message
        )


_INT: Final = core_schema.int_schema(strict=True)
_FLOAT: Final = core_schema.float_schema(strict=True)
_STR: Final = core_schema.str_schema(strict=True)

Id = Annotated[int | str, _AnyOf("Input should be an integer or a string", _INT, _STR)]
"""Ids are integers in Chatwoot and strings in the Akece guide."""

Timestamp = Annotated[
    int | float | str, _AnyOf("Input should be an epoch number or a date string", _INT, _FLOAT, _STR)
]
"""ISO-8601 string, integer epoch seconds (``0`` when missing) or float epoch: kept as sent."""

Attributes = dict[str, Any]
Status = Literal["open", "resolved", "pending", "snoozed"]
MessageType = Literal["incoming", "outgoing", "activity", "template"]


class Payload(BaseModel):
    """Base of every payload object: unknown keys pass through untouched."""

    model_config = ConfigDict(extra="allow")


class Account(Payload):
    """The account (tenant) a payload belongs to."""

    id: Id
    name: str | None = None


class Inbox(Payload):
    """An inbox reference: ``{id, name}``."""

    id: Id | None = None
    name: str | None = None


class Team(Payload):
    """The team a conversation is assigned to."""

    id: Id | None = None
    name: str | None = None


class AttributeChange(Payload):
    """One entry of ``changed_attributes``: ``{"previous_value": ..., "current_value": ...}``."""

    previous_value: Any = None
    current_value: Any = None


ChangedAttributes = list[Annotated[dict[str, AttributeChange], Field(min_length=1, max_length=1)]]
"""An array of one-key objects, e.g. ``[{"status": {"previous_value": "open", ...}}]``."""


class ContactFields(Payload):
    """The fields of a contact, without its account."""

    id: Id | None = None
    name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    avatar: str | None = None
    thumbnail: str | None = None
    blocked: StrictBool | None = None
    additional_attributes: Attributes | None = None
    custom_attributes: Attributes | None = None


class Contact(ContactFields):
    """A contact as webhook data (no ``type``)."""

    account: Account | None = None


class Sender(Contact):
    """Who wrote or types: a contact, a user (``type: "user"``) or an agent bot (``"agent_bot"``)."""

    type: str | None = None
    avatar_url: str | None = None
    availability_status: str | None = None


class Attachment(Payload):
    """A message attachment; type-specific keys (``coordinates_lat``, ``fallback_title``...) pass through."""

    id: Id | None = None
    message_id: Id | None = None
    account_id: Id | None = None
    file_type: str | None = None
    extension: str | None = None
    data_url: str | None = None
    thumb_url: str | None = None
    file_size: StrictInt | None = None


class ConversationMessage(Payload):
    """The latest message inside a conversation (push data: numeric ``message_type``, epoch times)."""

    id: Id | None = None
    content: str | None = None
    content_type: str | None = None
    content_attributes: Attributes | None = None
    message_type: Id | None = Field(default=None, description="0..3 or incoming|outgoing|activity|template")
    private: StrictBool | None = None
    created_at: Timestamp | None = None
    account_id: Id | None = None
    inbox_id: Id | None = None
    conversation_id: Id | None = None
    source_id: str | None = None
    sender: Sender | None = None
    attachments: list[Attachment] | None = None


class ContactInbox(Payload):
    """The link between a conversation's contact and its inbox."""

    id: Id | None = None
    contact_id: Id | None = None
    inbox_id: Id | None = None
    source_id: str | None = None
    hmac_verified: StrictBool | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class ConversationMeta(Payload):
    """Who a conversation is with and who handles it."""

    sender: Sender | None = None
    assignee: Sender | None = None
    assignee_type: str | None = None
    team: Team | None = None
    hmac_verified: StrictBool | None = None


class ConversationFields(Payload):
    """The fields of a conversation, without its account. ``id`` is the per-account display id."""

    id: Id | None = None
    display_id: Id | None = None
    inbox_id: Id | None = None
    status: Status | None = None
    channel: str | None = None
    can_reply: StrictBool | None = None
    priority: str | None = None
    labels: list[str] | None = None
    unread_count: StrictInt | None = None
    additional_attributes: Attributes | None = None
    custom_attributes: Attributes | None = None
    contact_inbox: ContactInbox | None = None
    meta: ConversationMeta | None = None
    messages: list[ConversationMessage] | None = None
    snoozed_until: Timestamp | None = None
    first_reply_created_at: Timestamp | None = None
    waiting_since: Timestamp | None = None
    agent_last_seen_at: Timestamp | None = None
    contact_last_seen_at: Timestamp | None = None
    last_activity_at: Timestamp | None = None
    timestamp: Timestamp | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Conversation(ConversationFields):
    """A conversation nested in another payload."""

    account: Account | None = None


class MessageFields(Payload):
    """A message as webhook data. Private notes are outgoing with ``private: true``."""

    account: Account
    id: Id | None = None
    content: str | None = None
    content_type: str | None = None
    content_attributes: Attributes | None = None
    additional_attributes: Attributes | None = None
    message_type: MessageType | None = None
    private: StrictBool | None = None
    created_at: Timestamp | None = None
    source_id: str | None = None
    sender: Sender | None = None
    contact: Contact | None = None
    conversation: Conversation | None = None
    inbox: Inbox | None = None
    attachments: list[Attachment] | None = None


class MessageCreated(MessageFields):
    """``message_created``."""

    event: Literal["message_created"]


class MessageUpdated(MessageFields):
    """``message_updated``."""

    event: Literal["message_updated"]
    changed_attributes: ChangedAttributes | None = None


class ConversationEventFields(ConversationFields):
    """A conversation at the top of a payload: it must name its account."""

    account: Account


class ConversationCreated(ConversationEventFields):
    """``conversation_created``."""

    event: Literal["conversation_created"]


class ConversationUpdated(ConversationEventFields):
    """``conversation_updated``."""

    event: Literal["conversation_updated"]
    changed_attributes: ChangedAttributes | None = None


class ConversationStatusChanged(ConversationEventFields):
    """``conversation_status_changed`` (always published with a ``conversation_updated``)."""

    event: Literal["conversation_status_changed"]
    changed_attributes: ChangedAttributes | None = None


class ContactEventFields(ContactFields):
    """A contact at the top of a payload: it must name its account."""

    account: Account


class ContactCreated(ContactEventFields):
    """``contact_created``."""

    event: Literal["contact_created"]


class ContactUpdated(ContactEventFields):
    """``contact_updated``."""

    event: Literal["contact_updated"]
    changed_attributes: ChangedAttributes | None = None


class InboxEventFields(Inbox):
    """Inbox settings plus its channel record, which must carry no tokens or secrets."""

    account: Account
    channel_type: str | None = None
    channel: Attributes | None = None


class InboxCreated(InboxEventFields):
    """``inbox_created``."""

    event: Literal["inbox_created"]


class InboxUpdated(InboxEventFields):
    """``inbox_updated``."""

    event: Literal["inbox_updated"]
    changed_attributes: ChangedAttributes | None = None


class Browser(Payload):
    """The visitor's browser, as the web widget reports it."""

    browser_name: str | None = None
    browser_version: str | None = None
    device_name: str | None = None
    platform_name: str | None = None
    platform_version: str | None = None


class InitiatedAt(Payload):
    """When the widget was opened, in the browser's own date format."""

    timestamp: Timestamp | None = None


class EventInfo(Payload):
    """What the web widget knows about the visit."""

    initiated_at: InitiatedAt | None = None
    referer: str | None = None
    widget_language: str | None = None
    browser_language: str | None = None
    browser: Browser | None = None


class WebwidgetTriggered(Payload):
    """``webwidget_triggered``: a visitor opened the chat widget."""

    event: Literal["webwidget_triggered"]
    account: Account
    id: Id | None = None
    source_id: str | None = None
    contact: Contact | None = None
    inbox: Inbox | None = None
    current_conversation: Conversation | None = None
    event_info: EventInfo | None = None


class TypingFields(Payload):
    """Someone types; the account is found in ``conversation`` or ``user``."""

    user: Sender | None = None
    conversation: Conversation | None = None
    is_private: StrictBool | None = None


class ConversationTypingOn(TypingFields):
    """``conversation_typing_on``."""

    event: Literal["conversation_typing_on"]


class ConversationTypingOff(TypingFields):
    """``conversation_typing_off``."""

    event: Literal["conversation_typing_off"]


EVENT_MODELS: Final[dict[str, type[BaseModel]]] = {
    "conversation_created": ConversationCreated,
    "conversation_updated": ConversationUpdated,
    "conversation_status_changed": ConversationStatusChanged,
    "message_created": MessageCreated,
    "message_updated": MessageUpdated,
    "webwidget_triggered": WebwidgetTriggered,
    "contact_created": ContactCreated,
    "contact_updated": ContactUpdated,
    "inbox_created": InboxCreated,
    "inbox_updated": InboxUpdated,
    "conversation_typing_on": ConversationTypingOn,
    "conversation_typing_off": ConversationTypingOff,
}

_MESSAGE_EVENTS: Final = frozenset({"message_created", "message_updated"})
_CONVERSATION_EVENTS: Final = frozenset(
    {"conversation_created", "conversation_updated", "conversation_status_changed"}
)
_TYPING_EVENTS: Final = frozenset({"conversation_typing_on", "conversation_typing_off"})


_ADAPTERS: Final[dict[str, TypeAdapter[BaseModel]]] = {
    name: TypeAdapter(model) for name, model in EVENT_MODELS.items()
}


def validate_event(event_type: str, body: bytes) -> dict[str, Any]:
    """Validate ``body`` against the model of ``event_type``; return it decoded exactly as sent.

    Decoding again with orjson is faster than dumping the model, and keeps key order and values.
    """
    adapter = _known_adapter(event_type)
    try:
        adapter.validate_json(body)
    except PydanticValidationError as exc:
        raise _from_pydantic(event_type, exc) from None
    try:  # pydantic accepts some JSON that orjson does not (NaN, Infinity)
        payload: dict[str, Any] = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventValidationError(event_type, "<body>", f"Invalid JSON: {exc}") from None
    _require_account(event_type, payload)
    return payload


def check_event_structure(event_type: str, body: bytes) -> dict[str, Any]:
    """Cheaply check that ``body`` is a JSON object of ``event_type`` naming its account."""
    _known_adapter(event_type)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventValidationError(event_type, "<body>", f"Invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise EventValidationError(event_type, "<body>", "Input should be an object")
    return _of_event(event_type, payload)


def check_event_outline(event_type: str, body: bytes) -> dict[str, Any]:
    """:func:`check_event_structure`'s check, returning only the members :func:`account_id_of` and
    :func:`conversation_key_of` read (``schemas.outline``): the router's hot path.

    A body the outline cannot read is checked by :func:`check_event_structure`, with its errors.
    """
    _known_adapter(event_type)
    members = outline(body)
    if members is None:
        return check_event_structure(event_type, body)
    return _of_event(event_type, members)


def _of_event(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("event", event_type) != event_type:
        raise EventValidationError(event_type, "event", f"Input should be '{event_type}'")
    _require_account(event_type, payload)
    return payload


def account_id_of(payload: dict[str, Any], event_type: str | None = None) -> str | None:
    """The account a payload belongs to: its ``account.id``.

    Typing events (or a payload naming no event) may instead carry it in ``conversation.account``
    or ``user.account``. ``event_type`` defaults to the payload's ``event``.
    """
    found = _account_id_in(payload)
    if found is None and _may_nest_account(event_type or payload.get("event")):
        found = _account_id_in(payload.get("conversation")) or _account_id_in(payload.get("user"))
    return found


def conversation_key_of(payload: dict[str, Any], event_type: str | None = None) -> str | None:
    """The display id of the conversation a payload is about, or None (contacts, inboxes)."""
    event = event_type or payload.get("event")
    if event in _CONVERSATION_EVENTS:
        return _id_text(payload.get("id"))
    if event in _MESSAGE_EVENTS or event in _TYPING_EVENTS:
        return _conversation_id(payload.get("conversation"))
    if event == "webwidget_triggered":
        return _conversation_id(payload.get("current_conversation"))
    return None


def _known_adapter(event_type: str) -> TypeAdapter[BaseModel]:
    adapter = _ADAPTERS.get(event_type)
    if adapter is None:
        raise EventValidationError(event_type, "event", f"Unknown event {event_type!r}")
    return adapter


def _require_account(event_type: str, payload: dict[str, Any]) -> None:
    if account_id_of(payload, event_type) is None:
        where = "account.id, conversation.account.id or user.account.id"
        if event_type not in _TYPING_EVENTS:
            where = "account.id"
        raise EventValidationError(event_type, "account", f"Payload should identify its account in {where}")


def _from_pydantic(event_type: str, exc: PydanticValidationError) -> EventValidationError:
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    if error["type"] == "json_invalid" or not error["loc"]:
        return EventValidationError(event_type, "<body>", error["msg"])
    return EventValidationError(event_type, _path_text(error["loc"]), error["msg"])


def _path_text(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "private")`` -> ``"messages[0].private"``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _may_nest_account(event: object) -> bool:
    return event is None or event in _TYPING_EVENTS


def _account_id_in(holder: object) -> str | None:
    if not isinstance(holder, dict):
        return None
    account = holder.get("account")
    return _id_text(account.get("id")) if isinstance(account, dict) else None


def _conversation_id(conversation: object) -> str | None:
    if not isinstance(conversation, dict):
        return None
    return _id_text(conversation.get("id")) or _id_text(conversation.get("display_id"))


def _id_text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value) or None
