"""The webhook event contract: models, validation and examples of the twelve events.

``schemas.events`` holds the pydantic models and the hot-path checks, ``schemas.examples`` sample
payloads, and ``python -m schemas.generate`` writes the JSON Schemas in ``schemas/json/``.
"""

from schemas.events import (
    DEFAULT_SUBSCRIPTIONS,
    EVENT_MODELS,
    EVENT_NAMES,
    EventValidationError,
    account_id_of,
    check_event_outline,
    check_event_structure,
    conversation_key_of,
    validate_event,
)

__all__ = [
    "DEFAULT_SUBSCRIPTIONS",
    "EVENT_MODELS",
    "EVENT_NAMES",
    "EventValidationError",
    "account_id_of",
    "check_event_outline",
    "check_event_structure",
    "conversation_key_of",
    "validate_event",
]
