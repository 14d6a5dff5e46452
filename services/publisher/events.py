"""Pure core of the publisher: a payload becomes a CloudEvents record (value, key, headers).

No Kafka, no clock or id source it did not receive.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from schemas import EventValidationError, account_id_of, conversation_key_of, validate_event
from services.contract import headers as h
from services.contract.times import iso_time
from services.shared.errors import ValidationError

SPECVERSION = "1.0"
DEFAULT_SOURCE = "akece://core"


@dataclass(frozen=True)
class OutgoingEvent:
    event_id: str
    event_type: str
    account_id: str
    time: str
    key: bytes
    value: bytes
    headers: h.Headers


def event_key(account_id: str, conversation_id: str | None) -> bytes:
    """One conversation's events share a key (and so a partition); account alone otherwise."""
    return f"{account_id}:{conversation_id}".encode() if conversation_id else account_id.encode()




def prepare(payload: dict[str, object] | bytes, *, source: str = DEFAULT_SOURCE,
            new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
            now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> OutgoingEvent:
    """Validate a payload and build its record. Raises ``ValidationError`` naming event and field."""
    # Copied into a bytes object of its own size: ``orjson.dumps`` returns its whole write buffer (4-8 KiB
    # behind a small body), and a prepared event is held until the broker acknowledges it, a backfill's
    # thousands at a time (as ``contract.attempts.AttemptRecord.encode`` does for attempt records).
    body = payload if isinstance(payload, bytes) else bytes(bytearray(orjson.dumps(payload)))
    event_type = _event_type(body)
    try:
        parsed = validate_event(event_type, body)
    except EventValidationError as exc:
        raise ValidationError(str(exc), field=exc.field) from exc
    account = account_id_of(parsed)
    if account is None:
        raise ValidationError(f"{event_type}: field 'account.id': the payload names no account", "account.id")
    conversation = conversation_key_of(parsed)
    event_id, time = new_id(), iso_time(now())
    headers = h.encode({
        h.CE_SPECVERSION: SPECVERSION, h.CE_ID: event_id, h.CE_SOURCE: source, h.CE_TYPE: event_type,
        h.CE_TIME: time, h.CE_ACCOUNT_ID: account, h.CONTENT_TYPE: "application/json",
    })
    return OutgoingEvent(event_id, event_type, account, time, event_key(account, conversation), body, headers)


def _event_type(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"payload is not JSON: {exc}", "<body>") from exc
    if not isinstance(parsed, dict):
        raise ValidationError("payload must be a JSON object", "<body>")
    event = parsed.get("event")
    if not isinstance(event, str):
        raise ValidationError("payload has no string field 'event' naming its event type", "event")
    return event
