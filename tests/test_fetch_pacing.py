"""The router's fetch pacing (``router.fetch_pacing``): paced from 1,000 events/s, unpaced below 500/s,
never when off or when aiokafka's fetcher lacks the two settings; and, against the real broker, a burst
paces the router's fetches and a lone event after it is still routed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.contract.topics import Topics
from services.router import worker as router_worker
from services.router.fetch_pacing import MAX_MIN_BYTES, WINDOW_S, FetchPacing
from services.shared.settings import Settings
from tests.log_capture import captured_logs
from tests.test_router import (
    events_for,
    expected_pairs,
    publish,
    running_router,
    wait_for_pairs,
    webhook,
    write_webhooks,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def consumer(min_bytes: int = 1, max_wait_ms: int = 500) -> Any:
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_min_bytes=min_bytes, _fetch_max_wait_ms=max_wait_ms))


def window(pacing: FetchPacing, clock: Clock, per_s: float, record_bytes: int = 1000) -> None:
    """One ``WINDOW_S`` of fetches at ``per_s`` events/s (ten fetches)."""
    for _ in range(10):
        clock.now = round(clock.now + WINDOW_S / 10, 9)
        records = round(per_s * WINDOW_S / 10)
        pacing.observe(records, {0: [SimpleNamespace(value=b"x" * record_bytes)] * records})


def settings_of(c: Any) -> tuple[int, int]:
    return c._fetcher._fetch_min_bytes, c._fetcher._fetch_max_wait_ms


def test_fetches_wait_for_the_bytes_of_wait_ms_from_1000_events_a_second_and_not_below_500() -> None:
    clock, c = Clock(), consumer()
    pacing = FetchPacing(c, 10, clock)
    with captured_logs() as logs:
        window(pacing, clock, 900)
        assert settings_of(c) == (1, 500) and not pacing.paced  # below 1,000/s: the consumer's own
        window(pacing, clock, 2000)
        assert settings_of(c) == (20_000, 10) and pacing.paced  # 2,000/s of 1 KB: the bytes of 10 ms
        window(pacing, clock, 600)
        assert settings_of(c) == (6_000, 10) and pacing.paced  # still at least half the rate: still paced
        window(pacing, clock, 400)
        assert settings_of(c) == (1, 500) and not pacing.paced  # below 500/s: the consumer's own again
        window(pacing, clock, 0)
    said = [(line["paced"], line["fetch_min_bytes"], line["fetch_max_wait_ms"])
            for line in logs.events("router.fetch_pacing")]
    assert said == [(True, 20_000, 10), (False, 1, 500)]  # one line per change, not per window


def test_a_paced_fetch_waits_for_at_most_a_mebibyte() -> None:
    clock, c = Clock(), consumer()
    pacing = FetchPacing(c, 500, clock)
    window(pacing, clock, 50_000, record_bytes=100_000)
    assert settings_of(c) == (MAX_MIN_BYTES, 500)


def test_off_at_0_and_off_with_one_line_when_the_fetcher_lacks_the_settings() -> None:
    clock, c = Clock(), consumer()
    off = FetchPacing(c, 0, clock)
    window(off, clock, 5000)
    assert settings_of(c) == (1, 500) and not off.paced
    with captured_logs() as logs:
        other = SimpleNamespace(_fetcher=SimpleNamespace(min_bytes=1))
        pacing = FetchPacing(other, 10, clock)
        window(pacing, clock, 5000)
    assert not pacing.paced and other._fetcher == SimpleNamespace(min_bytes=1)
    assert [line["event"] for line in logs.records()] == ["router.fetch_pacing_unavailable"]


async def test_a_burst_paces_the_router_and_a_lone_event_after_it_is_routed(
        settings: Settings, topics: Topics, monkeypatch: pytest.MonkeyPatch) -> None:
    unpaced = asyncio.Event()

    class Recorded(FetchPacing):
        def _pace(self, min_bytes: int, max_wait_ms: int) -> None:
            super()._pace(min_bytes, max_wait_ms)
            if not self.paced:
                unpaced.set()

    monkeypatch.setattr(router_worker, "FetchPacing", Recorded)
    hooks = [webhook(31, 1), webhook(32, 2)]
    await write_webhooks(settings, hooks)
    burst = events_for(accounts=[1, 2], conversations=list(range(1, 601)))  # thousands of events at once
    with captured_logs() as logs:
        async with running_router(settings) as router:
            await publish(settings, burst)
            await wait_for_pairs(settings, topics.deliveries, expected_pairs(burst, hooks))
            assert [line["paced"] for line in logs.events("router.fetch_pacing")][:1] == [True]
            await asyncio.wait_for(unpaced.wait(), 10)  # idle: unpaced within a window or two
            lone = events_for(accounts=[1], conversations=[9999], types=["message_created"])
            await publish(settings, lone)
            await wait_for_pairs(settings, topics.deliveries, expected_pairs(burst + lone, hooks))
    assert router.events_routed == len(burst) + len(lone)
