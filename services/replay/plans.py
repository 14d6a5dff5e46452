"""The vocabulary of a replay or recover run: what a source says of a record (``Send``, ``Skip``),
what a run is asked (``Options``), what it found (``Plan``) and what it did (``Summary``).

The engine (``services.replay.engine``) plans and runs; sources (``dlq_source``, ``recover``) decide
per record; ``services.ops`` renders plans and summaries.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from services.contract import headers as h
from services.replay import runs
from services.replay.progress import Progress
from services.replay.runs import Claim, Kind, Run
from services.replay.window import Ranges, ReadStats
from services.shared.errors import AkeceError, ConfigError

T = TypeVar("T")
HEARTBEAT_S = 20.0  # a running run rewrites its record at least this often


class ReplayRefusedError(AkeceError):
    """The run would send what was already sent, or another process is running it."""


@dataclass(frozen=True, slots=True)
class Send:
    """Put this back on the deliveries topic (headers without the run id: the engine adds it)."""

    webhook_id: int
    delivery_id: str
    key: bytes | None
    value: bytes | None
    headers: h.Headers
    webhook_disabled: bool = False
    origin: str | None = None
    """The run that last re-enqueued it (``None``: the pipeline's own): two records of one delivery id with
    the same origin are copies of one chain (a crash can fork a retry chain), not a new failure."""


@dataclass(frozen=True, slots=True)
class Skip:
    """Inside the filters but not sendable. ``webhook_id`` only when the webhook itself is the reason."""

    reason: str
    webhook_id: int | None = None


class Source(Protocol[T]):
    kind: Kind
    topic: str
    id_header: str
    filters: dict[str, Any]

    def parse(self, record: Any) -> T: ...

    def select(self, item: T) -> Send | Skip | None:
        """``None``: outside this run's filters."""

    def matches(self, filters: Mapping[str, Any], item: T) -> bool:
        """Would a run of this kind with ``filters`` have picked ``item``?"""

    def describe(self, item: T) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    force: bool = False
    enable: bool = False
    rate: float | None = None
    user: str = field(default_factory=runs.current_user)
    checkpoint_every: int = 2000
    checkpoint_interval_s: float = 1.0
    sample_size: int = 10
    heartbeat_s: float = HEARTBEAT_S
    dead_after_s: float = runs.STALE_AFTER_S
    limit: int = 0
    """Send at most this many records now, oldest first; the same command again sends the next (0: all)."""

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ConfigError(f"limit ({self.limit}) must be 0 (all) or more")
        if not 0 < self.heartbeat_s < self.dead_after_s:
            raise ConfigError(f"heartbeat_s ({self.heartbeat_s}) must be positive and below dead_after_s "
                              f"({self.dead_after_s})")


@dataclass
class Plan:
    run_id: str
    generation: int
    ranges: Ranges
    window: dict[str, str | None]
    resumed: Run | None = None
    selected: dict[int, array[int]] = field(default_factory=dict)
    total: int = 0
    matched: int = 0
    done_before: int = 0
    tail_found: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_webhooks: dict[int, str] = field(default_factory=dict)
    covered_by: Counter[str] = field(default_factory=Counter)
    by_webhook: Counter[int] = field(default_factory=Counter)
    to_enable: set[int] = field(default_factory=set)
    sample: list[dict[str, Any]] = field(default_factory=list)
    deliveries_ends: dict[int, int] = field(default_factory=dict)
    stats: ReadStats = field(default_factory=ReadStats)
    notice: str | None = None
    claims_from: int = 0
    """End offset of the claims partition in the plan's run book: later claims were not seen."""
    claim: Claim | None = None
    """The claim this plan won (``Engine.claim``), once it did."""
    left: int = 0
    """Records to send that ``Options.limit`` leaves for a later run of the same command."""
    stops: dict[int, int] = field(default_factory=dict)
    """With ``left``: source partition -> where this run stops reading, the checkpoint it then records
    (every record below it is finished; the first one it leaves is there)."""

    @property
    def already_replayed(self) -> int:
        return sum(self.covered_by.values())

    def counts(self) -> dict[str, int]:
        return {"matched": self.matched, "to_send": self.total, "left_for_later": self.left,
                "done_before": self.done_before,
                "already_replayed": self.already_replayed, **{f"skipped_{k}": v for k, v in self.skipped.items()}}


@dataclass
class Summary:
    plan: Plan
    status: str  # dry_run | refused | aborted | nothing_to_do | done | partial (done, ``plan.left`` left)
    enqueued: int = 0
    seconds: float = 0.0
    vanished: int = 0

    @property
    def rate(self) -> float:
        return self.enqueued / self.seconds if self.seconds > 0 else 0.0


ProgressFactory = Callable[[str, int], Progress]
Confirm = Callable[[Plan], Awaitable[bool]]
