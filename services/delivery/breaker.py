"""Endpoint health per webhook: a circuit breaker and the auto-disable clock.

Closed: every attempt goes out. After ``threshold`` consecutive failures the circuit opens: attempts
are skipped (counted as failures with error class ``circuit_open``, so deliveries still move through
their retry tiers to the DLQ) until ``open_s`` has passed; then one half-open probe goes out. Its
success closes the circuit, its failure opens it again.

Auto-disable: a webhook that has failed without a single success for ``disable_after_s`` (as seen
by this worker since it started) should be disabled; ``record`` says so once.

A webhook deleted or disabled is ``forget``-ten: enabled again, it starts closed with a fresh clock.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(slots=True)
class _State:
    failures: int = 0
    state: str = CLOSED
    opened_at: float = 0.0
    probing: bool = False
    failing_since: float | None = None
    disable_reported: bool = False


class Circuits:
    def __init__(self, threshold: int, open_s: float, disable_after_s: float) -> None:
        self._threshold = threshold
        self._open_s = open_s
        self._disable_after_s = disable_after_s
        self._states: dict[int, _State] = {}
        self.open_count = 0

    def allow(self, webhook_id: int, now: float) -> bool:
        """Whether an attempt to this webhook may go out now (a half-open probe counts as one)."""
        state = self._states.get(webhook_id)
        if state is None or state.state == CLOSED:
            return True
        if state.state == OPEN and now - state.opened_at >= self._open_s:
            state.state = HALF_OPEN
        if state.state == HALF_OPEN and not state.probing:
            state.probing = True
            return True
        return False

    def abandon(self, webhook_id: int) -> None:
        """An allowed attempt did not go out (blocked, cancelled): a half-open probe may go again."""
        state = self._states.get(webhook_id)
        if state is not None and state.state == HALF_OPEN:
            state.probing = False

    def record(self, webhook_id: int, ok: bool, now: float) -> bool:
        """Record an attempt that went out. True once when the webhook should be auto-disabled."""
        if ok:
            state = self._states.pop(webhook_id, None)
            if state is not None and state.state != CLOSED:
                self.open_count -= 1
            return False
        state = self._states.get(webhook_id)
        if state is None:
            state = self._states[webhook_id] = _State(failing_since=now)
        state.failures += 1
        if state.state == HALF_OPEN:
            state.state, state.opened_at, state.probing = OPEN, now, False
        elif state.state == CLOSED and state.failures >= self._threshold:
            state.state, state.opened_at = OPEN, now
            self.open_count += 1
        if (not state.disable_reported and state.failing_since is not None
                and now - state.failing_since >= self._disable_after_s):
            state.disable_reported = True
            return True
        return False

    def forget(self, webhook_id: int) -> None:
        """The webhook was deleted or disabled: its state goes (enabled again, it starts closed)."""
        state = self._states.pop(webhook_id, None)
        if state is not None and state.state != CLOSED:
            self.open_count -= 1

    def tracked(self) -> list[int]:
        """Webhooks with state (failing now or lately)."""
        return list(self._states)

    def state(self, webhook_id: int) -> str:
        state = self._states.get(webhook_id)
        return state.state if state is not None else CLOSED

    def failures(self, webhook_id: int) -> int:
        state = self._states.get(webhook_id)
        return state.failures if state is not None else 0

    def failing_since(self, webhook_id: int) -> float | None:
        state = self._states.get(webhook_id)
        return state.failing_since if state is not None else None
