"""The exit codes of every ``akece-webhooks`` command (the README's table).

    0  ok                      the command did what it was asked
    1  operation failed        it ran and failed (a test delivery failed, a run aborted, Kafka unreachable)
    2  usage or configuration  bad arguments, input or settings (the broker refused them): nothing was done
    3  refused                 valid, but not done now (a replay overlapping a running one)
    4  not found               what it names does not exist (a webhook, a dead letter)

A second SIGTERM/SIGINT exits at once with 130 (``services.shared.runtime``).
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3
    NOT_FOUND = 4
