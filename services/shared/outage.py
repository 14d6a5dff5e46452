"""Riding out a Kafka outage: what counts as one, and how long to wait before trying again.

A broker that is unreachable (not started yet, restarting, partitioned) is a condition to ride
out, not an error to exit on::

    broker_link.BrokerLink           probes the broker (through a broker_probe.BrokerProbe): every
    (a Worker, "kafka")              PROBE_INTERVAL_S while it answers (a metadata request on the
                                     connection it keeps), with capped exponential backoff (jitter)
                                     and a fresh bootstrap while not; starts the process's shared
                                     clients once it answers; ready only while it answers; logs
                                     once when the broker is lost, at most once per window
                                     meanwhile, once when it is back; exits the process after
                                     ``unavailable_exit_s`` if that is set
    rides_out.RidesOut(make, link)   runs ``make()``'s worker once the link is up; when it fails
                                     with a Kafka error, waits (backoff) for the link and runs a
                                     new one: what the failed run did not commit is redone

While the broker is away, aiokafka's own per-retry error lines are dropped (the link's lines
summarize them); while it answers, each distinct aiokafka line shows at most once per window.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from services.shared.errors import KafkaUnavailableError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: try ``n`` waits ``min(cap, initial * 2**(n-1))``
    times a random factor in ``[1 - jitter, 1]``, so processes that lost the broker together do not
    return together."""

    initial_s: float = 0.5
    cap_s: float = 5.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        base: float = min(self.cap_s, self.initial_s * 2.0 ** min(max(attempt - 1, 0), 30))
        return base * (1 - self.jitter * rng.random())


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is the broker being away (retry later), not a bug or bad configuration."""
    if isinstance(exc, KafkaUnavailableError):
        return exc.retriable
    return isinstance(exc, KafkaError | OSError)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an error, once (aiokafka's messages already start with their type)."""
    name, text = type(exc).__name__, str(exc)
    return (text if text.startswith(name) else f"{name}: {text}")[:300]


async def wait_any(events: Sequence[asyncio.Event], timeout: float | None = None) -> None:
    """Return once one of ``events`` is set, or after ``timeout`` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class KafkaUnavailableExit(KafkaUnavailableError):
    """The broker stayed away longer than ``AKECE_KAFKA_UNAVAILABLE_EXIT_S``: the process exits."""

    retriable = False


__all__ = ["Backoff", "KafkaUnavailableExit", "describe", "is_outage", "wait_any"]
