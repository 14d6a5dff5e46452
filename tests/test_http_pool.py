"""The delivery worker's HTTP pool gives back what a burst opened.

A burst (a slow receiver, the catch-up after an outage) fills the pool; once the load is steady and
small again, the connections beyond what it needs are closed after ``AKECE_HTTP_IDLE_TIMEOUT_S``,
so the worker's open file descriptors fall back toward its working set. aiohttp alone reuses its
least recently used connection first, so a steady load kept every pooled connection alive.
"""

from __future__ import annotations

import asyncio
import os

from bench.soak import receiver_connections
from services.delivery.http import HttpSender
from services.shared.netguard import NetworkGuard
from services.shared.settings import HttpSettings
from tests.receiver import Receiver

BURST = 32
IDLE_TIMEOUT_S = 3.0
HEADERS = {"Content-Type": "application/json"}


def open_to(receiver: Receiver) -> int:
    """This process's established connections to the receiver (the client side only)."""
    port = int(receiver.url().split(":")[2].split("/")[0])
    count = receiver_connections(os.getpid(), port)
    assert count is not None
    return count


async def test_connections_opened_by_a_burst_are_closed_under_a_small_steady_load(receiver: Receiver) -> None:
    receiver.set("/hook", delay=0.3)  # every request of the burst needs a connection of its own
    guard = NetworkGuard(["127.0.0.0/8"])
    async with HttpSender(HttpSettings(idle_timeout_s=IDLE_TIMEOUT_S), guard) as sender:
        burst = await asyncio.gather(*(sender.post(receiver.url(), b"{}", HEADERS) for _ in range(BURST)))
        assert [r.status for r in burst] == [200] * BURST
        assert open_to(receiver) == BURST

        # A steady load of one request at a time, going round the whole pool much faster than the idle
        # timeout: only a pool that reuses its newest connection first lets the others idle out.
        receiver.set("/hook", delay=0)
        sent = 0
        async with asyncio.timeout(20):
            while open_to(receiver) > 2:
                result = await sender.post(receiver.url(), b"{}", HEADERS)
                assert result.status == 200, result
                sent += 1
        assert sent > 0
        assert sender.requests_in_flight == 0


async def test_a_kept_alive_connection_that_stops_answering_ends_at_the_total_timeout_and_is_dropped(
        receiver: Receiver) -> None:
    """A request on a reused connection (the common case) is bounded by the attempt's total timeout too,
    and the connection it hung on is never used again."""
    guard = NetworkGuard(["127.0.0.0/8"])
    async with HttpSender(HttpSettings(total_timeout_s=0.5), guard) as sender:
        first = await sender.post(receiver.url(), b"{}", HEADERS)
        assert first.status == 200, first
        assert open_to(receiver) == 1

        receiver.set("/hook", delay=30)
        hung = await sender.post(receiver.url(), b"{}", HEADERS)
        assert (hung.status, hung.error_class) == (None, "timeout"), hung
        assert hung.error_message == "TimeoutError, host 127.0.0.1"
        assert 0.4 < hung.duration_s < 5, hung.duration_s  # its deadline, not the receiver's 30 s
        assert sender.requests_in_flight == 0

        receiver.set("/hook", delay=0)
        again = await sender.post(receiver.url(), b"{}", HEADERS)
        assert again.status == 200, again
        assert open_to(receiver) == 1  # a new connection: the one that hung was closed
