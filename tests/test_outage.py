"""The outage machinery without a broker: backoff, one log line per window, the exit bound, restarts.

The real-broker, real-process behaviour is in ``test_kafka_outage.py``; here the probe is scripted
and the clock is fake, so the counting is exact.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import pytest

from services.shared.broker_link import BrokerLink
from services.shared.errors import BrokerUnreachableError, KafkaUnavailableError
from services.shared.outage import Backoff, KafkaUnavailableExit
from services.shared.rides_out import RidesOut
from services.shared.settings import Settings
from services.shared.subscriptions import SubscriptionStore, SubscriptionTable
from tests.log_capture import captured_logs


def settings(**kafka: Any) -> Settings:
    return Settings(kafka={"bootstrap_servers": "127.0.0.1:1", **kafka})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_to_its_cap_with_jitter_below_each_step() -> None:
    backoff, rng = Backoff(initial_s=0.5, cap_s=5.0, jitter=0.5), random.Random(7)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (60, 5.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > base * 0.3  # jittered, not a fixed step


def test_one_line_when_lost_one_per_window_and_one_when_back() -> None:
    clock = Clock()
    link = BrokerLink(settings(unavailable_log_s=10), clock=clock)
    with captured_logs() as logs:
        for _ in range(25):  # a try every second for 25 s
            link._mark_down("KafkaConnectionError: refused", 1.0)
            assert not link.ready()
            clock.now += 1
        link._mark_up()
    lost, still, back = (logs.events(name) for name in ("kafka.unavailable", "kafka.still_unavailable",
                                                       "kafka.available"))
    assert len(lost) == 1 and lost[0]["error"] == "KafkaConnectionError: refused"
    assert [line["tries"] for line in still] == [10, 10]  # at 10 s and 20 s, each counting its window
    assert len(back) == 1 and back[0]["tries"] == 25 and back[0]["down_s"] == 25
    assert link.ready()


def test_the_exit_bound_shortens_the_last_wait_then_exits_with_one_message() -> None:
    clock = Clock()
    link = BrokerLink(settings(unavailable_exit_s=3), clock=clock)
    assert link._mark_down("refused", 5.0) == 3.0  # the next try comes no later than the bound
    clock.now += 2.5
    assert link._mark_down("refused", 5.0) == pytest.approx(0.5)
    clock.now += 0.5
    with pytest.raises(KafkaUnavailableExit, match=r"unreachable for 3\.0s \(3 tries; last error: refused\); "
                                                   r"exiting as AKECE_KAFKA_UNAVAILABLE_EXIT_S=3 asks"):
        link._mark_down("refused", 5.0)


class ScriptedLink(BrokerLink):
    """A link whose probe answers from a script (True: the broker answers)."""

    def __init__(self, answers: list[bool]) -> None:
        super().__init__(settings(), backoff=Backoff(initial_s=0.01, cap_s=0.02))
        self.answers = answers

    async def _try(self) -> str | None:
        up = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return None if up else "refused"


class FakeWorker:
    def __init__(self, fail_with: BaseException | None = None, hang_starting: bool = False) -> None:
        self.name = "fake"
        self._fail_with = fail_with
        self._hang_starting = hang_starting
        self.running = False
        self.cancelled = False
        self.entered = asyncio.Event()

    def ready(self) -> bool:
        return self.running

    async def run(self, stop: asyncio.Event) -> None:
        self.entered.set()
        if self._hang_starting:  # like a client start that does not return
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        self.running = True
        if self._fail_with is not None:
            raise self._fail_with
        await stop.wait()


async def test_a_worker_failing_with_a_kafka_error_is_replaced_by_a_new_one_once_the_broker_answers() -> None:
    link = ScriptedLink([False, False, True])
    built = [FakeWorker(KafkaUnavailableError("no produce acknowledgement within 4s")), FakeWorker()]
    workers = iter(built)
    rides = RidesOut(lambda: next(workers), link)
    stop = asyncio.Event()
    probing = asyncio.create_task(link.run(stop))
    running = asyncio.create_task(rides.run(stop))
    async with asyncio.timeout(5):
        await built[1].entered.wait()
    assert built[1].running and rides.ready()
    assert rides.restarts == 1 and rides.worker is built[1]
    stop.set()
    async with asyncio.timeout(5):
        await asyncio.gather(probing, running)


async def test_a_bug_is_not_ridden_out() -> None:
    link = ScriptedLink([True])
    stop = asyncio.Event()
    probing = asyncio.create_task(link.run(stop))
    with pytest.raises(ValueError, match="bug"):
        async with asyncio.timeout(5):
            await RidesOut(lambda: FakeWorker(ValueError("bug")), link).run(stop)
    stop.set()
    await probing


async def test_stop_cancels_a_worker_still_starting_and_ends_a_wait_for_the_broker() -> None:
    link = ScriptedLink([True])
    stop = asyncio.Event()
    probing = asyncio.create_task(link.run(stop))
    starting = FakeWorker(hang_starting=True)
    running = asyncio.create_task(RidesOut(lambda: starting, link).run(stop))
    waiting = asyncio.create_task(RidesOut(FakeWorker, ScriptedLink([False])).run(stop))  # never up
    async with asyncio.timeout(5):
        await starting.entered.wait()
    stop.set()
    async with asyncio.timeout(2):
        await asyncio.gather(probing, running, waiting)
    assert starting.cancelled


async def test_a_store_write_while_the_broker_is_away_is_refused_at_once() -> None:
    s = settings()
    store = SubscriptionStore(s, SubscriptionTable(s), cast(Any, None), available=lambda: False)
    assert not store.available()
    with pytest.raises(BrokerUnreachableError, match="Kafka is unreachable: the change was not stored"):
        await store.delete(1)


async def test_a_connection_closed_after_the_broker_answered_is_not_blamed_on_the_settings() -> None:
    """Under Toxiproxy's reset_peer a running worker logged 'a TLS listener does that to a PLAINTEXT client'
    (tests/test_network_faults.py). A listener that accepts and closes at once stands in for the reset."""

    async def close_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        link = BrokerLink(settings(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000))
        first_contact = await link._try()
        assert first_contact is not None and "a TLS listener does that to a PLAINTEXT client" in first_contact
        link._mark_up()  # the broker answered these settings once
        later = await link._try()
    assert later is not None and "TLS" not in later, later
    assert later.endswith("closed: the broker answered these settings before, so the network or the broker "
                          "went away (a restart, a failover, a reset or dropped connection)"), later
