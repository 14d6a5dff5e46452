"""Kafka record header names and helpers.

The events topic speaks CloudEvents 1.0 (Kafka protocol binding, binary mode): ``ce_*`` headers and
``content-type``; the account id travels as the extension attribute ``ce_accountid``. Records the
pipeline writes itself carry ``akece_*`` headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Headers = list[tuple[str, bytes]]

CE_SPECVERSION = "ce_specversion"
CE_ID = "ce_id"
CE_SOURCE = "ce_source"
CE_TYPE = "ce_type"
CE_TIME = "ce_time"
CE_ACCOUNT_ID = "ce_accountid"
CONTENT_TYPE = "content-type"
CLOUDEVENT_REQUIRED = (CE_SPECVERSION, CE_ID, CE_SOURCE, CE_TYPE, CE_ACCOUNT_ID)

# Delivery records (deliveries topic, retry tiers, DLQ).
DELIVERY_ID = "akece_delivery_id"
EVENT_ID = "akece_event_id"
EVENT_TYPE = "akece_event_type"
ACCOUNT_ID = "akece_account_id"
WEBHOOK_ID = "akece_webhook_id"
ATTEMPT = "akece_attempt"
EVENT_TIME = "akece_event_time"
ROUTED_TIME = "akece_routed_time"
FIRST_ATTEMPT_AT = "akece_first_attempt_at"
LAST_ATTEMPT_AT = "akece_last_attempt_at"
DUE_AT = "akece_due_at"
LAST_STATUS = "akece_last_status"
LAST_ERROR = "akece_last_error"
LAST_ERROR_CLASS = "akece_last_error_class"
LAST_RESPONSE = "akece_last_response"
DLQ_REASON = "akece_dlq_reason"
DLQ_AT = "akece_dead_lettered_at"
ATTEMPTS = "akece_attempts"
REPLAY_ID = "akece_replay_id"
RECOVER_ID = "akece_recover_id"

# Quarantined events (events.invalid).
INVALID_REASON = "akece_invalid_reason"
INVALID_DETAIL = "akece_invalid_detail"
SOURCE_TOPIC = "akece_source_topic"
SOURCE_PARTITION = "akece_source_partition"
SOURCE_OFFSET = "akece_source_offset"


def to_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Record headers as text. A repeated header keeps its last value."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[key] = value.decode("utf-8", "replace") if value is not None else ""
    return out


def encode(values: Mapping[str, str | int | float | None]) -> Headers:
    """A mapping as record headers, skipping ``None``."""
    return [(key, str(value).encode()) for key, value in values.items() if value is not None]


def replace(headers: Sequence[tuple[str, bytes | None]], updates: Mapping[str, str | int | float | None]) -> Headers:
    """Original headers with ``updates`` applied (``None`` removes); order of the rest kept."""
    kept: Headers = [(k, v or b"") for k, v in headers if k not in updates]
    return kept + encode(updates)
