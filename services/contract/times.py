"""Times as the records, headers and API write them, and the one rule for reading them.

Written: ISO-8601 in UTC with milliseconds and a ``Z`` (``2026-12-06T08:45:44.123Z``), or Unix seconds
in a header. Read: Unix seconds (milliseconds above 1e11) or ISO-8601; an ISO time that names no zone
is UTC.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

LAST_SECOND = 253402300799.0  # 9999-12-31T23:59:59Z: the last moment a datetime can show


def iso_time(moment: datetime | float) -> str:
    """ISO-8601 UTC with milliseconds, from a datetime (naive: UTC) or Unix seconds."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso_time(time.time())


def iso(moment: datetime | float | None) -> str | None:
    """ISO-8601 UTC with milliseconds, from a datetime or Unix seconds; ``None`` for none or a moment no
    date can show (``nan``, beyond the year 9999: a record's odd stamp)."""
    if moment is None:
        return None
    try:
        return iso_time(moment)
    except (ValueError, OverflowError, OSError):
        return None


def epoch(value: str | None) -> float | None:
    """Unix seconds from a header holding Unix seconds/milliseconds or ISO-8601; ``None`` when unreadable
    or outside what a date can show (``nan``, ``1e999``, a negative time): such a header is anyone's input."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
            number = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            return None
    else:
        number = number / 1000 if number > 1e11 else number
    return number if 0 <= number <= LAST_SECOND else None
