"""Request validation with Chatwoot's messages, as pure functions (no Kafka, no DNS, no clock).

Chatwoot answers a validation failure with 422 ``{"message": "<full messages, joined>",
"attributes": [...]}``; its messages are Rails' full messages (``"Url is invalid"``,
``"Url has already been taken"``, ``"Subscriptions Invalid events"``). Unknown fields in a body are
ignored, as Chatwoot's strong parameters do. Bodies come wrapped (``{"webhook": {...}}``) or bare.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas import DEFAULT_SUBSCRIPTIONS, EVENT_NAMES
from services.shared import urls

MAX_URL_LENGTH = urls.MAX_LENGTH
MAX_NAME_LENGTH = 255
MAX_REASON_LENGTH = 255
MAX_TIMEOUT_S = 60.0

URL_INVALID = "Url is invalid"
URL_TOO_LONG = f"Url is too long (maximum is {MAX_URL_LENGTH} characters)"
URL_TAKEN = "Url has already been taken"
URL_PRIVATE = "Url points to a private network address"
SUBSCRIPTIONS_INVALID = "Subscriptions Invalid events"

_EVENTS = frozenset(EVENT_NAMES)
TIMEOUT_FIELDS = ("connect_timeout_s", "total_timeout_s")


class BadRequest(Exception):
    """The body is not JSON, or not a JSON object: 400."""


def too_many_webhooks(limit: int) -> str:
    return f"Webhooks limit reached: an account may have at most {limit} webhooks"


class Invalid(Exception):
    """One or more fields are invalid: 422 in Chatwoot's shape."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return ", ".join(dict.fromkeys(message for _, message in self.errors))

    @property
    def attributes(self) -> list[str]:
        return list(dict.fromkeys(attribute for attribute, _ in self.errors))

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "attributes": self.attributes}


def parse_body(raw: bytes, *, required: bool = True) -> dict[str, Any]:
    """The webhook fields of a request body, unwrapped from ``{"webhook": ...}`` when wrapped."""
    if not raw.strip():
        if required:
            raise BadRequest("Request body is empty; send a JSON object")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    wrapped = body.get("webhook")
    return wrapped if isinstance(wrapped, dict) else body


def url_error(url: Any) -> str | None:
    """Chatwoot's message for a URL the sender could not send to (``services.shared.urls``), or ``None``."""
    if isinstance(url, str) and len(url) > MAX_URL_LENGTH:
        return URL_TOO_LONG
    return URL_INVALID if urls.error(url) is not None else None


def url_host(url: str) -> str:
    """The host of a valid URL (IDNA, IPv6 without brackets)."""
    return urls.host(url)


def url_key(url: str) -> str:
    """What two URLs are compared by for "already taken": the normalized form (a stored URL that
    fails today's rule is compared as it is)."""
    try:
        return urls.normalized(url)
    except urls.InvalidUrlError:
        return url


def _subscriptions(value: Any, errors: list[tuple[str, str]]) -> list[str] | None:
    events = value if isinstance(value, list) else []
    if not events or not all(isinstance(e, str) and e in _EVENTS for e in events):
        errors.append(("subscriptions", SUBSCRIPTIONS_INVALID))
        return None
    return list(dict.fromkeys(events))


def _text(value: Any, attribute: str, label: str, limit: int, errors: list[tuple[str, str]]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append((attribute, f"{label} is invalid"))
    elif len(value) > limit:
        errors.append((attribute, f"{label} is too long (maximum is {limit} characters)"))
    else:
        return value
    return None


def _timeout(value: Any, attribute: str, errors: list[tuple[str, str]]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_S:
        label = attribute.removesuffix("_s").replace("_", " ").capitalize()
        message = f"{label} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}"
        errors.append((attribute, message))
        return None
    return float(value)


def webhook_changes(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Validate the known fields of ``body``; unknown ones are ignored. Raises ``Invalid``.

    Returns the fields to set: a subset of url, name, subscriptions, enabled, disabled_reason and
    the timeouts. Creating requires ``url`` and fills in the default subscriptions.
    """
    errors: list[tuple[str, str]] = []
    changes: dict[str, Any] = {}
    if creating or "url" in body:
        message = url_error(body.get("url"))
        if message:
            errors.append(("url", message))
        else:
            changes["url"] = body["url"]
    if "name" in body:
        changes["name"] = _text(body["name"], "name", "Name", MAX_NAME_LENGTH, errors)
    if body.get("subscriptions") is not None:
        changes["subscriptions"] = _subscriptions(body["subscriptions"], errors)
    elif creating:
        changes["subscriptions"] = list(DEFAULT_SUBSCRIPTIONS)
    if "enabled" in body:
        if isinstance(body["enabled"], bool):
            changes["enabled"] = body["enabled"]
        else:
            errors.append(("enabled", "Enabled is invalid"))
    if body.get("disabled_reason") is not None:
        changes["disabled_reason"] = _text(body["disabled_reason"], "disabled_reason", "Disabled reason",
                                           MAX_REASON_LENGTH, errors)
    for field in TIMEOUT_FIELDS:
        if field in body:
            changes[field] = _timeout(body[field], field, errors)
    if errors:
        raise Invalid(errors)
    return changes
