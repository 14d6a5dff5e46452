"""``status``: one screen for the on-call.

- Consumer lag per group and topic: every group's committed offsets (admin ``list_consumer_group_offsets``)
  on this prefix's topics against the end offsets.
- Retry tiers: depth (end offset minus the furthest committed offset) and the oldest due time: the
  ``akece_due_at`` of the record at each partition's committed position (due times grow with the
  offset within a tier, so that record is the oldest).
- Dead letters by reason over the last hour and day (by offsets for times; reasons are read from
  the records when the day holds at most ``max_scan`` of them, else only the hour's, else totals).
- Disabled webhooks and why (subscription table); replays not finished (the run book).
- Open circuits: each lives in one delivery worker's memory; the screen shows them as the attempt log
  does across all workers (``services.ops.circuits``), and each worker's ``akece_webhooks_circuits_open``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Group, RenderableType
from rich.text import Text

from services.contract import headers as h
from services.contract.times import epoch, iso
from services.contract.topics import Topics, format_delay
from services.ops.circuits import CircuitScan, open_circuits
from services.replay.runs import RunBook
from services.replay.window import Ranges, Window, offset_ranges, read_ranges, reader, topic_ends
from services.shared import kafka
from services.shared.output import heading, styled, table
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionTable

DEFAULT_MAX_SCAN = 1_000_000


@dataclass
class Tier:
    topic: str
    delay: float
    depth: int
    oldest_due: float | None


@dataclass
class DlqCounts:
    hour_total: int
    day_total: int
    hour: Counter[str] | None = None
    day: Counter[str] | None = None


@dataclass
class Report:
    now: float
    lag: dict[tuple[str, str], int] = field(default_factory=dict)
    tiers: list[Tier] = field(default_factory=list)
    dlq: DlqCounts | None = None
    disabled: list[dict[str, Any]] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)
    circuits: CircuitScan | None = None


async def collect(settings: Settings, table_: SubscriptionTable | None, *, max_scan: int = DEFAULT_MAX_SCAN,
                  now: float | None = None) -> Report:
    report = Report(now or time.time())
    topics = Topics.from_settings(settings)
    admin = kafka.admin(settings)
    async with kafka.started(admin), kafka.started(reader(settings)) as consumer:
        committed = await _committed(admin, settings.topic_prefix + ".")
        ends = await _ends(consumer, {tp.topic for offsets in committed.values() for tp in offsets}
                           | set(topics.retry_topics))
        report.lag = _lag(committed, ends)
        report.tiers = await _tiers(consumer, topics, committed, ends)
        report.dlq = await _dlq(consumer, topics.dlq, report.now, max_scan)
        report.circuits = await open_circuits(consumer, topics.attempts, now=report.now,
                                              threshold=settings.circuit.failure_threshold)
    if table_ is not None:
        report.disabled = [{"id": w.id, "account_id": w.account_id, "reason": w.disabled_reason,
                            "since": w.updated_at, "url": w.url} for w in table_.all() if not w.enabled]
    book = await RunBook.load(settings)
    report.replays = [{"id": r.id, "kind": r.kind, "status": r.status, "user": r.user, "started_at": r.started_at,
                       "progress": f"{r.enqueued}/{r.total}"} for r in book.runs.values() if not r.finished]
    return report


async def _committed(admin: AIOKafkaAdminClient, prefix: str) -> dict[str, dict[TopicPartition, int]]:
    groups = [g[0] for g in await admin.list_consumer_groups()]
    fetched = await asyncio.gather(*(admin.list_consumer_group_offsets(g) for g in groups))
    out: dict[str, dict[TopicPartition, int]] = {}
    for group, offsets in zip(groups, fetched, strict=True):
        mine = {tp: meta.offset for tp, meta in offsets.items() if tp.topic.startswith(prefix) and meta.offset >= 0}
        if mine:
            out[group] = mine
    return out


async def _ends(consumer: AIOKafkaConsumer, names: set[str]) -> dict[TopicPartition, int]:
    ends: dict[TopicPartition, int] = {}
    for name in sorted(names):
        ends.update(await topic_ends(consumer, name))
    return ends


def _lag(committed: dict[str, dict[TopicPartition, int]],
         ends: dict[TopicPartition, int]) -> dict[tuple[str, str], int]:
    lag: dict[tuple[str, str], int] = {}
    for group, offsets in committed.items():
        for tp, offset in offsets.items():
            lag[(group, tp.topic)] = lag.get((group, tp.topic), 0) + max(0, ends.get(tp, offset) - offset)
    return lag


async def _tiers(consumer: AIOKafkaConsumer, topics: Topics, committed: dict[str, dict[TopicPartition, int]],
                 ends: dict[TopicPartition, int]) -> list[Tier]:
    tiers = []
    for name, delay in sorted(topics.retry_topics.items(), key=lambda item: item[1]):
        tps = [tp for tp in ends if tp.topic == name]
        starts = await consumer.beginning_offsets(tps) if tps else {}
        positions = {tp: max([starts[tp], *(o[tp] for o in committed.values() if tp in o)]) for tp in tps}
        heads: Ranges = {tp.partition: (pos, pos + 1) for tp, pos in positions.items() if pos < ends[tp]}
        dues: list[float] = []
        async for records in read_ranges(consumer, name, heads):
            dues += [d for r in records if (d := epoch(h.to_dict(r.headers).get(h.DUE_AT))) is not None]
        depth = sum(ends[tp] - pos for tp, pos in positions.items())
        tiers.append(Tier(name, delay, depth, min(dues) if dues else None))
    return tiers


async def _dlq(consumer: AIOKafkaConsumer, topic: str, now: float, max_scan: int) -> DlqCounts:
    moment = datetime.fromtimestamp(now, UTC)
    hour = await offset_ranges(consumer, topic, Window(moment - timedelta(hours=1)))
    day = await offset_ranges(consumer, topic, Window(moment - timedelta(days=1)))
    counts = DlqCounts(sum(e - s for s, e in hour.values()), sum(e - s for s, e in day.values()))
    scan = day if counts.day_total <= max_scan else hour if counts.hour_total <= max_scan else None
    if scan is None:
        return counts
    counts.hour, counts.day = Counter(), (Counter() if scan is day else None)
    async for records in read_ranges(consumer, topic, scan):
        for record in records:
            reason = h.to_dict(record.headers).get(h.DLQ_REASON) or "unknown"
            if counts.day is not None:
                counts.day[reason] += 1
            if record.offset >= hour[record.partition][0]:
                counts.hour[reason] += 1
    return counts


def _due(due: float | None, now: float) -> str:
    if due is None:
        return "-"
    delta = due - now
    return f"{iso(due)} ({'due in' if delta > 0 else 'overdue by'} {abs(delta):.0f}s)"


def _circuits(scan: CircuitScan | None) -> list[RenderableType]:
    if scan is None:
        return [heading("Open circuits: not read")]
    minutes = f"{scan.window_s / 60:g} min"
    note = f"from the attempt log of the last {minutes}" + (
        f", newest {scan.records:,} attempts only" if scan.truncated else "")
    out: list[RenderableType] = [heading(f"Open circuits ({len(scan.circuits)}, {note})")]
    if scan.circuits:
        out.append(table(("webhook", "account", "failures", "failing since", "last error"),
                         [[c.webhook_id, c.account_id, styled(c.failures, "red"), iso(c.failing_since) or "-",
                           c.last_error or "-"] for c in scan.circuits]))
    return out


def render(report: Report) -> Group:
    """The ``status`` screen: one heading and one table per part."""
    out: list[RenderableType] = [heading(f"akece-webhooks status at {iso(report.now)}"), Text(),
                                 heading("Consumer lag")]
    out.append(table(("group", "topic", "lag"), [[g, t, n] for (g, t), n in sorted(report.lag.items())])
               if report.lag else Text("  no consumer group has committed offsets on these topics"))
    out += [Text(), heading("Retry tiers")]
    out.append(table(("tier", "topic", "depth", "oldest due"),
                     [[format_delay(t.delay), t.topic, t.depth, _due(t.oldest_due, report.now)] for t in report.tiers]))
    out += [Text(), heading("Dead letters")]
    if report.dlq is not None:
        d = report.dlq
        reasons = sorted(set(d.hour or ()) | set(d.day or ()))
        hour, day = d.hour or Counter(), d.day
        rows: list[list[object]] = [[r, hour[r], day[r] if day is not None else "?"] for r in reasons]
        rows.append([heading("total"), d.hour_total, d.day_total])
        out.append(table(("reason", "last hour", "last day"), rows))
    out += [Text(), heading(f"Disabled webhooks ({len(report.disabled)})")]
    if report.disabled:
        out.append(table(("id", "account", "since", "reason"),
                         [[w["id"], w["account_id"], w["since"], styled(w["reason"], "yellow")]
                          for w in report.disabled]))
    out += [Text(), *_circuits(report.circuits)]
    if report.replays:
        out += [Text(), heading("Unfinished replays/recovers"),
                table(("id", "kind", "status", "user", "started", "progress"),
                      [[r["id"], r["kind"], r["status"], r["user"], r["started_at"], r["progress"]]
                       for r in report.replays])]
    return Group(*out)


def to_json(report: Report) -> dict[str, Any]:
    d = report.dlq
    return {
        "time": iso(report.now),
        "lag": [{"group": g, "topic": t, "lag": n} for (g, t), n in sorted(report.lag.items())],
        "retry_tiers": [{"topic": t.topic, "delay_s": t.delay, "depth": t.depth, "oldest_due": iso(t.oldest_due)}
                        for t in report.tiers],
        "dead_letters": None if d is None else {
            "last_hour": {"total": d.hour_total, "by_reason": dict(d.hour) if d.hour is not None else None},
            "last_day": {"total": d.day_total, "by_reason": dict(d.day) if d.day is not None else None}},
        "disabled_webhooks": report.disabled,
        "open_circuits": None if report.circuits is None else [c.as_dict() for c in report.circuits.circuits],
        "unfinished_replays": report.replays,
    }
