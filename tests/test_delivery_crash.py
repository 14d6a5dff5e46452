"""A real ``akece-webhooks deliver`` process: SIGKILL mid-load then restart, and SIGTERM drain.

Both count what reached the receiver; nothing is simulated.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.delivery_support import committed, deliver_process, delivery, make_webhook, produce, stack, worker_env
from tests.receiver import Receiver

pytestmark = pytest.mark.slow







async def test_sigkill_mid_load_then_restart_delivers_everything(kafka_bootstrap: str, receiver: Receiver,
                                                                  tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap)
    total = 6000
    async with stack(settings) as s:
        hooks = [make_webhook(receiver.url(f"/crash/{n}")) for n in range(20)]
        for n in range(20):
            receiver.set(f"/crash/{n}", delay=0.005)
        await s.add(*hooks)
        items = [delivery(hooks[n % 20], conversation=n % 300, seq=n) for n in range(total)]
        expected = {item.delivery_id for item in items}
        await produce(settings, items)
        env = worker_env(settings)

        async with deliver_process(env, tmp_path / "worker-1.log") as first:
            await receiver.wait_for(total // 3, timeout=60)
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        done = sum((await committed(settings, f"{settings.topic_prefix}.delivery", s.topics.deliveries)).values())
        at_kill = len(receiver.requests)
        assert at_kill < total, "the first worker finished before it was killed: nothing was tested"
        # Sent but not committed: the records in flight at the kill, the only ones a restart sends again.
        in_flight = at_kill - done

        async with deliver_process(env, tmp_path / "worker-2.log") as second:
            async with asyncio.timeout(120):
                while not expected <= {r.headers["webhook-id"] for r in receiver.requests}:
                    await receiver.next_request(timeout=120)
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0

    seen = Counter(r.headers["webhook-id"] for r in receiver.requests)
    duplicates = sum(count - 1 for count in seen.values())
    print(f"\ncrash test: {total} deliveries, {at_kill} requests before SIGKILL, {done} committed, "
          f"{len(receiver.requests)} requests in all, {duplicates} duplicates (bound {in_flight})")
    assert set(seen) == expected
    assert duplicates <= in_flight <= settings.delivery.max_in_flight


async def test_sigterm_finishes_in_flight_commits_and_exits_zero(kafka_bootstrap: str, receiver: Receiver,
                                                               tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap)
    count = 20
    receiver.set("/held", delay=1.5)
    async with stack(settings) as s:
        hook = make_webhook(receiver.url("/held"))
        await s.add(hook)
        await produce(settings, [delivery(hook, conversation=n) for n in range(count)])
        env = worker_env(settings, AKECE_DELIVERY_PER_WEBHOOK_CONCURRENCY="50", AKECE_DELIVERY_SHUTDOWN_GRACE_S="10")
        log = tmp_path / "worker.log"
        async with deliver_process(env, log) as process:
            await receiver.wait_for(count, timeout=60)
            assert all(r.finished_at is None for r in receiver.requests)  # all still in flight
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await process.wait()
        assert code == 0, log.read_text()[-2000:]
        assert all(r.answered == 200 and r.abandoned_at is None for r in receiver.requests)
        group = f"{settings.topic_prefix}.delivery"
        assert sum((await committed(settings, group, s.topics.deliveries)).values()) == count
        await s.until_idle()  # a new worker of the group finds nothing left to do
        assert len(receiver.requests) == count
