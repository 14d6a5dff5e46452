"""The run book: one record per replay or recover run in the compacted replays topic.

Key = run id; value = the run's latest state (JSON): who and when, its filters and window, the
source offset range it covers per partition, its status and its checkpoint (per partition, every
source offset below it is finished: re-enqueued and acknowledged, or skipped). A run id is a hash of
kind, filters and range (plus a generation, for ``--force`` runs over a range already replayed),
so running the same command again finds the same run.

**Claims.** Two processes can plan the same run at once (neither sees the other's record yet).
Before sending, a run writes a *claim* (key ``claim:<claim id>``: kind, run id, source ranges) to
partition 0 of the replays topic, then reads that partition from the end offset its plan saw up to
its own claim. Any other claim of the same kind over an overlapping range in between means another
process started after this plan was made: the earlier claim (by offset) wins and this one is
refused, ``--force`` or not, so two runs never send the same records side by side. The winner then
records its run (``Run.claim``) and heartbeats; its claim is deleted (tombstone) when the run ends,
a loser's at once. At planning, a claim still present and younger than its ``dead_after_s`` whose
run record does not exist yet counts as a live run.

**Heartbeat.** A running run writes its record at least every ``heartbeat_s`` (from a timer, not
only after progress), and records ``dead_after_s``: silent longer than that, it is presumed dead
and may be resumed by another process.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, Field, TypeAdapter

from services.contract.times import now_iso
from services.contract.topics import Topics
from services.replay.window import Ranges, read_ranges, reader, topic_ends
from services.shared import kafka
from services.shared import logging as logs
from services.shared.settings import Settings

Kind = Literal["replay", "recover"]
Status = Literal["running", "interrupted", "failed", "partial", "done"]
"""``partial``: a limited run (``--limit``) sent its share; the same command resumes it for the rest."""
log = logs.get("replay.ledger")
ID_PREFIX: dict[str, str] = {"replay": "rp_", "recover": "rc_"}
STALE_AFTER_S = 90.0  # default: a running run silent this long is presumed dead (acks wait up to send_timeout_s)
CLAIM_PREFIX = "claim:"
CLAIM_PARTITION = 0


class Run(BaseModel):
    """A replay (or recover) run as recorded in the replays topic."""

    id: str
    kind: Kind
    status: Status
    user: str = Field(description="Who started it (login name, or api:<account> for the API)")
    host: str
    pid: int
    started_at: str
    updated_at: str
    heartbeat: float = Field(description="Unix time of the last write by the running process")
    dead_after_s: float = Field(STALE_AFTER_S, description="Silent this long while running: presumed dead")
    claim: str | None = Field(None, description="The claim this process won to run it")
    error: str | None = Field(None, description="Why it failed, when it did")
    finished_at: str | None = None
    source_topic: str
    filters: dict[str, Any]
    window: dict[str, str | None]
    ranges: dict[int, tuple[int, int]] = Field(description="Source partition -> [first, end) offsets covered")
    checkpoint: dict[int, int] = Field(description="Source partition -> every offset below it is finished")
    deliveries_from: dict[int, int] = Field(
        description="Deliveries partition -> offset from which records of this run may not be checkpointed yet")
    skipped_webhooks: dict[int, str] = Field(default_factory=dict,
                                             description="Webhooks whose records were skipped, and why")
    generation: int = 0
    force: bool = False
    enable: bool = False
    rate: float | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    enqueued: int = 0
    total: int = 0

    @property
    def finished(self) -> bool:
        return self.status == "done"

    def live(self, now: float, host: str) -> bool:
        """Another process (or task) is running it right now."""
        if self.status != "running" or now - self.heartbeat > self.dead_after_s:
            return False
        return self.host != host or pid_alive(self.pid)

    def covers(self, partition: int, offset: int) -> bool:
        """The run finished this source offset (re-enqueued it, unless it skipped it)."""
        start, end = self.ranges.get(partition, (0, 0))
        return start <= offset < min(end, self.checkpoint.get(partition, start))

    def in_range(self, partition: int, offset: int) -> bool:
        start, end = self.ranges.get(partition, (0, 0))
        return start <= offset < end


class Claim(BaseModel):
    """A process's bid to run (or resume) a run over ``ranges``; the earliest by offset wins."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    run_id: str
    kind: Kind
    ranges: dict[int, tuple[int, int]]
    user: str
    host: str
    pid: int
    at: float = Field(default_factory=time.time)
    dead_after_s: float = STALE_AFTER_S

    @property
    def key(self) -> str:
        return CLAIM_PREFIX + self.id

    def live(self, now: float, host: str, runs: Mapping[str, Run]) -> bool:
        """Still deciding or about to record its run: no run record names it yet, and it is recent."""
        run = runs.get(self.run_id)
        if run is not None and run.claim == self.id:
            return False
        if now - self.at > self.dead_after_s:
            return False
        return self.host != host or pid_alive(self.pid)

    def competes(self, other: Claim) -> bool:
        return other.id != self.id and other.kind == self.kind and overlaps(other.ranges, self.ranges)


_RUN = TypeAdapter(Run)
_CLAIM = TypeAdapter(Claim)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


def host_name() -> str:
    return socket.gethostname()


def run_id(kind: str, filters: Mapping[str, Any], ranges: Ranges, generation: int = 0) -> str:
    """Deterministic: the same kind, filters and range give the same id (per generation)."""
    identity = {"kind": kind, "filters": filters, "generation": generation,
                "ranges": {str(p): list(r) for p, r in sorted(ranges.items())}}
    digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return ID_PREFIX[kind] + digest[:20]


def overlaps(a: Mapping[int, tuple[int, int]], b: Mapping[int, tuple[int, int]]) -> bool:
    return any(p in b and max(s, b[p][0]) < min(e, b[p][1]) for p, (s, e) in a.items())


class RunBook:
    """Every run and claim recorded in the replays topic (latest state per id), as loaded at one moment."""

    def __init__(self, runs: Mapping[str, Run] | None = None, claims: Mapping[str, Claim] | None = None,
                 ends: Mapping[int, int] | None = None) -> None:
        self.runs: dict[str, Run] = dict(runs or {})
        self.claims: dict[str, Claim] = dict(claims or {})
        self.ends: dict[int, int] = dict(ends or {})
        """Partition -> end offset when loaded: claims from there on were not seen."""

    @classmethod
    async def load(cls, settings: Settings) -> RunBook:
        topic = Topics.from_settings(settings).replays
        runs: dict[str, Run] = {}
        claims: dict[str, Claim] = {}
        async with kafka.started(reader(settings)) as consumer:
            ends = await topic_ends(consumer, topic)
            starts = await consumer.beginning_offsets(list(ends))
            ranges = {tp.partition: (starts[tp], end) for tp, end in ends.items()}
            async for records in read_ranges(consumer, topic, ranges):
                for record in records:
                    if record.key is None:
                        continue
                    key = record.key.decode()
                    table: dict[str, Any] = claims if key.startswith(CLAIM_PREFIX) else runs
                    if record.value is None:
                        table.pop(key.removeprefix(CLAIM_PREFIX), None)
                        continue
                    try:
                        if table is claims:
                            claim = _CLAIM.validate_json(record.value)
                            claims[claim.id] = claim
                        else:
                            runs[key] = _RUN.validate_json(record.value)
                    except ValueError as exc:  # not a run record: ignore it, loudly
                        log.error("replay.ledger_bad_record", offset=record.offset, error=str(exc)[:300])
        return cls(runs, claims, {tp.partition: end for tp, end in ends.items()})

    def get(self, run_id_: str) -> Run | None:
        return self.runs.get(run_id_)

    def of_kind(self, kind: str) -> list[Run]:
        return sorted((r for r in self.runs.values() if r.kind == kind), key=lambda r: r.started_at)

    def live_claims(self, kind: str, now: float, host: str) -> list[Claim]:
        return [c for c in self.claims.values() if c.kind == kind and c.live(now, host, self.runs)]


async def write(producer: AIOKafkaProducer, settings: Settings, run: Run) -> None:
    """Record the run's state and wait for the acknowledgement."""
    run.updated_at = now_iso()
    run.heartbeat = time.time()
    await kafka.send(producer, Topics.from_settings(settings).replays, run.model_dump_json().encode(),
                     key=run.id.encode(), headers=[], timeout=settings.kafka.send_timeout_s)


async def write_claim(producer: AIOKafkaProducer, settings: Settings, claim: Claim) -> int:
    """Record the claim on the claims partition; its offset (the order of claims)."""
    future = await producer.send(Topics.from_settings(settings).replays, claim.model_dump_json().encode(),
                                 key=claim.key.encode(), headers=[], partition=CLAIM_PARTITION)
    meta = await asyncio.wait_for(future, settings.kafka.send_timeout_s)
    return int(meta.offset)


async def release(producer: AIOKafkaProducer, settings: Settings, claim_id: str) -> None:
    """Delete a claim (tombstone): its run ended, or it lost."""
    future = await producer.send(Topics.from_settings(settings).replays, None,
                                 key=(CLAIM_PREFIX + claim_id).encode(), headers=[], partition=CLAIM_PARTITION)
    await asyncio.wait_for(future, settings.kafka.send_timeout_s)


async def claims_between(settings: Settings, start: int, end: int) -> list[tuple[int, Claim]]:
    """Every claim written to the claims partition in ``[start, end)``, released since or not."""
    topic = Topics.from_settings(settings).replays
    found: list[tuple[int, Claim]] = []
    async with kafka.started(reader(settings)) as consumer:
        first = (await consumer.beginning_offsets([TopicPartition(topic, CLAIM_PARTITION)]))[
            TopicPartition(topic, CLAIM_PARTITION)]
        async for records in read_ranges(consumer, topic, {CLAIM_PARTITION: (max(start, first), end)}):
            for record in records:
                if record.value is not None and record.key is not None and record.key.startswith(b"claim:"):
                    try:
                        found.append((record.offset, _CLAIM.validate_json(record.value)))
                    except ValueError as exc:
                        log.error("replay.ledger_bad_claim", offset=record.offset, error=str(exc)[:300])
    return found

