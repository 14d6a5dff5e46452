"""Realistic sample payloads for the twelve events, as the platform publishes them.

Written from the contract: integer ids, a conversation's ``id`` is its display id, and the three
timestamp styles mixed as Chatwoot mixes them (ISO strings with milliseconds for messages and
records, integer epoch seconds with ``0`` for "never", a float epoch for conversation
``updated_at``). Inbox events carry their channel record without any token or secret.

Used by tests, the demo and the benchmarks: :func:`example` builds a fresh copy for any account and
conversation, :data:`EXAMPLES` holds one of each for account 1, conversation 1.
"""

from collections.abc import Callable
from typing import Any, Final, NamedTuple

Json = dict[str, Any]


class _Ids(NamedTuple):
    account: int | str
    conversation: int | str


_CONTACT_ID: Final = 42
_AGENT_ID: Final = 7
_INBOX_ID: Final = 3
_MESSAGE_ID: Final = 9051


def _account(ids: _Ids) -> Json:
    return {"id": ids.account, "name": "Padaria Aurora"}


def _inbox() -> Json:
    return {"id": _INBOX_ID, "name": "Website chat"}


def _contact(ids: _Ids) -> Json:
    return {
        "account": _account(ids),
        "additional_attributes": {
            "city": "Campinas",
            "country": "Brazil",
            "country_code": "BR",
            "created_at_ip": "203.0.113.24",
        },
        "avatar": "",
        "custom_attributes": {"plan": "wholesale", "orders": 12},
        "email": "joao.silva@example.com",
        "id": _CONTACT_ID,
        "identifier": "cust-8812",
        "name": "João Silva",
        "phone_number": "+15555550123",
        "thumbnail": "",
        "blocked": False,
    }


def _contact_sender(ids: _Ids) -> Json:
    """A contact in push-data form, as a conversation's ``meta.sender``."""
    body = _contact(ids)
    del body["account"]
    return {**body, "type": "contact"}


def _agent() -> Json:
    return {
        "id": _AGENT_ID,
        "name": "Marina Costa",
        "available_name": "Marina",
        "avatar_url": "https://app.akece.example/avatars/marina.png",
        "availability_status": "online",
        "email": "marina@padaria-aurora.example",
        "type": "user",
    }


def _browser() -> Json:
    return {
        "browser_name": "Safari",
        "browser_version": "17.4",
        "device_name": "iPhone",
        "platform_name": "iOS",
        "platform_version": "17.4.1",
    }


def _attachment(ids: _Ids) -> Json:
    return {
        "id": 311,
        "message_id": _MESSAGE_ID,
        "file_type": "image",
        "account_id": ids.account,
        "extension": "jpg",
        "data_url": "https://app.akece.example/blobs/eyJfcmFpbHMi/bolo.jpg",
        "thumb_url": "https://app.akece.example/thumbs/eyJfcmFpbHMi/bolo.jpg",
        "file_size": 184_233,
        "width": 1080,
        "height": 1350,
    }


def _last_message(ids: _Ids) -> Json:
    """The conversation's latest message in push-data form: numeric type, epoch seconds."""
    return {
        "id": _MESSAGE_ID,
        "content": "Olá! Vocês entregam no sábado? Queria o bolo da foto para 20 pessoas.",
        "account_id": ids.account,
        "inbox_id": _INBOX_ID,
        "conversation_id": ids.conversation,
        "message_type": 0,
        "created_at": 1712484000,
        "updated_at": "2024-04-07T10:00:00.123Z",
        "private": False,
        "status": "sent",
        "source_id": None,
        "content_type": "text",
        "content_attributes": {},
        "sender_type": "Contact",
        "sender_id": _CONTACT_ID,
        "additional_attributes": {},
        "sender": {"id": _CONTACT_ID, "name": "João Silva", "type": "contact"},
    }


def _conversation(ids: _Ids, status: str = "open", messages: int = 1) -> Json:
    return {
        "additional_attributes": {
            "browser": _browser(),
            "referer": "https://padaria-aurora.example/encomendas",
            "browser_language": "pt",
        },
        "can_reply": True,
        "channel": "Channel::WebWidget",
        "contact_inbox": {
            "id": 77,
            "contact_id": _CONTACT_ID,
            "inbox_id": _INBOX_ID,
            "source_id": "b2f1c3de-5a7e-4c61-9d1b-0f3a6e2c8d44",
            "created_at": "2024-04-07T09:58:12.511Z",
            "updated_at": "2024-04-07T09:58:12.511Z",
            "hmac_verified": False,
        },
        "id": ids.conversation,
        "inbox_id": _INBOX_ID,
        "messages": [_last_message(ids)][:messages],
        "labels": ["encomenda"],
        "meta": {
            "sender": _contact_sender(ids),
            "assignee": _agent(),
            "assignee_type": "User",
            "team": {"id": 2, "name": "Atendimento"},
            "hmac_verified": False,
        },
        "status": status,
        "custom_attributes": {},
        "snoozed_until": None,
        "unread_count": messages,
        "first_reply_created_at": None,
        "priority": None,
        "waiting_since": 1712484000 if messages else 0,
        "agent_last_seen_at": 1712483950,
        "contact_last_seen_at": 0,
        "last_activity_at": 1712484000,
        "timestamp": 1712484000,
        "created_at": 1712483900,
        "updated_at": 1712484000.456789,
        "account": _account(ids),
    }


def _change(name: str, previous: Any, current: Any) -> Json:
    return {name: {"previous_value": previous, "current_value": current}}


def _updated_at_change() -> Json:
    return _change("updated_at", "2024-04-07T10:00:00.456Z", "2024-04-07T10:05:31.902Z")


def _message(ids: _Ids) -> Json:
    return {
        "account": _account(ids),
        "additional_attributes": {},
        "content_attributes": {},
        "content_type": "text",
        "content": _last_message(ids)["content"],
        "conversation": _conversation(ids),
        "created_at": "2024-04-07T10:00:00.123Z",
        "id": _MESSAGE_ID,
        "inbox": _inbox(),
        "message_type": "incoming",
        "private": False,
        "sender": _contact(ids),
        "source_id": None,
        "attachments": [_attachment(ids)],
    }


def _message_created(ids: _Ids) -> Json:
    return {**_message(ids), "event": "message_created"}


def _message_updated(ids: _Ids) -> Json:
    """An agent's private note, edited."""
    note = "Cliente pediu entrega no sábado às 10h. Confirmar com a cozinha até sexta."
    body = {**_message(ids), "id": _MESSAGE_ID + 2, "content": note, "message_type": "outgoing"}
    body.pop("attachments")
    edited = {"created_at": "2024-04-07T10:03:45.870Z", "private": True, "sender": _agent()}
    return {**body, **edited, "event": "message_updated"}


def _conversation_created(ids: _Ids) -> Json:
    return {**_conversation(ids, messages=0), "event": "conversation_created"}


def _conversation_updated(ids: _Ids) -> Json:
    changes = [_change("assignee_id", None, _AGENT_ID), _updated_at_change()]
    return {**_conversation(ids), "event": "conversation_updated", "changed_attributes": changes}


def _conversation_status_changed(ids: _Ids) -> Json:
    changes = [_change("status", "open", "resolved"), _updated_at_change()]
    body = _conversation(ids, status="resolved")
    return {**body, "event": "conversation_status_changed", "changed_attributes": changes}


def _webwidget_triggered(ids: _Ids) -> Json:
    event_info = {
        "initiated_at": {"timestamp": "Sun Apr 07 2024 06:58:20 GMT-0300 (Brasilia Standard Time)"},
        "referer": "https://padaria-aurora.example/encomendas",
        "widget_language": "pt_BR",
        "browser_language": "pt",
        "browser": _browser(),
    }
    return {
        "id": 77,
        "contact": _contact(ids),
        "inbox": _inbox(),
        "account": _account(ids),
        "current_conversation": _conversation(ids, messages=0),
        "source_id": "b2f1c3de-5a7e-4c61-9d1b-0f3a6e2c8d44",
        "event": "webwidget_triggered",
        "event_info": event_info,
    }


def _contact_created(ids: _Ids) -> Json:
    return {**_contact(ids), "event": "contact_created"}


def _contact_updated(ids: _Ids) -> Json:
    changes = [_change("email", None, "joao.silva@example.com"), _updated_at_change()]
    return {**_contact(ids), "event": "contact_updated", "changed_attributes": changes}


def _inbox_settings(ids: _Ids) -> Json:
    channel = {  # Channel::WebWidget without website_token and hmac_token
        "id": 5,
        "account_id": ids.account,
        "website_url": "https://padaria-aurora.example",
        "widget_color": "#C2410C",
        "welcome_title": "Olá! 👋",
        "welcome_tagline": "Respondemos em poucos minutos.",
        "reply_time": "in_a_few_minutes",
        "feature_flags": 7,
        "pre_chat_form_enabled": False,
        "continuity_via_email": True,
        "hmac_mandatory": False,
        "allowed_domains": "padaria-aurora.example",
        "created_at": "2024-01-15T14:20:05.310Z",
        "updated_at": "2024-04-07T10:10:00.000Z",
    }
    return {
        **_inbox(),
        "channel_id": 5,
        "channel_type": "Channel::WebWidget",
        "greeting_enabled": True,
        "greeting_message": "Bem-vindo à Padaria Aurora!",
        "enable_auto_assignment": True,
        "working_hours_enabled": False,
        "timezone": "America/Sao_Paulo",
        "csat_survey_enabled": False,
        "allow_messages_after_resolved": True,
        "lock_to_single_conversation": False,
        "channel": channel,
        "account": _account(ids),
    }


def _inbox_created(ids: _Ids) -> Json:
    return {**_inbox_settings(ids), "event": "inbox_created"}


def _inbox_updated(ids: _Ids) -> Json:
    changes = [_change("greeting_enabled", False, True), _updated_at_change()]
    return {**_inbox_settings(ids), "event": "inbox_updated", "changed_attributes": changes}


def _conversation_typing_on(ids: _Ids) -> Json:
    """An agent types (users carry no account: it comes from the conversation)."""
    return _typing("conversation_typing_on", _agent(), ids)


def _conversation_typing_off(ids: _Ids) -> Json:
    """The contact stopped typing."""
    return _typing("conversation_typing_off", _contact(ids), ids)


def _typing(event: str, user: Json, ids: _Ids) -> Json:
    return {"event": event, "user": user, "conversation": _conversation(ids), "is_private": False}


_BUILDERS: Final[dict[str, Callable[[_Ids], Json]]] = {
    "conversation_created": _conversation_created,
    "conversation_updated": _conversation_updated,
    "conversation_status_changed": _conversation_status_changed,
    "message_created": _message_created,
    "message_updated": _message_updated,
    "webwidget_triggered": _webwidget_triggered,
    "contact_created": _contact_created,
    "contact_updated": _contact_updated,
    "inbox_created": _inbox_created,
    "inbox_updated": _inbox_updated,
    "conversation_typing_on": _conversation_typing_on,
    "conversation_typing_off": _conversation_typing_off,
}


def example(event: str, account_id: int | str = 1, conversation_id: int | str = 1, **overrides: Any) -> Json:
    """A fresh payload of ``event`` for that account and conversation.

    ``overrides`` replace top-level keys. Raises ``ValueError`` for an unknown event.
    """
    try:
        build = _BUILDERS[event]
    except KeyError:
        raise ValueError(f"no example for unknown event {event!r}") from None
    return {**build(_Ids(account_id, conversation_id)), **overrides}


EXAMPLES: Final[dict[str, Json]] = {event: example(event) for event in _BUILDERS}
"""One payload of each event, for account 1 and conversation 1."""

GUIDE_EXAMPLE: Final[Json] = {
    # Verbatim from the published Akece guide, encoding artifacts included: string ids, sparse.
    "event": "message_created",
    "id": "1",
    "content": "Hi",
    "created_at": "2024-04-07 10:00:00 UTC",
    "message_type": "incoming",
    "content_type": "text",
    "content_attributes": {},
    "sender": {"id": "1", "name": "Agent", "email": "[email protected]"},
    "contact": {"id": "2", "name": "JoĂŁo Silva"},
    "conversation": {
        "display_id": "1234",
        "additional_attributes": {
            "browser": {
                "device_name": "iPhone",
                "browser_name": "Safari",
                "platform_name": "iOS",
                "browser_version": "15.4",
                "platform_version": "15",
            },
            "referer": "https://mysite.com",
        },
    },
    "account": {"id": "1", "name": "My Company"},
}
