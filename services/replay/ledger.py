"""The replay ledger: one record per replay or recover run in the compacted replays topic.

Key = run id; value = the run's latest state (JSON): who and when, its filters and window, the
source offset range it covers per partition, its status and its checkpoint (per partition, every
source offset below it is finished: re-enqueued and acknowledged, or skipped). A run id is a hash of
kind, filters and range (plus a generation, for ``--force`` runs over a range already replayed),
so running the same command again finds the same run.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import time
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, Field, TypeAdapter

from services.replay.window import Ranges, iso, read_ranges, reader, topic_ends
from services.shared import kafka
from services.shared import logging as logs
from services.shared.settings import Settings
from services.shared.topics import Topics

Kind = Literal["replay", "recover"]
Status = Literal["running", "interrupted", "failed", "done"]
log = logs.get("replay.ledger")
ID_PREFIX: dict[str, str] = {"replay": "rp_", "recover": "rc_"}
STALE_AFTER_S = 90.0  # a running run silent this long is presumed dead (acks wait up to send_timeout_s)


class Run(BaseModel):
    """A replay (or recover) run as recorded in the ledger."""

    id: str
    kind: Kind
    status: Status
    user: str = Field(description="Who started it (login name, or api:<account> for the API)")
    host: str
    pid: int
    started_at: str
    updated_at: str
    heartbeat: float = Field(description="Unix time of the last write by the running process")
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
        if self.status != "running" or now - self.heartbeat > STALE_AFTER_S:
            return False
        return self.host != host or pid_alive(self.pid)

    def covers(self, partition: int, offset: int) -> bool:
        """The run finished this source offset (re-enqueued it, unless it skipped it)."""
        start, end = self.ranges.get(partition, (0, 0))
        return start <= offset < min(end, self.checkpoint.get(partition, start))

    def in_range(self, partition: int, offset: int) -> bool:
        start, end = self.ranges.get(partition, (0, 0))
        return start <= offset < end


_RUN = TypeAdapter(Run)


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


class Ledger:
    """Every run recorded in the replays topic (latest state per id)."""

    def __init__(self, runs: Mapping[str, Run] | None = None) -> None:
        self.runs: dict[str, Run] = dict(runs or {})

    @classmethod
    async def load(cls, settings: Settings) -> Ledger:
        topic = Topics.from_settings(settings).replays
        runs: dict[str, Run] = {}
        async with kafka.started(reader(settings)) as consumer:
            ends = await topic_ends(consumer, topic)
            starts = await consumer.beginning_offsets(list(ends))
            ranges = {tp.partition: (starts[tp], end) for tp, end in ends.items()}
            async for records in read_ranges(consumer, topic, ranges):
                for record in records:
                    if record.key is None:
                        continue
                    if record.value is None:
                        runs.pop(record.key.decode(), None)
                        continue
                    try:
                        runs[record.key.decode()] = _RUN.validate_json(record.value)
                    except ValueError as exc:  # not a run record: ignore it, loudly
                        log.error("replay.ledger_bad_record", offset=record.offset, error=str(exc)[:300])
        return cls(runs)

    def get(self, run_id_: str) -> Run | None:
        return self.runs.get(run_id_)

    def of_kind(self, kind: str) -> list[Run]:
        return sorted((r for r in self.runs.values() if r.kind == kind), key=lambda r: r.started_at)


async def write(producer: AIOKafkaProducer, settings: Settings, run: Run) -> None:
    """Record the run's state and wait for the acknowledgement."""
    run.updated_at = now_iso()
    run.heartbeat = time.time()
    await kafka.send(producer, Topics.from_settings(settings).replays, run.model_dump_json().encode(),
                     key=run.id.encode(), headers=[], timeout=settings.kafka.send_timeout_s)


def now_iso() -> str:
    return iso(time.time()) or ""
