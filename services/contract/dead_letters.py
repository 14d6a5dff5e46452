"""The dead-letter record: what the delivery worker writes to the DLQ, read back as a ``DeadLetter``.

A DLQ record is the original delivery record (body, key, delivery headers) plus the story headers
the delivery worker adds (``headers.DLQ_REASON``, ``ATTEMPTS``, ``FIRST_ATTEMPT_AT``,
``LAST_ATTEMPT_AT``, ``LAST_STATUS``, ``LAST_ERROR_CLASS``, ``LAST_ERROR``, ``LAST_RESPONSE``,
``DLQ_AT``); ``services.delivery.records.dlq_headers`` writes them, ``DeadLetter.from_record`` reads them.
A ``DlqFilter`` selects dead letters (its canonical JSON is part of a replay's identity).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.contract import headers as h
from services.contract.times import epoch, iso


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ record, parsed. ``headers`` are the record's own, in order, for re-enqueueing."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    delivery_id: str
    event_id: str
    event_type: str
    account_id: str
    webhook_id: int | None
    reason: str
    attempts: int | None
    first_attempt_at: float | None
    last_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    last_error_class: str | None
    last_response: str | None
    dead_lettered_at: float
    replay_id: str | None

    @classmethod
    def from_record(cls, record: Any) -> DeadLetter:
        raw = tuple((k, v or b"") for k, v in record.headers or ())
        values = h.to_dict(raw)
        return cls(
            partition=record.partition, offset=record.offset, timestamp_ms=record.timestamp,
            key=record.key, value=record.value, headers=raw,
            delivery_id=values.get(h.DELIVERY_ID, ""), event_id=values.get(h.EVENT_ID, ""),
            event_type=values.get(h.EVENT_TYPE, ""), account_id=values.get(h.ACCOUNT_ID, ""),
            webhook_id=_int(values.get(h.WEBHOOK_ID)), reason=values.get(h.DLQ_REASON) or "unknown",
            attempts=_int(values.get(h.ATTEMPTS)) or _int(values.get(h.ATTEMPT)),
            first_attempt_at=epoch(values.get(h.FIRST_ATTEMPT_AT)),
            last_attempt_at=epoch(values.get(h.LAST_ATTEMPT_AT)),
            last_status=_int(values.get(h.LAST_STATUS)), last_error=values.get(h.LAST_ERROR) or None,
            last_error_class=values.get(h.LAST_ERROR_CLASS) or None,
            last_response=values.get(h.LAST_RESPONSE) or None,
            dead_lettered_at=epoch(values.get(h.DLQ_AT)) or record.timestamp / 1000,
            replay_id=values.get(h.REPLAY_ID) or None,
        )

    @property
    def last_outcome(self) -> str:
        """``HTTP 503``, or the error class and message when no response came back."""
        if self.last_status is not None:
            return f"HTTP {self.last_status}"
        parts = [p for p in (self.last_error_class, self.last_error) if p]
        return ": ".join(parts) or "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id, "event_id": self.event_id, "webhook_id": self.webhook_id,
            "account_id": self.account_id, "event": self.event_type, "reason": self.reason,
            "attempts": self.attempts, "last_status": self.last_status, "last_error": self.last_error,
            "last_error_class": self.last_error_class, "first_attempt_at": iso(self.first_attempt_at),
            "last_attempt_at": iso(self.last_attempt_at), "dead_lettered_at": iso(self.dead_lettered_at),
            "replay_id": self.replay_id, "partition": self.partition, "offset": self.offset,
        }


def _split(value: str | Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(i.strip() for i in items if i and i.strip())


@dataclass(frozen=True)
class DlqFilter:
    """What to match (every given field must match; several values of one field: any of them)."""

    accounts: frozenset[str] = field(default_factory=frozenset)
    webhooks: frozenset[int] = field(default_factory=frozenset)
    events: frozenset[str] = field(default_factory=frozenset)
    reasons: frozenset[str] = field(default_factory=frozenset)
    deliveries: frozenset[str] = field(default_factory=frozenset)  # delivery ids: a selection of dead letters

    @classmethod
    def of(cls, *, account: str | Iterable[str] | int | None = None, webhook: str | Iterable[str] | int | None = None,
           event: str | Iterable[str] | None = None, reason: str | Iterable[str] | None = None,
           delivery: str | Iterable[str] | None = None) -> DlqFilter:
        accounts = _split(str(account) if isinstance(account, int) else account)
        hooks = _split(str(webhook) if isinstance(webhook, int) else webhook)
        return cls(accounts, frozenset(int(w) for w in hooks), _split(event), _split(reason), _split(delivery))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DlqFilter:
        return cls(frozenset(map(str, data.get("accounts", ()))), frozenset(map(int, data.get("webhooks", ()))),
                   frozenset(data.get("events", ())), frozenset(data.get("reasons", ())),
                   frozenset(data.get("deliveries", ())))

    def to_json(self) -> dict[str, list[Any]]:
        """Canonical form (sorted lists): part of a replay's identity (``deliveries`` only when given, so
        the identity of a filter without a selection is what it always was)."""
        canonical: dict[str, list[Any]] = {"accounts": sorted(self.accounts), "webhooks": sorted(self.webhooks),
                                           "events": sorted(self.events), "reasons": sorted(self.reasons)}
        if self.deliveries:
            canonical["deliveries"] = sorted(self.deliveries)
        return canonical

    def matches(self, dead: DeadLetter) -> bool:
        return ((not self.accounts or dead.account_id in self.accounts)
                and (not self.webhooks or dead.webhook_id in self.webhooks)
                and (not self.events or dead.event_type in self.events)
                and (not self.reasons or dead.reason in self.reasons)
                and (not self.deliveries or dead.delivery_id in self.deliveries))
